"""What both BiX-NAS phases share: the validated search config, the data and loaders, scoring and the search log.

:class:`SearchConfig` holds every knob of a search; defaults follow the paper and the authors' code
(github.com/tiangexiang/BiX-NAS), and every bad value is refused with an :class:`~nas_ops.errors.InputError`
naming the config key. :class:`SearchRun` is one search on one fold of a dataset: device, loaders whose
shuffling and augmentation are re-seeded per epoch (a resumed search sees the same batches as an uninterrupted
one), the loss, and the writers of ``search_log.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

import torch
from monai.data import DataLoader
from monai.metrics import DiceMetric, MeanIoU
from monai.networks.utils import one_hot
from torch import nn

from nas_ops.atomic import atomic_write
from nas_ops.bixnas.bixnet import BiXNet, bixnet_genotype
from nas_ops.bixnas.space import DEFAULT_STEM_WIDTH, DEFAULT_WIDTH, SkipSets
from nas_ops.bixnas.supernet import BiXSupernet
from nas_ops.cost_model import count_macs, count_params
from nas_ops.data.setup import FoldData
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.training.losses import LOSSES, make_loss
from nas_ops.training.trainer import seed_epoch

log = logging.getLogger(__name__)

CONFIG_SOURCE = "search config"
PHASES = ("all", "phase1", "phase2")
PHASE2_INITS = ("fresh", "phase1", "continue")
PHASE2_SAMPLERS = ("paper", "authors")
PHASE2_SCORES = ("best", "last")
LOG_FILENAME = "search_log.jsonl"
NET_DIVISOR = 32  # stem pool + 4 levels: every spatial size must be divisible by 2^5


@dataclass(frozen=True)
class SearchConfig:
    """Every knob of a BiX-NAS search; the field names are the keys of ``configs/search.json``."""

    iterations: int = 3  # T: 2T extraction stages
    width: int = DEFAULT_WIDTH
    stem_width: int = DEFAULT_STEM_WIDTH
    spatial_size: tuple[int, ...] = (512, 512)
    slice_axis: int = 2
    keep_empty_fraction: float = 0.25
    batch_size: int = 2
    loss: str = "dice_ce"
    train_batches: int | None = None  # per epoch; None: the whole training set
    val_batches: int | None = None  # None: the whole validation set
    phase1_epochs: int = 300
    phase1_lr: float = 1e-3
    phase1_lr_decay: float = 3e-3  # Keras-style per epoch: lr / (1 + decay * epoch) (authors' code)
    phase1_weight_decay: float = 0.0  # on the weights only
    phase1_selection_lr: float | None = None  # lr of the selection matrices; None: phase1_lr
    phase2_epochs: int = 40
    phase2_lr: float = 1e-3
    phase2_lr_step: int = 10  # x phase2_lr_gamma every phase2_lr_step epochs
    phase2_lr_gamma: float = 0.1
    phase2_samples: int = 15  # s
    phase2_keep: int = 3  # at most this many of the Pareto front go on to the next stage
    phase2_init: str = "fresh"  # per stage: fresh weights (authors' code), Phase 1's, or the previous stage's
    phase2_sampler: str = "authors"  # "paper": no special case for the last decoder (see phase2.py)
    phase2_score: str = "best"  # IoU of a sample: best over the stage's epochs (authors' code) or the last
    keep_dead_bridge: bool = False

    # the keys that decide Phase 1's result (with seed, fold and dataset)
    PHASE1_KEYS: ClassVar[tuple[str, ...]] = (
        "iterations", "width", "stem_width", "spatial_size", "slice_axis", "keep_empty_fraction", "batch_size",
        "loss", "train_batches", "val_batches", "phase1_epochs", "phase1_lr", "phase1_lr_decay",
        "phase1_weight_decay", "phase1_selection_lr",
    )

    @classmethod
    def from_values(cls, **values: Any) -> SearchConfig:
        """Validate raw values (from a bundle config or a call) and build the config; refuses unknown keys."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise InputError(CONFIG_SOURCE, key, f"unknown key (known: {sorted(known)})")
        for key, value in values.items():
            _check(key, value)
        values = {k: (tuple(int(v) for v in values[k]) if k == "spatial_size" else values[k]) for k in values}
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        d = asdict(self)
        d["spatial_size"] = list(self.spatial_size)
        return d

    def phase1_dict(self) -> dict[str, Any]:
        """The keys that decide Phase 1's result (a Phase 1 is reused when these match)."""
        d = self.as_dict()
        return {k: d[k] for k in self.PHASE1_KEYS}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_CHOICES = {"loss": LOSSES, "phase2_init": PHASE2_INITS, "phase2_sampler": PHASE2_SAMPLERS,
            "phase2_score": PHASE2_SCORES}
