"""The C2FNAS search on the harness (:mod:`nas_ops.search_run`): the coarse stage (topology), then the fine stage
(ops); each stage alone too (the run options ``stage`` and ``topology``).

Writes into the output folder: ``coarse/`` (one folder per group), ``coarse_result.json``, the fine stage's
checkpoints and ``evolution_result.json``, and through the harness ``genotype.json`` (with its provenance) and
``plots/``. A finished stage is reported and never rerun; a stage of another identity (dataset, settings, seed,
topology) is refused, naming what changed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nas_ops.c2fnas import plots as figures
from nas_ops.c2fnas.coarse import RESULT_FILE, STATE_FILE, run_coarse
from nas_ops.c2fnas.config import C2FNASConfig
from nas_ops.c2fnas.fine import EVOLUTION_RESULT, path_cost, run_fine
from nas_ops.c2fnas.network import CellGrid
from nas_ops.c2fnas.one_shot import fold_data
from nas_ops.c2fnas.space import OPS, c2fnas_genotype, enumerate_topologies, path_problem, topology_code
from nas_ops.data.msd import MSDDataset
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.search_run import MemoryProbe, Progress, Searcher, SearchOutcome, SearchRun
from nas_ops.search_run import search as harness_search
from nas_ops.search_state import SearchState

log = logging.getLogger(__name__)
SHARED_KEYS = ("patch_size", "samples_per_volume", "batch_size", "loss", "lr", "train_batches", "val_batches",
               "base_channels", "stem_channels", "num_cells", "topology_rule")


class HeaviestPath(CellGrid):
    """The memory probe of a search: every cell of every topology with every op (the most weights any supernet of
    the search holds) running the path with the most cells at 1/2 (the most activations)."""

    def __init__(self, cfg: C2FNASConfig, in_channels: int, out_channels: int) -> None:
        topologies = enumerate_topologies(cfg.topology_rule, cfg.num_cells)
        super().__init__(in_channels, out_channels, topologies, OPS, cfg.base_channels, cfg.stem_channels)
        self.heaviest = (min(topologies, key=sum), ("p3d",) * cfg.num_cells)

    def forward(self, x):  # type: ignore[override]
        return super().forward(x, self.heaviest)


class C2FNAS(Searcher):
    """C2FNAS for the harness: its config block, the heaviest supernet path as memory probe, both stages."""

    name = "C2FNAS"
    config_class = C2FNASConfig
    spatial_dims = 3
    bundle = "c2fnas"

    def memory_probe(self, cfg: C2FNASConfig, ds: MSDDataset, prefix: str) -> MemoryProbe:
        """The heaviest path of the largest supernet (:class:`HeaviestPath`)."""
        return MemoryProbe(lambda: HeaviestPath(cfg, ds.in_channels, ds.num_classes),
                           (ds.in_channels, *cfg.patch_size), cfg.batch_size, "search#patch_size",
                           "the largest supernet's training", samples_per_item=cfg.samples_per_volume)

    def run(self, run: SearchRun, stage: Literal["all", "coarse", "fine"] = "all",
            topology: list[int] | None = None) -> SearchOutcome:
        """Run (or resume, or report) ``stage``; ``stage="fine"`` searches the ops of ``topology`` (default: the
        finished coarse stage's in the folder)."""
        cfg: C2FNASConfig = run.config  # type: ignore[assignment]
        if stage not in ("all", "coarse", "fine"):
            raise InputError(run.source, "stage", f"must be one of 'all', 'coarse', 'fine', got {stage!r}")
        if topology is not None:
            problem = path_problem(topology)
            if problem is not None or len(topology) != cfg.num_cells:
                raise InputError(run.source, "topology",
                                 problem or f"has {len(topology)} cells, the search {cfg.num_cells}")
        values = cfg.as_dict()
        coarse_identity = {**run.identity,
                           **{k: v for k, v in values.items() if k in SHARED_KEYS or k.startswith("coarse_")}}
        coarse = None
        if stage in ("all", "coarse"):
            reported = (run.output_dir / RESULT_FILE).is_file()  # a finished stage is reported: nothing redrawn
            coarse = run_coarse(run, coarse_identity)
            if run.plots and not reported:
                figures.plot_coarse(coarse, run.output_dir / "plots" / "coarse_groups.png")
            if stage == "coarse":
                return SearchOutcome({"stage": "coarse", "topology": coarse["code"], "dice": coarse["dice"]})
        if topology is None:
            state = SearchState(run.output_dir, STATE_FILE, RESULT_FILE, identity=coarse_identity,
                                what="C2FNAS coarse stage")
            if coarse is None and not state.finished:
                raise InputError(state.path, "stage", "the fine stage needs a finished coarse stage in this "
                                 "output_dir, or a topology: run stage 'coarse' (or 'all') first, or pass --topology")
            coarse = coarse or state.result
            topology = coarse["topology"]
        fine_identity = {**run.identity, **{k: v for k, v in values.items() if not k.startswith("coarse_")},
                         "topology": list(topology)}

        def prepare():
            run.begin()
            return fold_data(run.dataset_dir, cfg, run.seed, run.fold, run.n_folds, trusted=run.dataset.fingerprint)

        fine = run_fine(prepare, cfg, topology, run.output_dir, run.seed, run.device, fine_identity)
        return self._outcome(run, topology, coarse, fine)

    def sample(self, cfg: C2FNASConfig, ds: MSDDataset, rng: np.random.Generator) -> tuple[Any, Genotype]:
        """A topology of the rule and an op per cell, each uniform, within the fine stage's bounds on MACs and
        parameters (drawn again until it fits)."""
        topologies = enumerate_topologies(cfg.topology_rule, cfg.num_cells)
        for _ in range(1000):
            levels = topologies[int(rng.integers(len(topologies)))]
            ops = tuple(OPS[int(i)] for i in rng.integers(len(OPS), size=cfg.num_cells))
            params, macs = path_cost(levels, ops, ds.in_channels, ds.num_classes, cfg)
            if (cfg.max_macs is None or macs <= cfg.max_macs) and (cfg.max_params is None or params <= cfg.max_params):
                break
        else:
            raise InputError(None, "search#max_macs", "no random network of 1000 draws fits the bounds")
        genotype = c2fnas_genotype(levels, ops, ds.in_channels, ds.num_classes, name="random",
                                   base_channels=cfg.base_channels, stem_channels=cfg.stem_channels)
        return (tuple(levels), ops), genotype

    def progress(self, output_dir: Path) -> Progress | None:
        """The fine stage's best fitness (validation Dice) per generation of the evolution."""
        path = output_dir / EVOLUTION_RESULT
        if not path.is_file():
            return None
        history = json.loads(path.read_text())["history"]
        return Progress("generation", "best validation Dice", [row["generation"] for row in history],
                        [row["best"] for row in history])

    @staticmethod
    def _outcome(run: SearchRun, topology: list[int], coarse: dict | None, fine: dict) -> SearchOutcome:
        """The searched genotype with its provenance, its plots and the summary."""
        cfg: C2FNASConfig = run.config  # type: ignore[assignment]
        ds = run.dataset
        ops = tuple(fine["best"])
        params, macs = path_cost(topology, ops, ds.in_channels, ds.num_classes, cfg)
        provenance = run.provenance(
            method="C2FNAS: coarse stage (k-means groups of topologies, one supernet each), fine stage (single-path "
                   "one-shot supernet, evolution)",
            topology=topology_code(topology), coarse_dice=None if coarse is None else coarse["dice"],
            fine_dice=fine["best_fitness"], params=params, macs=macs, patch_size=list(cfg.patch_size))
        genotype = c2fnas_genotype(topology, ops, ds.in_channels, ds.num_classes, name="c2fnas-searched",
                                   provenance=provenance, base_channels=cfg.base_channels,
                                   stem_channels=cfg.stem_channels)

        def draw(folder: Path) -> None:
            figures.plot_evolution(fine["history"], folder / "evolution.png")
            figures.plot_topology(topology, ops, folder / "network.png",
                                  f"{topology_code(topology)}  Dice {fine['best_fitness']:.4f}  {params:,} params")

        summary = {"stage": "fine", "topology": topology_code(topology), "ops": list(ops),
                   "dice": fine["best_fitness"], "params": params, "macs": macs}
        return SearchOutcome(summary, genotype, draw)


SEARCHER = C2FNAS()


def search(dataset_dir: str | Path, output_dir: str | Path, stage: Literal["all", "coarse", "fine"] = "all",
           topology: list[int] | None = None, **kwargs: Any) -> dict[str, Any]:
    """The C2FNAS search from Python: :func:`nas_ops.search_run.search` with ``stage`` and ``topology`` as its run
    options."""
    return harness_search("c2fnas", dataset_dir, output_dir, options={"stage": stage, "topology": topology}, **kwargs)
