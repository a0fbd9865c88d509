"""First-improvement Local Search over the MB-NAS space (Ottelander et al. 2021), with its variants.

One **sweep** visits the variables of the current phase in a random order. For each variable every other value is
tried (only valid networks, see :meth:`nas_ops.mbnas.space.SearchSpace.neighbours`); the best of them replaces the
current network if it is strictly better (neighbourhood 1, first improvement). Sweeps repeat until one improves
nothing (a local optimum) or the evaluation budget is spent (150 in the paper). Evaluations are cached by the
canonical network (:func:`~nas_ops.mbnas.space.arch_key`): a network met again costs nothing and counts as a
cache hit. If the budget runs out within a variable, the best of its values evaluated so far is still compared.

Variants (``variant``): ``mbnas`` (every variable), ``macro`` (topology only: levels and skips; VGG 3x3 cells),
``micro`` (the U-Net topology; blocks and kernel sizes), ``bilevel`` (topology with VGG 3x3 cells first, within
``bilevel_split`` of the budget, then kernel sizes with the rest).

The whole search is one :class:`~nas_ops.search_state.SearchState` checkpoint, written after every training and
every variable: the cache, the trainings done of the networks being evaluated, the sweep order and position, the
current and best network, the evaluation log and the RNG. A search killed at any moment and run again performs no
finished training twice and ends with the same network and the same log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas_ops.atomic import atomic_write
from nas_ops.engine.execution import Job, RunJobs, dotted_path
from nas_ops.genotype import Genotype
from nas_ops.mbnas.space import Node, Nodes, SearchSpace, arch_key, canonical
from nas_ops.search_state import SearchState

log = logging.getLogger(__name__)

TOPOLOGY, CELLS, KERNELS = ("level", "skip"), ("block", "kernel"), ("kernel",)
VARIANTS: dict[str, tuple[tuple[str, ...], ...]] = {  # variant -> the variable kinds of each phase
    "mbnas": (TOPOLOGY + CELLS,),
    "macro": (TOPOLOGY,),
    "micro": (CELLS,),
    "bilevel": (TOPOLOGY, KERNELS),
}
STARTS = ("unet", "random")
LOG_FILENAME = "search_log.txt"


def unit_id(fold: int, seed: int) -> str:
    """The (fold, seed) pair of one training as a string key."""
    return f"fold{fold}-seed{seed}"


def start_nodes(space: SearchSpace, variant: str, start: str, rng: np.random.Generator) -> Nodes:
    """The first network: the U-Net, or a random valid one in the variant's subspace (fixed parts from the U-Net)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (known: {list(VARIANTS)})")
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r} (known: {list(STARTS)})")
    unet = space.unet()
    if start == "unet":
        return unet
    topology = variant != "micro"
    cells = variant in ("mbnas", "micro")
    return space.random(rng, topology=topology, cells=cells, base=unet)


def _nodes_from(doc: list[dict]) -> Nodes:
    return tuple(Node(**n) for n in doc)


def _nodes_doc(nodes: Sequence[Node]) -> list[dict]:
    return [n.to_dict() for n in nodes]