_POSITIVE_INTS = ("iterations", "width", "stem_width", "batch_size", "phase1_epochs", "phase2_epochs",
                  "phase2_lr_step", "phase2_samples", "phase2_keep")
_OPTIONAL_POSITIVE_INTS = ("train_batches", "val_batches")
_POSITIVE_NUMBERS = ("phase1_lr", "phase2_lr", "phase2_lr_gamma")
_NON_NEGATIVE_NUMBERS = ("phase1_lr_decay", "phase1_weight_decay")


def _check(key: str, value: Any) -> None:
    """Refuse a bad value with an InputError naming ``key``."""

    def bad(problem: str) -> InputError:
        return InputError(CONFIG_SOURCE, key, f"{problem}, got {value!r}")

    if key in _POSITIVE_INTS and not (_is_int(value) and value >= 1):
        raise bad("must be a positive integer")
    if key in _OPTIONAL_POSITIVE_INTS and value is not None and not (_is_int(value) and value >= 1):
        raise bad("must be a positive integer or null (all batches)")
    if key == "phase1_selection_lr" and value is not None and not (_is_number(value) and value > 0):
        raise bad("must be a positive number or null (phase1_lr)")
    if key in _POSITIVE_NUMBERS and not (_is_number(value) and value > 0):
        raise bad("must be a positive number")
    if key in _NON_NEGATIVE_NUMBERS and not (_is_number(value) and value >= 0):
        raise bad("must be a number >= 0")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise bad(f"must be one of {list(_CHOICES[key])}")
    if key == "keep_dead_bridge" and not isinstance(value, bool):
        raise bad("must be true or false")
    if key == "slice_axis" and value not in (0, 1, 2):
        raise bad("must be 0, 1 or 2 (the spatial axis along which volumes are sliced)")
    if key == "keep_empty_fraction" and not (_is_number(value) and 0 <= value <= 1):
        raise bad("must be a number in [0, 1]")
    if key == "spatial_size":
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_int(v) and v > 0 for v in value):
            raise bad("must be two positive integers [H, W] (the search runs on 2D images or slices)")
        if any(v % NET_DIVISOR for v in value):
            raise bad(f"every size must be divisible by {NET_DIVISOR} (stem pooling and 4 levels)")


def check_run_args(phase: str, fold: int, n_folds: int, seed: int) -> None:
    """Refuse bad run-level values (the dataset checks the fold against its patients later)."""
    if phase not in PHASES:
        raise InputError(CONFIG_SOURCE, "phase", f"must be one of {list(PHASES)}, got {phase!r}")
    if not _is_int(n_folds) or n_folds < 2:
        raise InputError(CONFIG_SOURCE, "n_folds", f"must be an integer >= 2, got {n_folds!r}")
    if not _is_int(fold) or not 0 <= fold < n_folds:
        raise InputError(CONFIG_SOURCE, "fold", f"must be an integer in [0, {n_folds - 1}], got {fold!r}")
    if not _is_int(seed) or seed < 0:
        raise InputError(CONFIG_SOURCE, "seed", f"must be a non-negative integer, got {seed!r}")


# ----------------------------------------------------------------------------------------------------------
# scoring
# ----------------------------------------------------------------------------------------------------------


