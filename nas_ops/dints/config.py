"""The ``search`` block of DiNTS (``bundles/c2fnas/configs/dints.json``, the overlay that turns the C2FNAS bundle's
search into DiNTS): every knob, checked by its types (:mod:`nas_ops.config`, naming ``search#<key>``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from nas_ops.config import ConfigBlock, Fraction, NonNegativeInt, PositiveFloat, PositiveInt, Rule, Size3D
from nas_ops.errors import InputError


@dataclass(frozen=True)
class DiNTSConfig(ConfigBlock):
    """Every knob of the DiNTS search: the ``search`` block of the C2FNAS bundle's ``configs/dints.json`` overlay.

    Defaults: MONAI's DiNTS bundle's space (12 blocks x 4 levels, channel_mul 0.5) and optimisers; the budget is
    the C2FNAS search's default supernet epochs (8 groups x 50 + 50), half of them warm-up.
    """

    patch_size: Size3D = (96, 96, 96)
    samples_per_volume: PositiveInt = 2
    batch_size: PositiveInt = 1
    loss: Literal["dice_ce", "dice", "foreground_dice"] = "dice_ce"
    lr: PositiveFloat = 0.025  # weights: SGD, momentum 0.9, polynomial decay
    weight_decay: Annotated[float, Rule(min=0.0)] = 4e-5
    arch_lr: PositiveFloat = 1e-3  # architecture codes: Adam
    channel_mul: Annotated[float, Rule(min=1 / 32, max=8.0)] = 0.5  # level l: 32 * channel_mul * 2**(l+1) channels
    num_blocks: Annotated[int, Rule(min=1, max=64)] = 12
    num_depths: Annotated[int, Rule(min=2, max=6)] = 4
    epochs: PositiveInt = 450
    warmup_epochs: NonNegativeInt = 225
    ram_cost_factor: Fraction = 0.8  # the architecture's expected memory, as a share of the full space's
    train_batches: PositiveInt | None = None
    val_batches: PositiveInt | None = None

    def check(self, source: str | None, prefix: str = "") -> None:
        stride = 2 ** self.num_depths  # the stem's 2 x the levels below the first
        for i, s in enumerate(self.patch_size):
            if s % stride or s < 2 * stride:
                raise InputError(source, f"{prefix}patch_size[{i}]", f"{s} must be a multiple of {stride} and at "
                                 f"least {2 * stride} with num_depths {self.num_depths}")
        if self.warmup_epochs >= self.epochs:
            raise InputError(source, f"{prefix}warmup_epochs", f"{self.warmup_epochs} leaves no epoch of the "
                             f"{self.epochs} to search the architecture: use fewer than epochs")
        if int(32 * self.channel_mul) < 1:
            raise InputError(source, f"{prefix}channel_mul", f"{self.channel_mul} gives no channel at level 0")
