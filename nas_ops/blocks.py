"""Dimension-agnostic building blocks shared by every method (2D and 3D from the same code).

Layer types come from MONAI's layer factories (``monai.networks.layers.Conv``, ``Norm``, ``Pool``) by spatial
dimensionality.
"""

from __future__ import annotations

import torch
from monai.networks.layers import Conv, Norm, Pool
from torch import nn

NORMS = ("batch", "instance", "none")


def conv_type(spatial_dims: int, transposed: bool = False) -> type[nn.Module]:
    """``nn.Conv2d``/``nn.Conv3d`` (or the transposed ones) for the spatial dimensionality."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return Conv[Conv.CONVTRANS if transposed else Conv.CONV, spatial_dims]


class _SelfConcatFold:
    """A conv over ``2C`` channels that, given only ``C``, computes ``conv(concat(x, x))`` as one conv over ``x``
    with the two input halves of its weight summed: the same output and gradients for half the MACs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if 2 * c != self.in_channels or self.groups != 1:
            return super().forward(x)
        return self._conv_forward(x, self.weight[:, :c] + self.weight[:, c:], self.bias)


class SelfConcatConv2d(_SelfConcatFold, nn.Conv2d):
    """``nn.Conv2d`` that folds a self-concatenated input (see ``_SelfConcatFold``)."""


class SelfConcatConv3d(_SelfConcatFold, nn.Conv3d):
    """``nn.Conv3d`` that folds a self-concatenated input (see ``_SelfConcatFold``)."""


def self_concat_conv_type(spatial_dims: int) -> type[nn.Module]:
    """The conv class that accepts ``x`` in place of ``concat(x, x)``, for the spatial dimensionality."""
    conv_type(spatial_dims)  # checks spatial_dims
    return SelfConcatConv2d if spatial_dims == 2 else SelfConcatConv3d


def channels_last_on_cpu(x: torch.Tensor) -> torch.Tensor:
    """A 2D batch ``(B, C, H, W)`` on the CPU in channels-last memory layout (oneDNN's convolutions and batch norm
    are faster that way there; measured by ``scripts/bench_bixnas.py layouts``); anything else unchanged."""
    if x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def norm_layer(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation layer by name: batch (affine), instance (affine) or none."""
    if norm == "batch":
        return Norm[Norm.BATCH, spatial_dims](channels)
    if norm == "instance":
        return Norm[Norm.INSTANCE, spatial_dims](channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm '{norm}' (known: {NORMS})")


def max_pool(spatial_dims: int, kernel_size: int = 2) -> nn.Module:
    """Max pooling that halves every spatial size."""
    return Pool[Pool.MAX, spatial_dims](kernel_size)


def avg_pool(spatial_dims: int, kernel_size) -> nn.Module:
    """Average pooling by ``kernel_size`` (an int or one size per axis), stride the same."""
    return Pool[Pool.AVG, spatial_dims](kernel_size, kernel_size)


class ConvUnit(nn.Sequential):
    """conv -> norm -> ReLU; ``(B, C_in, *S) -> (B, C_out, *S / stride)``.

    The conv has no bias when a norm follows (the norm's shift makes it redundant).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm: str = "batch",
    ) -> None:
        conv = conv_type(spatial_dims)(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=norm == "none"
        )
        super().__init__(conv, norm_layer(norm, spatial_dims, out_channels), nn.ReLU(inplace=True))
