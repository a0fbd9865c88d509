"""The MB-NAS bundle workflows: run a Local Search on an MSD dataset, and fit a genotype to a dataset.

:func:`search` is what ``configs/search.json`` calls. It validates the dataset before anything runs, then writes to
``output_dir``: ``genotype.json`` (the best network), ``search_state.pt`` (the checkpoint: run the same command
again after a kill and the search resumes), ``search_result.json``, ``search_config.json``, ``search_log.txt`` (one
line per evaluation), ``trajectory.png`` and ``genotype.png``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from nas_ops.atomic import write_json_atomic
from nas_ops.data.setup import load_checked_dataset
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.mbnas.blocks import BLOCKS
from nas_ops.mbnas.evaluate import TrainingBudget, make_runner
from nas_ops.mbnas.local_search import LocalSearch
from nas_ops.mbnas.plots import draw_genotype, plot_trajectory
from nas_ops.mbnas.space import KERNEL_SIZES, Node, SearchSpace, make_genotype
from nas_ops.search_state import SearchState, refuse_other_settings

log = logging.getLogger(__name__)
CONFIG_FILENAME = "search_config.json"
# keys that change how fast a search runs, not what it finds: free to differ when resuming
_RUNTIME_KEYS = ("device", "backend", "num_workers", "ray_address", "torch_threads", "plots")


def search(
    dataset_dir: str | Path,
    output_dir: str | Path,
    variant: str = "mbnas",
    start: str = "unet",
    budget: int = 150,
    seed: int = 0,
    n_folds: int = 5,
    folds: Sequence[int] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 100,
    batch_size: int = 32,
    spatial_size: Sequence[int] = (128, 128),
    slice_axis: int = 2,
    lr: float = 1e-3,
    lr_power: float = 0.9,
    loss: str = "foreground_dice",
    last_fraction: float = 0.2,
    keep_empty_fraction: float = 0.25,
    base_channels: int = 16,
    num_nodes: int = 10,
    max_depth: int = 5,
    kernel_sizes: Sequence[int] = KERNEL_SIZES,
    blocks: Sequence[str] = BLOCKS,
    norm: str = "batch",
    bilevel_split: float = 0.5,
    cut_broken_skips: bool = True,
    device: str = "auto",
    backend: str = "local",
    num_workers: int = 2,
    ray_address: str | None = None,
    torch_threads: int | None = None,
    evaluate_fn: str | Callable = "nas_ops.mbnas.evaluate.train_and_score",
    plots: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a Local Search of ``variant`` on the 2D slices of an MSD dataset; returns the summary.

    Every network is scored by :func:`nas_ops.mbnas.evaluate.train_and_score` on each fold in ``folds`` (default:
    all ``n_folds``) with each training seed in ``seeds``; ``seed`` drives the search (start, variable order) and
    the patient split.
    """
    tic = time.perf_counter()
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    output_dir = Path(output_dir)
    config = {k: v for k, v in locals().items() if k not in ("tic", "output_dir")}
    if callable(evaluate_fn):  # recorded by name, the same in every process
        config["evaluate_fn"] = f"{evaluate_fn.__module__}.{evaluate_fn.__qualname__}"
    config = json.loads(json.dumps(config, default=str))
    ds = load_checked_dataset(dataset_dir)
    config_path = output_dir / CONFIG_FILENAME
    _check_resume_config(config_path, config)
    stride = 2**max_depth
    for i, s in enumerate(spatial_size):
        if s % stride:
            raise InputError(None, f"spatial_size[{i}]", f"{s} is not divisible by 2**max_depth = {stride}")
    folds = list(range(n_folds)) if folds is None else [int(f) for f in folds]
    for i, f in enumerate(folds):
        if not 0 <= f < n_folds:
            raise InputError(None, f"folds[{i}]", f"must lie in [0, {n_folds - 1}], got {f}")
    if not seeds:
        raise InputError(None, "seeds", "needs at least one training seed")
    space = SearchSpace(num_nodes, max_depth, tuple(blocks), tuple(int(k) for k in kernel_sizes))
    training = TrainingBudget(
        dataset_dir=str(Path(dataset_dir).resolve()), epochs=epochs, batch_size=batch_size,
        spatial_size=tuple(spatial_size), slice_axis=slice_axis, n_folds=n_folds, split_seed=seed, lr=lr,
        lr_power=lr_power, loss=loss, last_fraction=last_fraction, keep_empty_fraction=keep_empty_fraction,
        device=device,
    ).to_dict()

    def genotype_of(nodes: Sequence[Node]) -> Genotype:
        return make_genotype(nodes, ds.in_channels, ds.num_classes, 2, base_channels, max_depth, norm)

    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config_path, config)
    units = [(f, s) for f in folds for s in seeds]
    ls = LocalSearch(output_dir, space, genotype_of, units, variant, start, budget, seed, bilevel_split,
                     cut_broken_skips)
    log.info("MB-NAS %s search on %s: %d nodes, %d networks in the space, budget %d evaluations of %d training(s)",
             variant, ds.name, num_nodes, space.size(), budget, len(units))
    if SearchState(output_dir).finished:
        result = SearchState(output_dir).result
    else:
        with make_runner(evaluate_fn, training, backend, num_workers, ray_address) as run_tasks:
            result = ls.run(run_tasks)
    best = tuple(Node(**n) for n in result["best_nodes"])
    provenance = {
        "method": f"MB-NAS Local Search, variant {variant}", "dataset": ds.name, "dataset_dir": str(dataset_dir),
        "score": result["best_score"], "evaluations": result["evaluations"], "cache_hits": result["cache_hits"],
        "stop": result["stop"], "search_config": config,
    }
    genotype = make_genotype(best, ds.in_channels, ds.num_classes, 2, base_channels, max_depth, norm,
                             name=f"mbnas-{variant}", provenance=provenance)
    genotype.save(output_dir / "genotype.json")
    if plots:
        title = f"{variant} ({start} start) on {ds.name}: best {result['best_score']:.4f}"
        plot_trajectory(result["log"], output_dir / "trajectory.png", result["phase_starts"], title)
        draw_genotype(best, output_dir / "genotype.png", f"{result['best_key']}  score {result['best_score']:.4f}",
                      base_channels)
    summary = {k: result[k] for k in ("variant", "best_key", "best_score", "evaluations", "cache_hits", "stop")}
    summary["seconds"] = round(time.perf_counter() - tic, 1)
    log.info("search done: %s", summary)
    return summary


def _check_resume_config(path: Path, config: dict[str, Any]) -> None:
    """Refuse to resume a search with settings that change its result (a new output_dir is needed then)."""
    if not path.is_file() or not SearchState(path.parent).exists():
        return
    refuse_other_settings(json.loads(path.read_text()), config, path, ignore={*_RUNTIME_KEYS, "dataset_dir"})


def fit_genotype(genotype_path: str | Path, dataset_dir: str | Path, output_path: str | Path) -> str:
    """Copy a genotype with its input and output channels set to a dataset's (e.g. a shipped baseline for MSD
    Prostate's 2 modalities and 3 classes); returns ``output_path``. The architecture is otherwise unchanged."""
    genotype = Genotype.load(genotype_path)
    ds = load_checked_dataset(dataset_dir, deep=False)
    if (genotype.in_channels, genotype.out_channels) != (ds.in_channels, ds.num_classes):
        log.info("fitting %s to %s: in_channels %d -> %d, out_channels %d -> %d", genotype_path, ds.name,
                 genotype.in_channels, ds.in_channels, genotype.out_channels, ds.num_classes)
        genotype = genotype.replace(in_channels=ds.in_channels, out_channels=ds.num_classes)
    genotype.save(output_path)
    return str(output_path)
