"""The MB-NAS evaluation protocol: one training is a pure function of (genotype, fold, seed, budget).

A network's score is the mean foreground validation Dice over the last 20 % of its training epochs, averaged over
the folds of a patient-level k-fold split and over training seeds (the paper: 5 folds x 3 seeds). One training
(:func:`train_and_score`) takes only JSON-able arguments and returns a JSON-able result, so trainings can run in
this process (:func:`local_runner`) or at once on a Ray cluster (:func:`ray_runner`) with the same numbers.
Training follows the paper: Adam (lr 1e-3), polynomial decay (power 0.9), foreground soft Dice, 2D slices with
scaling, shifting, rotation, flips and brightness augmentation (:func:`nas_ops.data.transforms.augmentations`).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import torch
from monai.data import DataLoader
from monai.utils import set_determinism

from nas_ops.cost_model import count_params
from nas_ops.data.setup import FoldData, prepare_fold
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network
from nas_ops.training.loop import make_optimiser, resolve_device, train_epoch, validate_dice
from nas_ops.training.losses import make_loss
from nas_ops.training.trainer import seed_epoch

log = logging.getLogger(__name__)

EvaluateFn = Callable[[dict, int, int, dict], dict]


@dataclass(frozen=True)
class TrainingBudget:
    """What one training of the protocol does (everything but the genotype, the fold and the seed)."""

    dataset_dir: str
    epochs: int = 100
    batch_size: int = 32
    spatial_size: tuple[int, ...] = (128, 128)
    slice_axis: int = 2
    n_folds: int = 5
    split_seed: int = 0
    lr: float = 1e-3
    lr_power: float = 0.9
    loss: str = "foreground_dice"
    last_fraction: float = 0.2
    keep_empty_fraction: float = 0.25
    augment: bool = True
    device: str = "auto"

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TrainingBudget:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"unknown training budget key(s) {unknown} (known: {sorted(known)})")
        doc = dict(doc)
        if "spatial_size" in doc:
            doc["spatial_size"] = tuple(int(s) for s in doc["spatial_size"])
        return cls(**doc)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["spatial_size"] = list(self.spatial_size)
        return doc

    @property
    def scored_epochs(self) -> int:
        """How many final epochs the score averages: ``ceil(last_fraction * epochs)``, at least 1."""
        return max(1, math.ceil(self.last_fraction * self.epochs))


@lru_cache(maxsize=8)
def _fold_data(dataset_dir: str, fold: int, n_folds: int, split_seed: int, spatial_size: tuple[int, ...],
               slice_axis: int, keep_empty_fraction: float, augment: bool) -> FoldData:
    """A fold's 2D datasets, built once per process (the slicing is deterministic; augmentation is re-seeded per
    training and epoch, so reuse changes no number)."""
    return prepare_fold(dataset_dir, 2, fold, n_folds, split_seed, spatial_size, slice_axis,
                        keep_empty_fraction=keep_empty_fraction, augment=augment)


def train_and_score(genotype: dict, fold: int, seed: int, budget: dict) -> dict:
    """Train ``genotype`` (a genotype document) on ``fold`` with ``seed``; return its score and history.

    ``{"score": mean Dice over the last epochs, "val_dice": [[per class] per scored epoch], "loss": [per epoch],
    "params": int, "seconds": float}``. Nothing is written to disk.
    """
    b = TrainingBudget.from_dict(budget)
    g = Genotype.from_dict(genotype)
    tic = time.perf_counter()
    data = _fold_data(str(b.dataset_dir), fold, b.n_folds, b.split_seed, b.spatial_size, b.slice_axis,
                      b.keep_empty_fraction, b.augment)
    set_determinism(seed)
    device = resolve_device(b.device)
    model = build_network(g).to(device)
    opt = make_optimiser(model, "adam", b.lr)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=b.epochs, power=b.lr_power)
    loss_fn = make_loss(b.loss)
    loader_rng = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(data.train, batch_size=b.batch_size, shuffle=True, num_workers=0, generator=loader_rng,
                              drop_last=len(data.train) > b.batch_size)
    val_loader = DataLoader(data.val, batch_size=b.batch_size, shuffle=False, num_workers=0)
    losses, val_dice = [], []
    first_scored = b.epochs - b.scored_epochs
    for epoch in range(b.epochs):
        seed_epoch(data.train, seed, epoch)
        losses.append(train_epoch(model, train_loader, opt, loss_fn, device, desc=f"{g.name or 'net'} e{epoch + 1}"))
        sched.step()
        if epoch >= first_scored:
            val_dice.append(validate_dice(model, val_loader, device))
    score = sum(sum(d) / len(d) for d in val_dice) / len(val_dice)
    return {"score": float(score), "val_dice": val_dice, "loss": losses, "params": count_params(model),
            "seconds": round(time.perf_counter() - tic, 2)}


def resolve_callable(fn: str | Callable) -> Callable:
    """A callable, or its dotted path (``package.module.function``) imported."""
    if callable(fn):
        return fn
    module, _, name = str(fn).replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import the evaluation function {fn!r}: {err}") from None


# ----------------------------------------------------------------------------------------------------- runners


@dataclass(frozen=True)
class Task:
    """One training of the protocol: a genotype (by cache key and document) on one fold with one seed."""

    key: str
    genotype: dict
    fold: int
    seed: int

    @property
    def unit(self) -> str:
        """The (fold, seed) pair as a string key."""
        return unit_id(self.fold, self.seed)


def unit_id(fold: int, seed: int) -> str:
    return f"fold{fold}-seed{seed}"


RunTasks = Callable[[Sequence[Task]], Iterator[tuple[Task, dict]]]


@contextmanager
def local_runner(evaluate_fn: str | EvaluateFn, budget: dict) -> Iterator[RunTasks]:
    """Run tasks one after another in this process, yielding ``(task, result)`` as each finishes."""
    fn = resolve_callable(evaluate_fn)

    def run(tasks: Sequence[Task]) -> Iterator[tuple[Task, dict]]:
        for task in tasks:
            yield task, fn(task.genotype, task.fold, task.seed, budget)

    yield run


def _ray_task(evaluate_fn: str, genotype: dict, fold: int, seed: int, budget: dict) -> dict:
    """A Ray worker's job: one torch thread (2-core machines), then one training."""
    torch.set_num_threads(1)
    return resolve_callable(evaluate_fn)(genotype, fold, seed, budget)


