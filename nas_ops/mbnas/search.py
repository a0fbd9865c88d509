"""The MB-NAS search on the harness (:mod:`nas_ops.search_run`): a Local Search on the 2D slices of a dataset.

Every network is scored by ``evaluate_fn`` on each fold in ``folds`` (default: all ``n_folds``) with each training
seed in ``seeds``; ``seed`` drives the search (start, variable order) and the patient split. Trainings are jobs of
the execution layer (``backend``: ``local``, ``ray`` or ``subprocess``) and trust the dataset the harness validated
(its fingerprint). The U-Net start must fit in ``memory_limit_gb`` at ``batch_size`` and ``spatial_size``, or the
search is refused; a candidate that does not fit is skipped with score 0. Writes ``search_state.pt`` (the
checkpoint: run the same command again after a kill and the search resumes; another dataset or setting is
refused), ``search_result.json``, ``search_log.txt`` (one line per evaluation), ``trajectory.png`` and
``genotype.png`` beside the harness's ``genotype.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from nas_ops.data.msd import MSDDataset
from nas_ops.engine.execution import executor
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.mbnas.config import MBNASConfig
from nas_ops.mbnas.evaluate import TrainingBudget
from nas_ops.mbnas.local_search import LocalSearch, start_nodes
from nas_ops.mbnas.plots import draw_genotype, plot_trajectory
from nas_ops.mbnas.space import Node, SearchSpace, arch_key, make_genotype
from nas_ops.registry import build_network
from nas_ops.search_run import MemoryProbe, Progress, Searcher, SearchOutcome, SearchRun
from nas_ops.search_run import search as harness_search
from nas_ops.search_state import RESULT_FILENAME

log = logging.getLogger(__name__)


def space_of(cfg: MBNASConfig) -> SearchSpace:
    """The search space a config searches."""
    return SearchSpace(cfg.num_nodes, cfg.max_depth, tuple(cfg.blocks), tuple(cfg.kernel_sizes))


def genotype_of(run: SearchRun, nodes, **kwargs: Any) -> Genotype:
    """The genotype of ``nodes`` for the run's dataset and the config's widths."""
    cfg: MBNASConfig = run.config  # type: ignore[assignment]
    ds = run.dataset
    return make_genotype(nodes, ds.in_channels, ds.num_classes, 2, cfg.base_channels, cfg.max_depth, cfg.norm,
                         **kwargs)


class MBNAS(Searcher):
    """MB-NAS for the harness: its config block, the U-Net start as memory probe, the Local Search."""

    name = "MB-NAS"
    config_class = MBNASConfig
    bundle = "mbnas"

    def memory_probe(self, cfg: MBNASConfig, ds: MSDDataset, prefix: str) -> MemoryProbe:
        """The U-Net start's training step (a larger candidate is skipped with score 0 by its training)."""
        unet = make_genotype(space_of(cfg).unet(), ds.in_channels, ds.num_classes, 2, cfg.base_channels,
                             cfg.max_depth, cfg.norm)
        return MemoryProbe(lambda: build_network(unet), (unet.in_channels, *cfg.spatial_size), cfg.batch_size,
                           "search#spatial_size", "training")

    def run(self, run: SearchRun) -> SearchOutcome:
        """Run (or resume, or report) the Local Search."""
        cfg: MBNASConfig = run.config  # type: ignore[assignment]
        folds = list(range(run.n_folds)) if cfg.folds is None else list(cfg.folds)
        for i, f in enumerate(folds):
            if not 0 <= f < run.n_folds:
                raise InputError(run.source, f"search#folds[{i}]", f"must lie in [0, {run.n_folds - 1}], got {f}")
        ds, space = run.dataset, space_of(cfg)
        training = TrainingBudget(
            dataset_dir=str(Path(run.dataset_dir).resolve()), epochs=cfg.epochs, batch_size=cfg.batch_size,
            spatial_size=tuple(cfg.spatial_size), slice_axis=cfg.slice_axis, n_folds=run.n_folds,
            split_seed=run.seed, lr=cfg.lr, lr_power=cfg.lr_power, loss=cfg.loss, last_fraction=cfg.last_fraction,
            keep_empty_fraction=cfg.keep_empty_fraction, device=str(run.device), dataset_fingerprint=ds.fingerprint,
            memory_limit_gb=run.memory_limit_gb,
        ).to_dict()
        units = [(f, s) for f in folds for s in cfg.seeds]
        identity = {"config": cfg.as_dict(), "seed": run.seed, "n_folds": run.n_folds,
                    "dataset": run.identity["dataset"]}
        ls = LocalSearch(run.output_dir, space, lambda nodes: genotype_of(run, nodes), units, cfg.variant, cfg.start,
                         cfg.budget, run.seed, cfg.bilevel_split, cfg.cut_broken_skips, evaluate=cfg.evaluate_fn,
                         training=training, identity=identity, accept_margin=cfg.accept_margin)
        done = ls.checkpoint.inspect()  # refuses another identity before anything is written
        log.info("MB-NAS %s search on %s: %d nodes, %d networks in the space, budget %d evaluations of %d "
                 "training(s)", cfg.variant, ds.name, cfg.num_nodes, space.size(), cfg.budget, len(units))
        if done.finished:
            result = done.result
        else:
            run.begin()
            e = run.execution
            with executor(e.backend, e.parallel_jobs, e.ray_address) as run_jobs:
                result = ls.run(run_jobs)
        best = tuple(Node(**n) for n in result["best_nodes"])
        provenance = run.provenance(method=f"MB-NAS Local Search, variant {cfg.variant}", score=result["best_score"],
                                    evaluations=result["evaluations"], cache_hits=result["cache_hits"],
                                    stop=result["stop"])
        genotype = genotype_of(run, best, name=f"mbnas-{cfg.variant}", provenance=provenance)

        def draw(folder: Path) -> None:
            title = f"{cfg.variant} ({cfg.start} start) on {ds.name}: best {result['best_score']:.4f}"
            plot_trajectory(result["log"], run.output_dir / "trajectory.png", result["phase_starts"], title)
            draw_genotype(best, run.output_dir / "genotype.png",
                          f"{result['best_key']}  score {result['best_score']:.4f}", cfg.base_channels)

        summary = {k: result[k] for k in ("variant", "best_key", "best_score", "evaluations", "cache_hits", "stop")}
        return SearchOutcome(summary, genotype, draw)


    def sample(self, cfg: MBNASConfig, ds: MSDDataset, rng: np.random.Generator) -> tuple[Any, Genotype]:
        """A valid network of the variant's subspace, as a random start of the Local Search draws it (the parts
        the variant does not search stay the U-Net's)."""
        nodes = start_nodes(space_of(cfg), cfg.variant, "random", rng)
        genotype = make_genotype(nodes, ds.in_channels, ds.num_classes, 2, cfg.base_channels, cfg.max_depth,
                                 cfg.norm, name="random")
        return arch_key(nodes), genotype


    def progress(self, output_dir: Path) -> Progress | None:
        """The best score so far after each evaluation of the Local Search."""
        path = output_dir / RESULT_FILENAME
        if not path.is_file():
            return None
        log_rows = json.loads(path.read_text())["log"]
        return Progress("evaluation", "best candidate score so far", list(range(1, len(log_rows) + 1)),
                        [row["best"] for row in log_rows])


SEARCHER = MBNAS()


def search(dataset_dir: str | Path, output_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """The MB-NAS search from Python: :func:`nas_ops.search_run.search` of ``"mbnas"``."""
    return harness_search("mbnas", dataset_dir, output_dir, **kwargs)
