"""The C2FNAS search: the coarse stage (topology), then the fine stage (ops); each stage alone too.

Writes into ``output_dir``: ``coarse/`` (one folder per group), ``coarse_result.json``, the fine stage's
checkpoints and ``evolution_result.json``, ``genotype.json`` (the searched network, with its provenance) and
``plots/``. A finished stage is reported and never rerun; a stage of another identity (dataset, settings, seed,
topology) is refused, naming what changed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from nas_ops.bundle import entry, prepare_process
from nas_ops.c2fnas import plots as figures
from nas_ops.c2fnas.coarse import run_coarse
from nas_ops.c2fnas.context import C2FNASConfig, fold_data
from nas_ops.c2fnas.fine import path_cost, run_fine
from nas_ops.c2fnas.network import CellGrid, c2fnas_genotype
from nas_ops.c2fnas.space import OPS, enumerate_topologies, path_problem, topology_code
from nas_ops.config import Backend, NFolds, NonNegativeInt, PositiveFloat, PositiveInt, check_output_dir
from nas_ops.data.setup import dataset_identity, load_checked_dataset
from nas_ops.errors import InputError
from nas_ops.resources import check_network_memory

log = logging.getLogger(__name__)
CONFIG_SOURCE = "search config"
GENOTYPE_FILE = "genotype.json"
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


@entry
def search(
    dataset_dir: str | Path,
    output_dir: str | Path,
    config: dict[str, Any] | None = None,
    seed: NonNegativeInt = 0,
    device: str = "auto",
    fold: NonNegativeInt = 0,
    n_folds: NFolds = 5,
    stage: Literal["all", "coarse", "fine"] = "all",
    topology: list[int] | None = None,
    backend: Backend = "local",
    parallel_jobs: PositiveInt = 1,
    ray_address: str | None = None,
    num_threads: PositiveInt | None = None,
    plots: bool = True,
    memory_limit_gb: PositiveFloat | None = None,
    config_source: str = CONFIG_SOURCE,
    **more: Any,
) -> dict[str, Any]:
    """Run (or resume, or report) the C2FNAS search; returns its summary.

    ``config``: the ``search`` block (:class:`nas_ops.c2fnas.context.C2FNASConfig`); its keys may also come as
    keyword arguments. ``stage="fine"`` searches the ops of ``topology`` (default: the finished coarse stage's in
    ``output_dir``). The coarse stage's groups run on ``backend`` (``parallel_jobs`` at once). Before anything is
    written, the largest supernet's training step at ``patch_size`` and ``batch_size`` must fit in
    ``memory_limit_gb`` (default: 80 % of the device's).
    """
    source = config_source
    if fold >= n_folds:
        raise InputError(source, "fold", f"must be < n_folds = {n_folds}, got {fold}")
    cfg = C2FNASConfig.from_block(config, source, more)
    if topology is not None:
        problem = path_problem(topology)
        if problem is not None or len(topology) != cfg.num_cells:
            raise InputError(source, "topology", problem or f"has {len(topology)} cells, the search {cfg.num_cells}")
    dev = prepare_process(device, num_threads, source)
    output_dir = check_output_dir(output_dir, source=source)
    ds = load_checked_dataset(dataset_dir)
    if not ds.is_3d:
        raise InputError(ds.json_path, "training", "holds 2D images: C2FNAS searches 3D networks on volumes")
    check_network_memory(lambda: HeaviestPath(cfg, ds.in_channels, ds.num_classes), (ds.in_channels, *cfg.patch_size),
                         cfg.batch_size, dev, memory_limit_gb, "search#patch_size", source,
                         what="the largest supernet's training", batch_key="search#batch_size",
                         samples_per_item=cfg.samples_per_volume)
    base = {"seed": seed, "fold": fold, "n_folds": n_folds, "dataset": dataset_identity(dataset_dir)}
    values = cfg.as_dict()
    coarse_identity = {**base, **{k: v for k, v in values.items() if k in SHARED_KEYS or k.startswith("coarse_")}}
    coarse = None
    if stage in ("all", "coarse"):
        output_dir.mkdir(parents=True, exist_ok=True)
        coarse = run_coarse(dataset_dir, output_dir, cfg, seed, fold, n_folds, device, coarse_identity,
                            ds.fingerprint, backend, parallel_jobs, ray_address)
        if plots:
            figures.plot_coarse(coarse, output_dir / "plots" / "coarse_groups.png")
        if stage == "coarse":
            return {"stage": "coarse", "topology": coarse["code"], "dice": coarse["dice"]}
    if topology is None:
        from nas_ops.c2fnas.coarse import RESULT_FILE, STATE_FILE
        from nas_ops.search_state import SearchState

        state = SearchState(output_dir, STATE_FILE, RESULT_FILE, identity=coarse_identity, what="C2FNAS coarse stage")
        if coarse is None and not state.finished:
            raise InputError(state.path, "stage", "the fine stage needs a finished coarse stage in this output_dir, "
                             "or a topology: run stage 'coarse' (or 'all') first, or pass --topology")
        coarse = coarse or state.result
        topology = coarse["topology"]
    fine_identity = {**base, **{k: v for k, v in values.items() if not k.startswith("coarse_")},
                     "topology": list(topology)}
    output_dir.mkdir(parents=True, exist_ok=True)
    fine = run_fine(lambda: fold_data(dataset_dir, cfg, seed, fold, n_folds, trusted=ds.fingerprint), cfg, topology,
                    output_dir, seed, dev, fine_identity)
    return _write_genotype(output_dir, cfg, ds, dataset_dir, seed, topology, coarse, fine, plots)


def _write_genotype(output_dir: Path, cfg: C2FNASConfig, ds, dataset_dir, seed: int, topology, coarse, fine,
                    plots: bool) -> dict[str, Any]:
    """The searched genotype with its provenance, and the plots; returns the summary."""
    ops = tuple(fine["best"])
    params, macs = path_cost(topology, ops, ds.in_channels, ds.num_classes, cfg)
    provenance = {
        "method": "C2FNAS: coarse stage (k-means groups of topologies, one supernet each), fine stage (single-path "
                  "one-shot supernet, evolution)",
        "dataset": ds.name, "dataset_dir": str(dataset_dir), "dataset_fingerprint": ds.fingerprint, "seed": seed,
        "search_config": cfg.as_dict(), "topology": topology_code(topology),
        "coarse_dice": None if coarse is None else coarse["dice"], "fine_dice": fine["best_fitness"],
        "params": params, "macs": macs, "patch_size": list(cfg.patch_size),
    }
    genotype = c2fnas_genotype(topology, ops, ds.in_channels, ds.num_classes, name="c2fnas-searched",
                               provenance=provenance, base_channels=cfg.base_channels,
                               stem_channels=cfg.stem_channels)
    summary = {"stage": "fine", "topology": topology_code(topology), "ops": list(ops), "dice": fine["best_fitness"],
               "params": params, "macs": macs, "genotype": str(output_dir / GENOTYPE_FILE)}
    path = output_dir / GENOTYPE_FILE
    if genotype.matches_file(path):
        log.info("the search in %s has finished: %s", output_dir, summary)
        return summary
    genotype.save(path)
    if plots:
        figures.plot_evolution(fine["history"], output_dir / "plots" / "evolution.png")
        figures.plot_topology(topology, ops, output_dir / "plots" / "network.png",
                            f"{topology_code(topology)}  Dice {fine['best_fitness']:.4f}  {params:,} params")
    log.info("C2FNAS search done: %s", summary)
    return summary

