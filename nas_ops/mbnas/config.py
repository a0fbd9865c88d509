"""The ``search`` block of MB-NAS (``bundles/mbnas/configs/search.json``): every knob of a Local Search, checked by
its types (:mod:`nas_ops.config`, naming ``search#<key>``). Defaults follow the paper (Ottelander et al. 2021)
except ``keep_empty_fraction`` 0.25 (the paper trains on all slices); the
bundle's block shows the same values (a test holds them together)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from nas_ops.config import ConfigBlock, Fraction, PositiveFloat, PositiveInt, Rule, Size2D, SliceAxis
from nas_ops.engine.execution import locate
from nas_ops.errors import InputError
from nas_ops.mbnas.blocks import BLOCKS
from nas_ops.mbnas.space import KERNEL_SIZES


@dataclass(frozen=True)
class MBNASConfig(ConfigBlock):
    """Every knob of an MB-NAS search: the ``search`` block of ``configs/search.json`` (defaults: see the module)."""

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
    # a move is accepted only when it beats the current score by more than this (0: strictly better, the paper's
    # rule); a demo budget's scores are noisy (docs/mbnas_estimator.md), so its overlay sets a margin above the noise
    accept_margin: Annotated[float, Rule(min=0.0, max=1.0)] = 0.0
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
