"""What both BiX-NAS phases share: the validated search config, the data and loaders, scoring and the search log.

:class:`SearchConfig` holds every knob of a search (the ``search`` block of the bundle's ``search.json``);
defaults follow the paper and the authors' code (github.com/tiangexiang/BiX-NAS), and every bad value is refused
by the shared config checker (:mod:`nas_ops.config`) naming the key. :class:`SearchRun` is one search on one fold
of a dataset: device, loaders whose shuffling and augmentation are re-seeded per epoch (a resumed search sees the
same batches as an uninterrupted one), the loss, validation through the one scorer, and ``search_log.jsonl``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from torch import nn

from nas_ops.atomic import atomic_write
from nas_ops.bixnas.bixnet import BiXNet, bixnet_genotype
from nas_ops.bixnas.space import DEFAULT_STEM_WIDTH, DEFAULT_WIDTH, SkipSets
from nas_ops.bixnas.supernet import BiXSupernet
from nas_ops.config import ConfigBlock, Fraction, PositiveFloat, PositiveInt, Rule, SliceAxis
from nas_ops.cost_model import count_macs, count_params
from nas_ops.data.setup import FoldData, make_loaders
from nas_ops.engine.loop import EpochBatches
from nas_ops.genotype import Genotype
from nas_ops.training.losses import make_loss
from nas_ops.training.metrics import score_networks

log = logging.getLogger(__name__)

LOG_FILENAME = "search_log.jsonl"
NET_DIVISOR = 32  # stem pool + 4 levels: every spatial size must be divisible by 2^5

PositiveOrAll = Annotated[int, Rule(min=1)] | None  # None: all batches


@dataclass(frozen=True)
class SearchConfig(ConfigBlock):
    """Every knob of a BiX-NAS search: the ``search`` block of ``configs/search.json``, checked by its types."""

    iterations: PositiveInt = 3  # T: 2T extraction stages
    width: PositiveInt = DEFAULT_WIDTH
    stem_width: PositiveInt = DEFAULT_STEM_WIDTH
    spatial_size: Annotated[tuple[int, ...], Rule(min=1, length=2, multiple_of=NET_DIVISOR,
                                                   why="stem pooling and 4 levels; [H, W] of 2D images or slices")
                            ] = (512, 512)
    slice_axis: SliceAxis = 2
    keep_empty_fraction: Fraction = 0.25
    batch_size: PositiveInt = 2
    loss: Literal["dice_ce", "dice", "foreground_dice"] = "dice_ce"
    train_batches: PositiveOrAll = None  # per epoch; None: the whole training set
    val_batches: PositiveOrAll = None  # None: the whole validation set
    phase1_epochs: PositiveInt = 300
    phase1_lr: PositiveFloat = 1e-3
    phase1_lr_decay: Annotated[float, Rule(min=0.0)] = 3e-3  # Keras-style per epoch: lr / (1 + decay * epoch)
    phase1_weight_decay: Annotated[float, Rule(min=0.0)] = 0.0  # on the weights only
    phase1_selection_lr: PositiveFloat | None = None  # lr of the selection matrices; None: phase1_lr
    phase2_epochs: Annotated[int, Rule(min=1, max=999)] = 40
    phase2_lr: PositiveFloat = 1e-3
    phase2_lr_step: PositiveInt = 10  # x phase2_lr_gamma every phase2_lr_step epochs
    phase2_lr_gamma: PositiveFloat = 0.1
    phase2_samples: PositiveInt = 15  # s
    phase2_keep: PositiveInt = 3  # at most this many of the Pareto front go on to the next stage
    phase2_init: Literal["fresh", "phase1", "continue"] = "fresh"  # per stage: fresh (authors), Phase 1's, previous
    phase2_sampler: Literal["paper", "authors"] = "authors"  # "paper": no special case for the last decoder
    phase2_score: Literal["best", "last"] = "best"  # IoU of a sample: best over the stage's epochs, or the last
    keep_dead_bridge: bool = False

    # the keys that decide Phase 1's result (with seed, fold and dataset)
    PHASE1_KEYS: ClassVar[tuple[str, ...]] = (
        "iterations", "width", "stem_width", "spatial_size", "slice_axis", "keep_empty_fraction", "batch_size",
        "loss", "train_batches", "val_batches", "phase1_epochs", "phase1_lr", "phase1_lr_decay",
        "phase1_weight_decay", "phase1_selection_lr",
    )

    def phase1_dict(self) -> dict[str, Any]:
        """The keys that decide Phase 1's result (a Phase 1 is reused when these match)."""
        d = self.as_dict()
        return {k: d[k] for k in self.PHASE1_KEYS}


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
        self.loaders = make_loaders(data, config.batch_size, seed, num_workers)
        self.loader_rng = self.loaders.generator
        self.train_batches = EpochBatches(self.loaders.train, seed, config.train_batches)
        self.dataset_info = {"name": data.dataset.name, "dataset_dir": str(dataset_dir), "fold": fold,
                             "n_folds": n_folds, "train_cases": len(data.train_items),
                             "val_cases": len(data.val_items), "classes": data.dataset.labels}
        self._macs: dict[str, tuple[int, int]] = {}

    # -- identity -------------------------------------------------------------------------------------------

    def identity(self, phase1_only: bool = False) -> dict[str, Any]:
        """The settings that decide a phase's result: compared when a search is resumed or reported."""
        return search_identity(self.config, self.seed, self.fold, self.n_folds,
                               {"name": self.data.dataset.name, "fingerprint": self.data.fingerprint}, phase1_only)

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

    def num_train_batches(self) -> int:
        return len(self.train_batches)

    def val_batches(self) -> Iterable[dict]:
        """The validation batches (always the same ones, in order)."""
        return islice(self.loaders.val, self.config.val_batches)

    def validate(self, forwards: Callable[[torch.Tensor], Sequence[torch.Tensor]], n: int) -> list[tuple[float, float]]:
        """``(iou, dice)`` of ``n`` networks; ``forwards(image)`` returns their ``n`` logits for one batch."""
        scores = score_networks(forwards, self.val_batches(), self.out_channels, n, self.device)
        return [(s["iou"], s["dice"]) for s in scores]

    # -- outputs --------------------------------------------------------------------------------------------

    def write_log(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rewrite ``search_log.jsonl`` (one JSON object per epoch or event) from the checkpointed history."""
        text = "".join(json.dumps(row) + "\n" for row in rows)
        atomic_write(self.output_dir / LOG_FILENAME, lambda fh: fh.write(text.encode()))


def search_identity(config: SearchConfig, seed: int, fold: int, n_folds: int, dataset: dict[str, Any],
                    phase1_only: bool = False) -> dict[str, Any]:
    """What decides a phase's result: the seed, the fold, the dataset (name and fingerprint) and the config (Phase 1:
    only its own keys, so a Phase 1 is reused by Phase-2 settings that differ)."""
    values = config.phase1_dict() if phase1_only else config.as_dict()
    return {"seed": seed, "fold": fold, "n_folds": n_folds, "dataset": dataset, **values}


def save_state_dict(module: nn.Module, path: str | Path) -> None:
    """Write a module's weights atomically (loads with ``weights_only=True``)."""
    atomic_write(path, lambda fh: torch.save(module.state_dict(), fh))
