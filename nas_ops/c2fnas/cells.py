"""C2FNAS's building blocks: the stem, the three ops of the fine stage, a cell and the head (3D).

- Op (ReLU -> conv -> InstanceNorm): ``"3d"`` a 3x3x3 conv and ``"p3d"`` a 3x3x1 then a 1x1x3 conv are MONAI's DiNTS
  blocks (``ActiConvNormBlock``, ``P3DActiConvNormBlock`` mode 0); ``"2d"`` is a 3x3x1 conv. No conv has a bias
  (the InstanceNorm after it has one): at ``C`` channels the ops have ``9 C^2``, ``27 C^2`` and ``12 C^2``
  weights, plus ``2 C`` of the norm.
- Cell body: 1x1x1 conv -> op -> 1x1x1 conv, at the level's width.
- A cell's input, by how it reaches its level: ``same`` as it is; ``down`` ReLU -> 3x3x3 stride-2 conv ->
  InstanceNorm (widening); ``up`` trilinear x2 -> ReLU -> 1x1x1 conv -> InstanceNorm (narrowing), plus the skip
  (the most recent earlier output at that level, added: sum keeps the body's width whatever the move [ours]).
- Stem: 3x3x3 conv -> IN -> ReLU at full size, 3x3x3 stride-2 conv -> IN.
- Head: concat of the last cell's output and the one before it at 1/2 (the last two cells of the paper's network;
  for a path whose cell before the last is deeper, the latest earlier output at 1/2, or the stem's [ours]) ->
  3x3x3 conv (IN, ReLU) -> trilinear x2 -> 3x3x3 conv to the stem's width (IN, ReLU) -> 1x1x1 conv to the classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks.dints_block import ActiConvNormBlock, P3DActiConvNormBlock
from monai.networks.layers.factories import Conv, Norm
from torch import nn

NORM = ("INSTANCE", {"affine": True})


def conv3d(c_in: int, c_out: int, kernel: int | tuple[int, int, int], stride: int = 1, bias: bool = False) -> nn.Conv3d:
    """A 3D conv with 'same' padding (MONAI's layer factory)."""
    kernel = (kernel,) * 3 if isinstance(kernel, int) else kernel
    return Conv[Conv.CONV, 3](c_in, c_out, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=bias)


def instance_norm(channels: int) -> nn.Module:
    return Norm[Norm.INSTANCE, 3](channels, affine=True)


class Op2D(nn.Module):
    """ReLU -> 3x3x1 conv -> InstanceNorm: the in-plane op."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), conv3d(channels, channels, (3, 3, 1)), instance_norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def make_op(name: str, channels: int) -> nn.Module:
    """One op of the fine stage at ``channels``."""
    if name == "3d":
        return ActiConvNormBlock(channels, channels, 3, padding=1, spatial_dims=3, norm_name=NORM)
    if name == "p3d":
        return P3DActiConvNormBlock(channels, channels, 3, padding=1, mode=0, norm_name=NORM)
    if name == "2d":
        return Op2D(channels)
    raise ValueError(f"unknown op {name!r}")


class CellBody(nn.Module):
    """1x1x1 conv -> op -> 1x1x1 conv; a supernet's body holds several ops and runs the one it is given."""

    def __init__(self, channels: int, ops: tuple[str, ...]) -> None:
        super().__init__()
        self.inp = conv3d(channels, channels, 1)
        self.ops = nn.ModuleDict({name: make_op(name, channels) for name in ops})
        self.out = conv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor, op: str) -> torch.Tensor:
        return self.out(self.ops[op](self.inp(x)))


class Down(nn.Module):
    """ReLU -> 3x3x3 stride-2 conv -> InstanceNorm: into the next deeper level."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), conv3d(c_in, c_out, 3, stride=2), instance_norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Up(nn.Module):
    """Trilinear x2 -> ReLU -> 1x1x1 conv -> InstanceNorm: into the next shallower level."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), conv3d(c_in, c_out, 1), instance_norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False))


class Stem(nn.Module):
    """3x3x3 conv -> IN -> ReLU at full size, then a 3x3x3 stride-2 conv -> IN: level 0 at 1/2."""

    def __init__(self, in_channels: int, stem_channels: int, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(conv3d(in_channels, stem_channels, 3), instance_norm(stem_channels), nn.ReLU(),
                                   conv3d(stem_channels, channels, 3, stride=2), instance_norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def conv_in_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv3d(c_in, c_out, 3), instance_norm(c_out), nn.ReLU())


class Head(nn.Module):
    """The last cell's output and an earlier one at 1/2 -> full-size features (``features``) -> class logits."""

    def __init__(self, channels: int, stem_channels: int, out_channels: int) -> None:
        super().__init__()
        self.fuse = conv_in_relu(2 * channels, channels)
        self.refine = conv_in_relu(channels, stem_channels)
        self.classify = conv3d(stem_channels, out_channels, 1, bias=True)

    def features(self, last: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        x = self.fuse(torch.cat([last, before], dim=1))
        return self.refine(F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False))

    def forward(self, last: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(last, before))
