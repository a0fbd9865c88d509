"""The four MB-NAS block types, dimension-agnostic: VGG, Residual, Dense and Inception.

Every block maps ``(B, C_in, *S) -> (B, C_out, *S)`` (same spatial size) with ``kernel_size`` for its spatial
convolutions; a cell (:mod:`nas_ops.mbnas.network`) puts the resampling and the skip in front of it. All convs are
followed by a norm (so they have no bias) and, except the last one of a residual branch, a ReLU.

- ``vgg``: two conv units, the U-Net block (Ronneberger et al. 2015).
- ``residual``: the ResNet basic block (He et al. 2016): two convs, a 1x1 projection shortcut when the width changes.
- ``dense``: a two-layer DenseNet block (Huang et al. 2017), growth ``C_out / 2``, then a 1x1 transition to ``C_out``.
- ``inception``: four branches in the Inception-v4 style (Szegedy et al. 2017): 1x1; 1x1 -> kxk; 1x1 -> kxk -> kxk;
  average pool -> 1x1; concatenated to ``C_out``.
"""

from __future__ import annotations

import torch
from monai.networks.layers import Pool
from torch import nn

from nas_ops.blocks import ConvUnit, conv_type, norm_layer

BLOCKS = ("vgg", "residual", "dense", "inception")


def _avg_pool(spatial_dims: int) -> nn.Module:
    """3-wide average pooling with stride 1 (keeps the size)."""
    return Pool[Pool.AVG, spatial_dims](3, stride=1, padding=1, count_include_pad=False)


class VGGBlock(nn.Sequential):
    """conv-norm-ReLU twice: ``(B, C_in, *S) -> (B, C_out, *S)``; the same modules (and names) as a U-Net level."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 norm: str = "batch") -> None:
        super().__init__(
            ConvUnit(spatial_dims, in_channels, out_channels, kernel_size, norm=norm),
            ConvUnit(spatial_dims, out_channels, out_channels, kernel_size, norm=norm),
        )


class ResidualBlock(nn.Module):
    """ResNet basic block ``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``: ``(B, C_in, *S) -> (B, C_out, *S)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 norm: str = "batch") -> None:
        super().__init__()
        conv = conv_type(spatial_dims)
        self.unit = ConvUnit(spatial_dims, in_channels, out_channels, kernel_size, norm=norm)
        self.conv = conv(out_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm == "none")
        self.norm = norm_layer(norm, spatial_dims, out_channels)
        if in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(conv(in_channels, out_channels, 1, bias=norm == "none"),
                                          norm_layer(norm, spatial_dims, out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *S) -> (B, C_out, *S)``."""
        return self.relu(self.norm(self.conv(self.unit(x))) + self.shortcut(x))


class DenseBlock(nn.Module):
    """Two densely connected conv units (each sees every earlier feature map), then a 1x1 transition unit.

    ``(B, C_in, *S) -> (B, C_out, *S)``; growth rate ``max(1, C_out // 2)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 norm: str = "batch") -> None:
        super().__init__()
        growth = max(1, out_channels // 2)
        self.layers = nn.ModuleList(
            ConvUnit(spatial_dims, in_channels + i * growth, growth, kernel_size, norm=norm) for i in range(2)
        )
        self.transition = ConvUnit(spatial_dims, in_channels + 2 * growth, out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *S) -> (B, C_out, *S)``."""
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return self.transition(torch.cat(features, dim=1))


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated: 1x1; 1x1 -> kxk; 1x1 -> kxk -> kxk; avg-pool -> 1x1.

    ``(B, C_in, *S) -> (B, C_out, *S)``; the first three branches have ``C_out // 4`` channels each, the pooling
    branch the rest (needs ``C_out >= 4``).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 norm: str = "batch") -> None:
        super().__init__()
        if out_channels < 4:
            raise ValueError(f"an inception block needs at least 4 output channels, got {out_channels}")
        b = out_channels // 4

        def unit(c_in: int, c_out: int, k: int) -> ConvUnit:
            return ConvUnit(spatial_dims, c_in, c_out, k, norm=norm)

        self.branches = nn.ModuleList([
            unit(in_channels, b, 1),
            nn.Sequential(unit(in_channels, b, 1), unit(b, b, kernel_size)),
            nn.Sequential(unit(in_channels, b, 1), unit(b, b, kernel_size), unit(b, b, kernel_size)),
            nn.Sequential(_avg_pool(spatial_dims), unit(in_channels, out_channels - 3 * b, 1)),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *S) -> (B, C_out, *S)``."""
        return torch.cat([branch(x) for branch in self.branches], dim=1)


_BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "vgg": VGGBlock,
    "residual": ResidualBlock,
    "dense": DenseBlock,
    "inception": InceptionBlock,
}


def make_block(kind: str, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
               norm: str = "batch") -> nn.Module:
    """A block by name (one of :data:`BLOCKS`)."""
    if kind not in _BLOCK_TYPES:
        raise ValueError(f"unknown block '{kind}' (known: {list(BLOCKS)})")
    return _BLOCK_TYPES[kind](spatial_dims, in_channels, out_channels, kernel_size, norm)