class LocalSearch:
    """A resumable Local Search run in ``output_dir``.

    ``evaluate`` is the training job (a function ``(genotype, fold, seed, budget) -> {"score": ...}``, default
    :func:`nas_ops.mbnas.evaluate.train_and_score`) run with ``budget`` through the execution layer that
    :meth:`run` receives; ``genotype_of`` turns nodes into the genotype a training receives; ``units`` are the
    (fold, seed) pairs averaged into a score. ``identity``: what decides the result (checked on resume).
    """

    def __init__(
        self,
        output_dir: str | Path,
        space: SearchSpace,
        genotype_of: Callable[[Nodes], Genotype],
        units: Sequence[tuple[int, int]],
        variant: str = "mbnas",
        start: str = "unet",
        budget: int = 150,
        seed: int = 0,
        bilevel_split: float = 0.5,
        cut_broken_skips: bool = True,
        evaluate: str | Callable = "nas_ops.mbnas.evaluate.train_and_score",
        training: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
        accept_margin: float = 0.0,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} (known: {list(VARIANTS)})")
        if budget < 1:
            raise ValueError(f"budget must be >= 1 evaluation, got {budget}")
        if not units:
            raise ValueError("units (fold, seed pairs) must not be empty")
        if not 0.0 < bilevel_split < 1.0:
            raise ValueError(f"bilevel_split must lie in (0, 1), got {bilevel_split}")
        self.output_dir = Path(output_dir)
        self.space = space
        self.genotype_of = genotype_of
        self.units = [(int(f), int(s)) for f, s in units]
        self.variant = variant
        self.start = start
        self.budget = budget
        self.seed = seed
        self.bilevel_split = bilevel_split
        self.cut_broken_skips = cut_broken_skips
        self.phases = VARIANTS[variant]
        self.evaluate = dotted_path(evaluate)
        self.training = dict(training or {})
        self.checkpoint = SearchState(self.output_dir, identity=identity)
        self.rng = np.random.default_rng(seed)
        self.accept_margin = float(accept_margin)

    # --------------------------------------------------------------------------------------------------- budget

    def phase_limit(self, phase: int) -> int:
        """Evaluations allowed by the end of ``phase`` (Bilevel-NAS gives its first phase ``bilevel_split``)."""
        if len(self.phases) > 1 and phase < len(self.phases) - 1:
            return max(1, round(self.budget * self.bilevel_split))
        return self.budget

    # ------------------------------------------------------------------------------------------------------ run

    def run(self, run_jobs: RunJobs) -> dict[str, Any]:
        """Search (or resume, or return the finished result), training through ``run_jobs`` (an executor of
        :mod:`nas_ops.engine.execution`); returns the result stored in the checkpoint."""
        resumed = self.checkpoint.resume(generators={"local_search": self.rng})
        if resumed.finished:
            log.info("search in %s already finished", self.output_dir)
            return resumed.result
        if resumed.fresh:
            st = self._initial_state()
            self._save(st)
        else:
            st = resumed.state
            log.info("resuming the search at %d evaluations (%d cache hits) from %s", st["evaluations"],
                     st["cache_hits"], self.checkpoint.path)
        if st["current_score"] is None:  # the start network
            current = _nodes_from(st["current"])
            self._evaluate_variable(st, "start", [(None, current)], run_jobs)
        while st["stop"] is None:
            self._step(st, run_jobs)
        result = self._result(st)
        self.checkpoint.finish(result)
        return result

    def _initial_state(self) -> dict[str, Any]:
        nodes = start_nodes(self.space, self.variant, self.start, self.rng)
        self.space.check(nodes)
        return {
            "variant": self.variant, "start": self.start, "budget": self.budget, "seed": self.seed,
            "units": [list(u) for u in self.units],
            "phase": 0, "phase_starts": [0], "sweep": 0, "order": [], "pos": 0, "improved": False,
            "current": _nodes_doc(nodes), "current_key": arch_key(nodes), "current_score": None,
            "cache": {}, "partial": {}, "log": [], "moves": [], "evaluations": 0, "cache_hits": 0, "stop": None,
        }

    def _step(self, st: dict[str, Any], run_jobs: RunJobs) -> None:
        """One variable of a sweep (or the bookkeeping between sweeps and phases)."""
        if st["evaluations"] >= self.budget:
            st["stop"] = "budget"
        elif st["evaluations"] >= self.phase_limit(st["phase"]):
            self._next_phase(st, "phase budget")
        elif st["pos"] >= len(st["order"]):
            if st["order"] and not st["improved"]:
                self._next_phase(st, "local optimum")
            else:
                st["sweep"] += 1
                st["order"] = [str(v) for v in self.rng.permutation(self.space.variables(self.phases[st["phase"]]))]
                st["pos"], st["improved"] = 0, False
                log.info("sweep %d (phase %d): %d variables", st["sweep"], st["phase"], len(st["order"]))
        else:
            variable = st["order"][st["pos"]]
            current = _nodes_from(st["current"])
            candidates = self.space.neighbours(current, variable, self.cut_broken_skips)
            if candidates:
                self._evaluate_variable(st, variable, candidates, run_jobs)
            st["pos"] += 1
        self._save(st)

    def _next_phase(self, st: dict[str, Any], why: str) -> None:
        log.info("phase %d ends (%s) after %d evaluations", st["phase"], why, st["evaluations"])
        if st["phase"] + 1 >= len(self.phases):
            st["stop"] = why
            return
        st["phase"] += 1
        st["phase_starts"].append(st["evaluations"])
        st["order"], st["pos"], st["improved"] = [], 0, False

    def _evaluate_variable(self, st: dict[str, Any], variable: str, candidates: Sequence[tuple[Any, Nodes]],
                           run_jobs: RunJobs) -> None:
        """Score the candidates of one variable (cache first, then train the rest within the budget), log them and
        move to the best one if it is better than the current network by more than ``accept_margin``."""
        room = self.phase_limit(st["phase"]) - st["evaluations"]
        considered, fresh = [], []
        for value, nodes in candidates:
            key = arch_key(nodes)
            if key in st["cache"] or key in (k for k, _, _ in fresh):
                considered.append((value, nodes, key))
            elif len(fresh) < room:
                fresh.append((key, nodes, value))
                considered.append((value, nodes, key))
        jobs = [Job(self.evaluate, {"genotype": self.genotype_of(nodes).to_dict(), "fold": f, "seed": s,
                                    "budget": self.training}, tag=(key, unit_id(f, s)))
                for key, nodes, _ in fresh for f, s in self.units
                if unit_id(f, s) not in st["partial"].get(key, {})]
        for job, res in run_jobs(jobs):
            key, unit = job.tag
            st["partial"].setdefault(key, {})[unit] = float(res["score"])
            log.info("  trained %s on %s: %.4f", key, unit, res["score"])
            self._save(st)
        scored = []
        for value, nodes, key in considered:
            if key in st["cache"]:
                st["cache_hits"] += 1
                scored.append((st["cache"][key], value, nodes, key, None))
                continue
            runs = st["partial"].pop(key)
            score = float(np.mean([runs[unit_id(f, s)] for f, s in self.units]))
            st["cache"][key] = score
            st["evaluations"] += 1
            best = max(score, st["log"][-1]["best"]) if st["log"] else score
            entry = {"n": st["evaluations"], "phase": st["phase"], "sweep": st["sweep"], "variable": variable,
                     "value": value, "key": key, "score": score, "best": best, "accepted": False}
            st["log"].append(entry)
            scored.append((score, value, nodes, key, entry))
            log.info("evaluation %d/%d: %s = %s -> %.4f (best %.4f) %s", st["evaluations"], self.budget, variable,
                     value, score, best, key)
        if not scored:
            return
        score, value, nodes, key, entry = max(scored, key=lambda s: s[0])  # first of equal scores
        if st["current_score"] is None or score > st["current_score"] + self.accept_margin:
            if entry is not None:
                entry["accepted"] = True
            if st["current_score"] is not None:
                st["improved"] = True
                st["moves"].append({"n": st["evaluations"], "variable": variable, "value": value, "key": key,
                                    "score": score, "previous": st["current_score"]})
                log.info("accepted %s = %s: %.4f -> %.4f", variable, value, st["current_score"], score)
            st["current"], st["current_key"], st["current_score"] = _nodes_doc(canonical(nodes)), key, score
        self._write_log(st)

    # -------------------------------------------------------------------------------------------------- outputs

    def _save(self, st: dict[str, Any]) -> None:
        self.checkpoint.save(st, generators={"local_search": self.rng})

    def _result(self, st: dict[str, Any]) -> dict[str, Any]:
        return {
            "variant": self.variant, "start": self.start, "budget": self.budget, "seed": self.seed,
            "stop": st["stop"], "evaluations": st["evaluations"], "cache_hits": st["cache_hits"],
            "sweeps": st["sweep"], "phase_starts": st["phase_starts"], "units": st["units"],
            "best_key": st["current_key"], "best_score": st["current_score"], "best_nodes": st["current"],
            "moves": st["moves"], "log": st["log"],
        }

    def _write_log(self, st: dict[str, Any]) -> None:
        """``search_log.txt``: one readable line per evaluation, rewritten whole (so a resumed run's file equals an
        uninterrupted run's)."""
        lines = [f"# MB-NAS Local Search: variant {self.variant}, start {self.start}, budget {self.budget}, "
                 f"seed {self.seed}, {len(self.units)} training(s) per evaluation",
                 f"# evaluations {st['evaluations']}, cache hits {st['cache_hits']}, sweep {st['sweep']}",
                 f"{'n':>4} {'phase':>5} {'sweep':>5} {'variable':<10} {'value':>9} {'score':>8} {'best':>8} acc  "
                 "network"]
        for e in st["log"]:
            lines.append(f"{e['n']:>4} {e['phase']:>5} {e['sweep']:>5} {e['variable']:<10} {e['value']!s:>9} "
                         f"{e['score']:>8.4f} {e['best']:>8.4f} {'*' if e['accepted'] else ' ':>3}  {e['key']}")
        text = "\n".join(lines) + "\n"
        atomic_write(self.output_dir / LOG_FILENAME, lambda fh: fh.write(text.encode()))
