"""The recipe of a training: how long, in what batches, how often validated; the one place of its defaults."""

from __future__ import annotations

from dataclasses import dataclass

from nas_ops.config import ConfigBlock, PositiveInt


@dataclass(frozen=True)
class Recipe(ConfigBlock):
    """``epochs`` of ``batch_size`` items, validated every ``val_interval`` epochs and after the last one. The loss,
    optimiser, learning-rate schedule and transforms are components of their own (a bundle's ``loss``,
    ``optimizer``, ``lr_scheduler``, ``train#preprocessing``)."""

    epochs: PositiveInt = 100
    batch_size: PositiveInt = 8
    val_interval: PositiveInt = 1
