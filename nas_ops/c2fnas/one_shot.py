"""Weight-sharing supernets of both C2FNAS stages: trained on the run engine with one uniformly sampled path per
batch (single-path one-shot), and their paths scored by validation Dice with the shared weights."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas_ops.c2fnas.config import C2FNASConfig
from nas_ops.c2fnas.network import CellGrid
from nas_ops.c2fnas.network import Path as GridPath
from nas_ops.c2fnas.space import OPS
from nas_ops.data.geometry import DataGeometry
from nas_ops.data.setup import FoldData, make_loaders, prepare_fold
from nas_ops.engine.loop import EpochBatches, RunCheckpoint, RunEngine
from nas_ops.engine.seeds import stream_generator
from nas_ops.engine.steps import SampledPathStep
from nas_ops.search_state import SearchState
from nas_ops.training.losses import make_loss
from nas_ops.training.metrics import sliding_window_dice

log = logging.getLogger(__name__)


def grid_of(cfg: C2FNASConfig, in_channels: int, out_channels: int, paths: Sequence[Sequence[int]],
            ops: Sequence[str] | Sequence[Sequence[str]] = OPS) -> CellGrid:
    """A supernet of ``paths`` at the config's widths."""
    return CellGrid(in_channels, out_channels, paths, ops, cfg.base_channels, cfg.stem_channels)


class OnePath(nn.Module):
    """One path of a supernet as a network (what an inferer calls)."""

    def __init__(self, grid: CellGrid, path: GridPath) -> None:
        super().__init__()
        self.grid, self.path = grid, path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grid(x, self.path)


def fold_data(dataset_dir: str | Path, cfg: C2FNASConfig, seed: int, fold: int, n_folds: int,
              trusted: str | None = None) -> FoldData:
    """The fold's 3D patches (training) and whole volumes (validation)."""
    geometry = DataGeometry(patch_size=cfg.patch_size, samples_per_volume=cfg.samples_per_volume)
    return prepare_fold(dataset_dir, 3, geometry, fold, n_folds, seed, trusted=trusted)


def train_supernet(grid: CellGrid, sample: Callable[[np.random.Generator], GridPath], data: FoldData,
                   cfg: C2FNASConfig, epochs: int, state: SearchState, seed: int, stream: int,
                   device: torch.device, desc: str) -> list[dict[str, Any]]:
    """Train ``grid`` for ``epochs`` with one uniformly sampled path per batch on the run engine; checkpointed every
    epoch in ``state`` (weights, optimiser, the sampler's and the loader's generators), so a killed run resumes to
    the same weights. Returns the epochs' rows."""
    grid.to(device)
    optimizer = torch.optim.Adam(grid.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=epochs, power=0.9)
    loaders = make_loaders(data, cfg.batch_size, seed)
    rng = stream_generator(seed, stream)
    step = SampledPathStep(grid, make_loss(cfg.loss), optimizer, sample, rng)
    checkpoint = RunCheckpoint(state, {"model": grid, "optimiser": optimizer, "scheduler": scheduler},
                               {"loader": loaders.generator, "sampler": rng})
    batches = EpochBatches(loaders.train, seed, cfg.train_batches)
    return RunEngine(step, batches, device, scheduler=scheduler, checkpoint=checkpoint, desc=desc,
                     num_batches=len(batches)).fit(epochs)


def score_paths(grid: CellGrid, paths: Sequence[GridPath], data: FoldData, cfg: C2FNASConfig,
                device: torch.device) -> list[float]:
    """Mean foreground validation Dice of each path of ``grid`` (shared weights), through MONAI's sliding window
    over whole volumes at the search's patch."""
    grid.eval()
    return sliding_window_dice([OnePath(grid, p) for p in paths], data, cfg.patch_size, device, cfg.val_batches)
