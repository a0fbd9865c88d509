"""The MB-NAS evaluation protocol: one training is a pure function of (genotype, fold, seed, budget).

A network's score is the mean foreground validation Dice over the last 20 % of its training epochs, averaged over
the folds of a patient-level k-fold split and over training seeds (the paper: 5 folds x 3 seeds). One training
(:func:`train_and_score`) takes only JSON-able arguments and returns a JSON-able result, so trainings are jobs of
the execution layer (:mod:`nas_ops.engine.execution`: in this process, on Ray or in subprocesses) with the same
numbers on every backend. The dataset is validated once, by the search; its trainings trust its fingerprint.
The optimiser and loss are the paper's: Adam (lr 1e-3), polynomial decay (power 0.9), foreground soft Dice, on 2D
slices. Two choices are ours, not the paper's: only ``keep_empty_fraction`` (0.25) of the slices without
foreground are kept (the paper trains on all slices), and the augmentation
(:func:`nas_ops.data.transforms.augmentations`: scaling, shifting, rotation, flips, brightness) adds random
contrast.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import torch

from nas_ops.cost_model import count_params
from nas_ops.data.geometry import DataGeometry
from nas_ops.data.setup import FoldData, dataset_identity, make_loaders, prepare_fold
from nas_ops.engine.loop import EpochBatches, RunEngine
from nas_ops.engine.seeds import seed_everything
from nas_ops.engine.steps import SupervisedStep
from nas_ops.errors import DatasetError, InputError
from nas_ops.genotype import Genotype
from nas_ops.process import resolve_device
from nas_ops.registry import build_network
from nas_ops.resources import check_memory
from nas_ops.training.losses import make_loss
from nas_ops.training.metrics import score_network

log = logging.getLogger(__name__)

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
    dataset_fingerprint: str | None = None  # validated by the search: its trainings skip validation
    memory_limit_gb: float | None = None  # a network whose training step needs more scores 0 (nas_ops.resources)

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
               slice_axis: int, keep_empty_fraction: float, augment: bool, trusted: str | None) -> FoldData:
    """A fold's 2D datasets, built once per process (the slicing is deterministic; augmentation is re-seeded per
    training and epoch, so reuse changes no number). ``trusted``: the fingerprint the search validated."""
    geometry = DataGeometry(spatial_size=spatial_size, slice_axis=slice_axis, keep_empty_fraction=keep_empty_fraction)
    return prepare_fold(dataset_dir, 2, geometry, fold, n_folds, split_seed, augment=augment, trusted=trusted)


def train_and_score(genotype: dict, fold: int, seed: int, budget: dict) -> dict:
    """Train ``genotype`` (a genotype document) on ``fold`` with ``seed`` on the run engine; return its score.

    ``{"score": mean Dice over the last epochs, "val_dice": [[per class] per scored epoch], "loss": [per epoch],
    "params": int, "seconds": float}``. Nothing is written to disk.
    """
    b = TrainingBudget.from_dict(budget)
    g = Genotype.from_dict(genotype)
    tic = time.perf_counter()
    data = _fold_data(str(b.dataset_dir), fold, b.n_folds, b.split_seed, b.spatial_size, b.slice_axis,
                      b.keep_empty_fraction, b.augment, b.dataset_fingerprint)
    if b.dataset_fingerprint is not None and dataset_identity(b.dataset_dir)["fingerprint"] != b.dataset_fingerprint:
        raise DatasetError(data.dataset.json_path, "fingerprint", "the dataset changed while the search ran: start "
                           "the search again in a new output_dir")
    device = resolve_device(b.device)
    try:  # a network of the space too large for the device is skipped with score 0: it cannot be better
        check_memory(g, b.spatial_size, b.batch_size, device, b.memory_limit_gb, "search#spatial_size",
                     batch_key="search#batch_size")
    except InputError as err:
        log.warning("not training %s: %s", g.name or "candidate", err.problem)
        return {"score": 0.0, "skipped": err.problem, "val_dice": [], "loss": [], "params": None, "seconds": 0.0}
    seed_everything(seed)
    model = build_network(g).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=b.lr)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=b.epochs, power=b.lr_power)
    loaders = make_loaders(data, b.batch_size, seed)
    first_scored = b.epochs - b.scored_epochs
    classes = data.dataset.num_classes
    engine = RunEngine(
        SupervisedStep(model, make_loss(b.loss), opt), EpochBatches(loaders.train, seed), device, scheduler=sched,
        validate=lambda epoch: {"val_dice": score_network(model, loaders.val, classes, device)["dice_per_class"]},
        validate_every=lambda epoch: epoch >= first_scored, desc=g.name or "candidate",
        num_batches=len(loaders.train),
    )
    rows = engine.run(range(b.epochs))
    val_dice = [row["val_dice"] for row in rows if "val_dice" in row]
    score = sum(sum(d) / len(d) for d in val_dice) / len(val_dice)
    return {"score": float(score), "val_dice": val_dice, "loss": [row["loss"] for row in rows],
            "params": count_params(model), "seconds": round(time.perf_counter() - tic, 2)}