class SegScores:
    """Mean foreground IoU and Dice of one network over validation batches.

    Per class the mean over samples whose reference has that class (MONAI's ``ignore_empty``), then the mean
    over foreground classes with a reference; 0 when no sample has any foreground.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._iou = MeanIoU(include_background=False, reduction="mean_batch", ignore_empty=True)
        self._dice = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)

    def add(self, logits: torch.Tensor, label: torch.Tensor) -> None:
        """``(B, K, *S)`` logits and ``(B, 1, *S)`` integer labels."""
        k = self.num_classes
        pred, ref = one_hot(logits.argmax(1, keepdim=True), k), one_hot(label.long(), k)
        self._iou(pred, ref)
        self._dice(pred, ref)

    def result(self) -> tuple[float, float]:
        """``(iou, dice)``."""
        out = []
        for metric in (self._iou, self._dice):
            per_class = metric.aggregate()
            ok = per_class[~torch.isnan(per_class)]
            out.append(float(ok.mean()) if ok.numel() else 0.0)
        return out[0], out[1]


# ----------------------------------------------------------------------------------------------------------
# one search
# ----------------------------------------------------------------------------------------------------------


class SearchRun:
    """One search on one fold: config, data, loaders, loss, device and the output folder."""

    def __init__(
        self,
        config: SearchConfig,
        data: FoldData,
        output_dir: str | Path,
        seed: int,
        fold: int,
        n_folds: int,
        device: torch.device,
        dataset_dir: str | Path,
        num_workers: int = 0,
        plots: bool = True,
    ) -> None:
        self.config = config
        self.data = data
        self.output_dir = Path(output_dir)
        self.seed = seed
        self.fold = fold
        self.n_folds = n_folds
        self.device = device
        self.plots = plots
        self.in_channels = data.dataset.in_channels
        self.out_channels = data.dataset.num_classes
        self.input_shape = (self.in_channels, *config.spatial_size)
        self.loss_fn = make_loss(config.loss)
        self.loader_rng = torch.Generator().manual_seed(seed)
        bs = config.batch_size
        self.train_loader = DataLoader(data.train, batch_size=bs, shuffle=True, num_workers=num_workers,
                                       generator=self.loader_rng, drop_last=len(data.train) > bs)
        self.val_loader = DataLoader(data.val, batch_size=bs, shuffle=False, num_workers=num_workers)
        self.dataset_info = {"name": data.dataset.name, "dataset_dir": str(dataset_dir), "fold": fold,
                             "n_folds": n_folds, "train_cases": len(data.train_items),
                             "val_cases": len(data.val_items), "classes": data.dataset.labels}
        self._macs: dict[str, tuple[int, int]] = {}

    # -- identity -------------------------------------------------------------------------------------------

    def identity(self, phase1_only: bool = False) -> dict[str, Any]:
        """The settings that decide a phase's result: compared when a search is resumed."""
        config = self.config.phase1_dict() if phase1_only else self.config.as_dict()
        return {"seed": self.seed, "fold": self.fold, "n_folds": self.n_folds, "dataset": self.data.dataset.name,
                **config}

    # -- networks -------------------------------------------------------------------------------------------

    def new_supernet(self) -> BiXSupernet:
        """A freshly initialised supernet on the device (its init draws from torch's global RNG)."""
        c = self.config
        return BiXSupernet(2, self.in_channels, self.out_channels, c.iterations, c.width, c.stem_width).to(self.device)

    def genotype(self, skip_sets: SkipSets, name: str, provenance: dict[str, Any]) -> Genotype:
        """The BiX-Net genotype of ``skip_sets`` for this dataset's channels and classes."""
        c = self.config
        return bixnet_genotype(skip_sets, 2, self.in_channels, self.out_channels, name=name, provenance=provenance,
                               width=c.width, stem_width=c.stem_width, keep_dead_bridge=c.keep_dead_bridge)

    def cost(self, skip_sets: SkipSets) -> tuple[int, int]:
        """``(params, MACs)`` of the pruned BiX-Net of ``skip_sets`` at the search's input size, cached.

        Counted by :mod:`nas_ops.cost_model` on a network built on the ``meta`` device (shapes only: fast).
        """
        key = json.dumps(skip_sets)
        if key not in self._macs:
            c = self.config
            with torch.device("meta"):
                net = BiXNet(2, self.in_channels, self.out_channels, skip_sets, c.width, c.stem_width,
                             c.keep_dead_bridge)
            self._macs[key] = (count_params(net), count_macs(net, self.input_shape, device="meta"))
        return self._macs[key]

    # -- data -----------------------------------------------------------------------------------------------

    def train_batches(self, epoch_key: int) -> Iterator[dict]:
        """The training batches of one epoch; ``epoch_key`` re-seeds the augmentation (unique per epoch)."""
        seed_epoch(self.data.train, self.seed, epoch_key)
        return islice(iter(self.train_loader), self.config.train_batches)

    def num_train_batches(self) -> int:
        n = len(self.train_loader)
        return n if self.config.train_batches is None else min(n, self.config.train_batches)

    def val_batches(self) -> Iterable[dict]:
        """The validation batches (always the same ones, in order)."""
        return islice(self.val_loader, self.config.val_batches)

    def to_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["image"].to(self.device), batch["label"].to(self.device)

    @torch.no_grad()
    def validate(self, forwards: Callable[[torch.Tensor], Sequence[torch.Tensor]], n: int) -> list[tuple[float, float]]:
        """``(iou, dice)`` of ``n`` networks; ``forwards(image)`` returns their ``n`` logits for one batch."""
        scores = [SegScores(self.out_channels) for _ in range(n)]
        for batch in self.val_batches():
            image, label = self.to_device(batch)
            for acc, logits in zip(scores, forwards(image), strict=True):
                acc.add(logits, label)
        return [acc.result() for acc in scores]

    # -- outputs --------------------------------------------------------------------------------------------

    def write_log(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rewrite ``search_log.jsonl`` (one JSON object per epoch or event) from the checkpointed history."""
        text = "".join(json.dumps(row) + "\n" for row in rows)
        atomic_write(self.output_dir / LOG_FILENAME, lambda fh: fh.write(text.encode()))


def save_state_dict(module: nn.Module, path: str | Path) -> None:
    """Write a module's weights atomically (loads with ``weights_only=True``)."""
    atomic_write(path, lambda fh: torch.save(module.state_dict(), fh))
