"""The MB-NAS bundle workflow: run a Local Search on an MSD dataset.

:func:`search` is what ``configs/search.json`` runs (into ``<output_dir>/search``). It checks the run's keys and
the ``search`` block (:class:`MBNASConfig`) and the dataset before anything runs, then writes ``genotype.json``
(the best network), ``search_state.pt`` (the checkpoint, with the run's identity: run the same command again after
a kill and the search resumes; another dataset or setting is refused), ``search_result.json`` (the result and the
config), ``search_log.txt`` (one line per evaluation), ``trajectory.png`` and ``genotype.png``. Trainings are jobs
of the execution layer (``backend``: ``local``, ``ray`` or ``subprocess``) and trust the dataset the search
validated (its fingerprint).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from nas_ops.bundle import entry, prepare_process
from nas_ops.config import (
    Backend,
    ConfigBlock,
    Fraction,
    NFolds,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Rule,
    Size2D,
    SliceAxis,
    check_output_dir,
)
from nas_ops.data.setup import load_checked_dataset
from nas_ops.engine.execution import executor, locate
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.mbnas.blocks import BLOCKS
from nas_ops.mbnas.evaluate import TrainingBudget
from nas_ops.mbnas.local_search import LocalSearch
from nas_ops.mbnas.plots import draw_genotype, plot_trajectory
from nas_ops.mbnas.space import KERNEL_SIZES, Node, SearchSpace, make_genotype
from nas_ops.resources import check_memory

log = logging.getLogger(__name__)
CONFIG_SOURCE = "search config"


@dataclass(frozen=True)
class MBNASConfig(ConfigBlock):
    """Every knob of an MB-NAS search: the ``search`` block of ``configs/search.json``; defaults follow the paper."""

    variant: Literal["mbnas", "macro", "micro", "bilevel"] = "mbnas"
    start: Literal["unet", "random"] = "unet"
    budget: PositiveInt = 150  # evaluations (each: len(folds) x len(seeds) trainings)
    folds: list[int] | None = None  # None: all n_folds
    seeds: Annotated[list[int], Rule(min=0)] = (0, 1, 2)  # training seeds averaged per evaluation
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 32
    spatial_size: Size2D = (128, 128)
    slice_axis: SliceAxis = 2
    lr: PositiveFloat = 1e-3
    lr_power: Annotated[float, Rule(min=0.0)] = 0.9
    loss: Literal["dice_ce", "dice", "foreground_dice"] = "foreground_dice"
    last_fraction: Annotated[float, Rule(min=1e-9, max=1.0)] = 0.2
    keep_empty_fraction: Fraction = 0.25
    base_channels: PositiveInt = 16
    num_nodes: Annotated[int, Rule(min=2)] = 10
    max_depth: PositiveInt = 5
    kernel_sizes: Annotated[list[int], Rule(min=1)] = KERNEL_SIZES
    blocks: list[str] = BLOCKS
    norm: Literal["batch", "instance", "none"] = "batch"
    bilevel_split: Annotated[float, Rule(min=1e-9, max=1 - 1e-9)] = 0.5
    cut_broken_skips: bool = True
    evaluate_fn: str = "nas_ops.mbnas.evaluate.train_and_score"

    def check(self, source: str | None, prefix: str = "") -> None:
        if not self.seeds:
            raise InputError(source, f"{prefix}seeds", "needs at least one training seed")
        stride = 2**self.max_depth
        for i, s in enumerate(self.spatial_size):
            if s % stride:
                raise InputError(source, f"{prefix}spatial_size[{i}]", f"{s} is not divisible by 2**max_depth = "
                                 f"{stride}")
        for i, k in enumerate(self.kernel_sizes):
            if k not in KERNEL_SIZES:
                raise InputError(source, f"{prefix}kernel_sizes[{i}]", f"must be one of {list(KERNEL_SIZES)}, got {k}")
        try:
            locate(self.evaluate_fn)
        except InputError:
            raise InputError(source, f"{prefix}evaluate_fn", f"{self.evaluate_fn!r} names no importable function "
                             "(a dotted path: package.module.function)") from None
        for i, b in enumerate(self.blocks):
            if b not in BLOCKS:
                raise InputError(source, f"{prefix}blocks[{i}]", f"must be one of {list(BLOCKS)}, got {b!r}")


@entry
def search(
    dataset_dir: str | Path,
    output_dir: str | Path,
    config: dict[str, Any] | None = None,
    seed: NonNegativeInt = 0,
    n_folds: NFolds = 5,
    device: str = "auto",
    backend: Backend = "local",
    parallel_jobs: PositiveInt = 2,
    ray_address: str | None = None,
    num_threads: PositiveInt | None = None,
    plots: bool = True,
    memory_limit_gb: PositiveFloat | None = None,
    config_source: str = CONFIG_SOURCE,
    **more: Any,
) -> dict[str, Any]:
    """Run (or resume) a Local Search on the 2D slices of an MSD dataset; returns the summary.

    ``config``: the ``search`` block (:class:`MBNASConfig`); its keys may also come as keyword arguments. Every
    network is scored by ``evaluate_fn`` on each fold in ``folds`` (default: all ``n_folds``) with each training
    seed in ``seeds``; ``seed`` drives the search (start, variable order) and the patient split. The U-Net start
    must fit in ``memory_limit_gb`` (default: 80 % of the device's) at ``batch_size`` and ``spatial_size``, or the
    search is refused; a candidate that does not fit is skipped with score 0.
    """
    tic = time.perf_counter()
    source = config_source
    cfg = MBNASConfig.from_block(config, source, more)
    folds = list(range(n_folds)) if cfg.folds is None else list(cfg.folds)
    for i, f in enumerate(folds):
        if not 0 <= f < n_folds:
            raise InputError(source, f"search#folds[{i}]", f"must lie in [0, {n_folds - 1}], got {f}")
    dev = prepare_process(device, num_threads, source)
    output_dir = check_output_dir(output_dir, source=source)
    ds = load_checked_dataset(dataset_dir)
    identity = {"config": cfg.as_dict(), "seed": seed, "n_folds": n_folds,
                "dataset": {"name": ds.name, "fingerprint": ds.fingerprint}}
    space = SearchSpace(cfg.num_nodes, cfg.max_depth, tuple(cfg.blocks), tuple(cfg.kernel_sizes))
    training = TrainingBudget(
        dataset_dir=str(Path(dataset_dir).resolve()), epochs=cfg.epochs, batch_size=cfg.batch_size,
        spatial_size=tuple(cfg.spatial_size), slice_axis=cfg.slice_axis, n_folds=n_folds, split_seed=seed,
        lr=cfg.lr, lr_power=cfg.lr_power, loss=cfg.loss, last_fraction=cfg.last_fraction,
        keep_empty_fraction=cfg.keep_empty_fraction, device=device, dataset_fingerprint=ds.fingerprint,
        memory_limit_gb=memory_limit_gb,
    ).to_dict()

    def genotype_of(nodes) -> Genotype:
        return make_genotype(nodes, ds.in_channels, ds.num_classes, 2, cfg.base_channels, cfg.max_depth, cfg.norm)

    check_memory(genotype_of(space.unet()), cfg.spatial_size, cfg.batch_size, dev, memory_limit_gb,
                 "search#spatial_size", source, batch_key="search#batch_size")

    units = [(f, s) for f in folds for s in cfg.seeds]
    ls = LocalSearch(output_dir, space, genotype_of, units, cfg.variant, cfg.start, cfg.budget, seed,
                     cfg.bilevel_split, cfg.cut_broken_skips, evaluate=cfg.evaluate_fn, training=training,
                     identity=identity)
    done = ls.checkpoint.inspect()  # refuses another identity before anything is written
    log.info("MB-NAS %s search on %s: %d nodes, %d networks in the space, budget %d evaluations of %d training(s)",
             cfg.variant, ds.name, cfg.num_nodes, space.size(), cfg.budget, len(units))
    if done.finished:
        result = done.result
        if (output_dir / "genotype.json").is_file():
            log.info("the search in %s has already finished: nothing to run", output_dir)
            return _summary(result, tic)
    else:
        output_dir.mkdir(parents=True, exist_ok=True)
        with executor(backend, parallel_jobs, ray_address) as run_jobs:
            result = ls.run(run_jobs)
    return _write_outputs(output_dir, result, cfg, ds, dataset_dir, seed, plots, tic)


def _write_outputs(output_dir: Path, result: dict, cfg: MBNASConfig, ds, dataset_dir, seed: int, plots: bool,
                   tic: float) -> dict[str, Any]:
    """The selected genotype (with its provenance) and the plots; returns the summary."""
    best = tuple(Node(**n) for n in result["best_nodes"])
    provenance = {
        "method": f"MB-NAS Local Search, variant {cfg.variant}", "dataset": ds.name, "dataset_dir": str(dataset_dir),
        "dataset_fingerprint": ds.fingerprint, "seed": seed, "score": result["best_score"],
        "evaluations": result["evaluations"], "cache_hits": result["cache_hits"], "stop": result["stop"],
        "search_config": cfg.as_dict(),
    }
    genotype = make_genotype(best, ds.in_channels, ds.num_classes, 2, cfg.base_channels, cfg.max_depth, cfg.norm,
                             name=f"mbnas-{cfg.variant}", provenance=provenance)
    genotype.save(output_dir / "genotype.json")
    if plots:
        title = f"{cfg.variant} ({cfg.start} start) on {ds.name}: best {result['best_score']:.4f}"
        plot_trajectory(result["log"], output_dir / "trajectory.png", result["phase_starts"], title)
        draw_genotype(best, output_dir / "genotype.png", f"{result['best_key']}  score {result['best_score']:.4f}",
                      cfg.base_channels)
    summary = _summary(result, tic)
    log.info("search done: %s", summary)
    return summary


def _summary(result: dict, tic: float) -> dict[str, Any]:
    summary = {k: result[k] for k in ("variant", "best_key", "best_score", "evaluations", "cache_hits", "stop")}
    summary["seconds"] = round(time.perf_counter() - tic, 1)
    return summary

