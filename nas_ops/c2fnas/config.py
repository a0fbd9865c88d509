"""The ``search`` block of C2FNAS (``bundles/c2fnas/configs/search.json``): every knob of both stages, checked by
its types (:mod:`nas_ops.config`, naming ``search#<key>``); the bundle's block shows the same values (a test holds
them together)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from nas_ops.c2fnas.space import NUM_CELLS, TopologyRule, enumerate_topologies
from nas_ops.config import ConfigBlock, PositiveFloat, PositiveInt, Rule, Size3D
from nas_ops.errors import InputError

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
