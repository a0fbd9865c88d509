"""What both stages of a C2FNAS search share: the ``search`` block, the fold's 3D data, supernet training on the run
engine with uniform path sampling, and scoring paths of a supernet by validation Dice."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from torch import nn

from nas_ops.c2fnas.network import CellGrid
from nas_ops.c2fnas.network import Path as GridPath
from nas_ops.c2fnas.space import NUM_CELLS, OPS, TopologyRule
from nas_ops.config import ConfigBlock, PositiveFloat, PositiveInt, Rule, Size3D
from nas_ops.data.setup import FoldData, make_loaders, prepare_fold
from nas_ops.engine.loop import EpochBatches, RunCheckpoint, RunEngine
from nas_ops.engine.seeds import stream_generator
from nas_ops.engine.steps import SampledPathStep
from nas_ops.errors import InputError
from nas_ops.search_state import SearchState
from nas_ops.training.losses import make_loss
from nas_ops.training.metrics import sliding_window_dice

log = logging.getLogger(__name__)
Op = Literal["2d", "3d", "p3d"]


@dataclass(frozen=True)
class C2FNASConfig(ConfigBlock):
    """Every knob of a C2FNAS search: the ``search`` block of ``configs/search.json``.

    Search and deployment use the same network and patch (the paper: no proxy); the demo shrinks both.
    """

    patch_size: Size3D = (96, 96, 96)  # the paper's MSD Pancreas patch
    samples_per_volume: PositiveInt = 2
    batch_size: PositiveInt = 1
    loss: Literal["dice_ce", "dice", "foreground_dice"] = "dice_ce"
    lr: PositiveFloat = 1e-3
    train_batches: PositiveInt | None = None  # at most this many batches per epoch (None: all)
    val_batches: PositiveInt | None = None  # at most this many validation volumes (None: all)
    base_channels: PositiveInt = 64  # level l has base_channels * 2**l channels
    stem_channels: PositiveInt = 32
    num_cells: PositiveInt = NUM_CELLS
    topology_rule: TopologyRule = "u_shaped"
    coarse_groups: PositiveInt = 8  # k-means groups of topologies, one supernet each
    coarse_epochs: PositiveInt = 50  # the budget of each group's supernet
    coarse_op: Op = "3d"  # the op of every cell while the topology is searched
    coarse_scored: PositiveInt | None = None  # members of a group scored after training (None: all)
    fine_epochs: PositiveInt = 50
    population: Annotated[int, Rule(min=2)] = 20
    generations: PositiveInt = 10
    mutation_prob: Annotated[float, Rule(min=0.0, max=1.0)] = 0.1  # per cell: about one of 12 cells per child
    crossover_prob: Annotated[float, Rule(min=0.0, max=1.0)] = 0.5  # per child
    max_macs: PositiveFloat | None = None  # fitness bound on the fine stage's networks (MACs per patch)
    max_params: PositiveInt | None = None

    def check(self, source: str | None, prefix: str = "") -> None:
        from nas_ops.c2fnas.space import enumerate_topologies

        stride = 16  # the stem's 2 x three levels down: every path may reach 1/16
        for i, s in enumerate(self.patch_size):
            if s % stride or s < 2 * stride:
                raise InputError(source, f"{prefix}patch_size[{i}]", f"{s} must be a multiple of {stride} and at "
                                 f"least {2 * stride} (instance norm needs more than one voxel at 1/{stride})")
        n = len(enumerate_topologies(self.topology_rule, self.num_cells))
        if n == 0:
            raise InputError(source, f"{prefix}num_cells", f"no topology of rule {self.topology_rule!r} has "
                             f"{self.num_cells} cells")
        if self.coarse_groups > n:
            raise InputError(source, f"{prefix}coarse_groups", f"{self.coarse_groups} groups of {n} topologies: use "
                             f"at most {n}")


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
    return prepare_fold(dataset_dir, 3, fold, n_folds, seed, patch_size=cfg.patch_size,
                        samples_per_volume=cfg.samples_per_volume, trusted=trusted)


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
    resumed = checkpoint.resume()
    history: list[dict[str, Any]] = resumed.state.get("history", [])
    if history:
        log.info("%s: resuming at epoch %d/%d from %s", desc, len(history) + 1, epochs, state.path)
    batches = EpochBatches(loaders.train, seed, cfg.train_batches)
    engine = RunEngine(step, batches, device, scheduler=scheduler, checkpoint=checkpoint, desc=desc,
                       num_batches=len(batches))

    def on_epoch(row: dict[str, Any]) -> dict[str, Any]:
        history.append(row)
        return {"history": history}

    engine.run(range(len(history), epochs), on_epoch)
    return history


def score_paths(grid: CellGrid, paths: Sequence[GridPath], data: FoldData, cfg: C2FNASConfig,
                device: torch.device) -> list[float]:
    """Mean foreground validation Dice of each path of ``grid`` (shared weights), through MONAI's sliding window
    over whole volumes at the search's patch."""
    grid.eval()
    return sliding_window_dice([OnePath(grid, p) for p in paths], data, cfg.patch_size, device, cfg.val_batches)