@contextmanager
def ray_runner(evaluate_fn: str, budget: dict, num_workers: int = 2, address: str | None = None) -> Iterator[RunTasks]:
    """Run tasks at once on Ray (a local cluster of ``num_workers`` CPUs, or ``address``), one CPU each; yields
    ``(task, result)`` in completion order. The evaluation function travels by its dotted path."""
    import ray  # optional dependency

    if not isinstance(evaluate_fn, str):
        evaluate_fn = f"{evaluate_fn.__module__}.{evaluate_fn.__qualname__}"
    resolve_callable(evaluate_fn)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    temp_dir = None
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        temp_dir = tempfile.mkdtemp(prefix="ray_mbnas_")
        ray.init(num_cpus=num_workers, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    remote = ray.remote(num_cpus=1)(_ray_task)

    def run(tasks: Sequence[Task]) -> Iterator[tuple[Task, dict]]:
        refs = {remote.remote(evaluate_fn, t.genotype, t.fold, t.seed, budget): t for t in tasks}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield refs[ref], ray.get(ref)

    try:
        yield run
    finally:
        ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def make_runner(evaluate_fn: str | EvaluateFn, budget: dict, backend: str = "local",
                num_workers: int = 2, address: str | None = None) -> Iterator[RunTasks]:
    """The task runner of a backend: ``"local"`` (in process) or ``"ray"``."""
    if backend == "local":
        with local_runner(evaluate_fn, budget) as run:
            yield run
    elif backend == "ray":
        with ray_runner(evaluate_fn, budget, num_workers, address) as run:
            yield run
    else:
        raise ValueError(f"unknown backend {backend!r} (known: 'local', 'ray')")
