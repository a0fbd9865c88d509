"""What both BiX-NAS phases share (:class:`PhaseContext`): the opened search, the fold's data and loaders whose
shuffling and augmentation are re-seeded per epoch (a resumed search sees the same batches as an uninterrupted
one), the loss, validation through the one scorer, the networks' costs and ``search_log.jsonl``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_ops.atomic import atomic_write
from nas_ops.bixnas.config import BiXNASConfig
from nas_ops.bixnas.network import BiXNet
from nas_ops.bixnas.space import SkipSets, bixnet_genotype
from nas_ops.bixnas.supernet import BiXSupernet
from nas_ops.cost_model import count_macs, count_params
from nas_ops.data.setup import FoldData, make_loaders
from nas_ops.engine.loop import EpochBatches
from nas_ops.genotype import Genotype
from nas_ops.search_run import SearchRun
from nas_ops.training.losses import make_loss
from nas_ops.training.metrics import score_networks

log = logging.getLogger(__name__)

LOG_FILENAME = "search_log.jsonl"


class PhaseContext:
    """What both phases of one search share: the opened search (config, device, output folder, seed, fold), the
    fold's data and loaders, the loss, the networks' costs, validation and the search log."""

    def __init__(self, run: SearchRun, data: FoldData) -> None:
        config: BiXNASConfig = run.config  # type: ignore[assignment]
        self.run = run
        self.config = config
        self.data = data
        self.output_dir = run.output_dir
        self.seed, self.fold, self.n_folds = run.seed, run.fold, run.n_folds
        self.device = run.device
        self.plots = run.plots
        self.in_channels = data.dataset.in_channels
        self.out_channels = data.dataset.num_classes
        self.input_shape = (self.in_channels, *config.spatial_size)
        self.loss_fn = make_loss(config.loss)
        self.loaders = make_loaders(data, config.batch_size, run.seed, run.num_workers)
        self.loader_rng = self.loaders.generator
        self.train_batches = EpochBatches(self.loaders.train, run.seed, config.train_batches)
        self._macs: dict[str, tuple[int, int]] = {}

    # -- identity -------------------------------------------------------------------------------------------

    def identity(self, phase1_only: bool = False) -> dict[str, Any]:
        """The settings that decide a phase's result: compared when a search is resumed or reported."""
        return phase_identity(self.run, phase1_only)

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


def phase_identity(run: SearchRun, phase1_only: bool = False) -> dict[str, Any]:
    """What decides a phase's result: the search's base identity (seed, fold, dataset) and the config (Phase 1: only
    its own keys, so a Phase 1 is reused by Phase-2 settings that differ)."""
    config: BiXNASConfig = run.config  # type: ignore[assignment]
    values = config.phase1_dict() if phase1_only else config.as_dict()
    return {**run.identity, **values}


def save_state_dict(module: nn.Module, path: str | Path) -> None:
    """Write a module's weights atomically (loads with ``weights_only=True``)."""
    atomic_write(path, lambda fh: torch.save(module.state_dict(), fh))
