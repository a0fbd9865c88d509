"""The network of an MB-NAS genotype (method ``"mbnas"``): stem, a chain of searched cells, 1x1 head.

A cell resamples its input (max pooling for a downscaling cell, a 2x transposed conv to the halved width for an
upscaling cell, nothing for a non-scaling cell), concatenates the skip source's output in front of it, and runs its
block to the width of its level (``base_channels * 2**level``). With the U-Net genotype
(:meth:`nas_ops.mbnas.space.SearchSpace.unet`) this is exactly the plain U-Net of :mod:`nas_ops.baselines.unet`
with widths ``base * (1, 2, ..., 2**(N/2))``: the same modules, in the same shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nas_ops.blocks import conv_type, max_pool
from nas_ops.genotype import Genotype
from nas_ops.mbnas.blocks import VGGBlock, make_block
from nas_ops.mbnas.space import STEM, Node, canonical, node_levels, parse_spec, validate
from nas_ops.registry import register_method


class Cell(nn.Module):
    """resample -> concat(skip, x) -> block: ``(B, C_in, *S)`` (+ skip ``(B, C_out, *S')``) ``-> (B, C_out, *S')``.

    ``S' = S / 2`` for a downscaling cell, ``2 S`` for an upscaling cell, ``S`` otherwise.
    """

    def __init__(self, spatial_dims: int, node: Node, in_channels: int, out_channels: int, norm: str = "batch") -> None:
        super().__init__()
        if node.channels == "double":
            self.resample: nn.Module = max_pool(spatial_dims)
            width = in_channels
        elif node.channels == "half":
            self.resample = conv_type(spatial_dims, transposed=True)(in_channels, out_channels, 2, stride=2)
            width = out_channels
        else:
            self.resample = nn.Identity()
            width = in_channels
        skip_width = out_channels if node.skip is not None else 0
        self.block = make_block(node.block, spatial_dims, width + skip_width, out_channels, node.kernel, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C_in, *S)``, optional ``(B, C_out, *S')`` -> ``(B, C_out, *S')``."""
        x = self.resample(x)
        if skip is not None:
            x = torch.cat([skip, x], dim=1)
        return self.block(x)


class MBNASNet(nn.Module):
    """Stem (VGG 3x3 to ``base_channels``), the searched cells, 1x1 head: ``(B, C_in, *S) -> (B, K, *S)``.

    Every size in ``S`` must be divisible by ``total_stride = 2**(deepest level)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, nodes: Sequence[Node],
                 base_channels: int = 32, norm: str = "batch") -> None:
        super().__init__()
        nodes = canonical(nodes)
        levels = node_levels(nodes)
        self.skips = [n.skip for n in nodes]
        self.kept = {s for s in self.skips if s is not None}  # outputs a later cell reads
        self.total_stride = 2 ** max(0, *levels)
        self.stem = VGGBlock(spatial_dims, in_channels, base_channels, 3, norm)
        self.cells = nn.ModuleList()
        prev = 0
        for node, level in zip(nodes, levels, strict=True):
            self.cells.append(Cell(spatial_dims, node, base_channels * 2**prev, base_channels * 2**level, norm))
            prev = level
        self.head = conv_type(spatial_dims)(base_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *S) -> (B, K, *S)`` logits."""
        return self.head(self._features(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C_in, *S) ->`` logits and ``[the head's input (B, base_channels, *S)]`` (``nas_ops.protocol``): a
        searched topology has no fixed decoder, so deep supervision pools its final features."""
        h = self._features(x)
        return self.head(h), [h]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % self.total_stride for s in x.shape[2:]):
            raise ValueError(f"input size {tuple(x.shape[2:])} is not divisible by {self.total_stride} "
                             "(2 ** the deepest level of this genotype)")
        h = self.stem(x)
        saved = {STEM: h} if STEM in self.kept else {}
        for i, (cell, skip) in enumerate(zip(self.cells, self.skips, strict=True)):
            h = cell(h, saved[skip] if skip is not None else None)
            if i in self.kept:
                saved[i] = h
        return h


def build(genotype: Genotype) -> MBNASNet:
    """The network of an ``mbnas`` genotype."""
    spec = parse_spec(genotype.spec)
    return MBNASNet(genotype.spatial_dims, genotype.in_channels, genotype.out_channels, spec.nodes,
                    spec.base_channels, spec.norm)


register_method("mbnas", validate=validate, build=build)
