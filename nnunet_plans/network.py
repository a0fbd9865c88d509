"""The network class nnU-Net v2 instantiates from a plans file: a searched genotype plus deep-supervision heads.

A plans configuration names it and carries the genotype inline (see :mod:`nnunet_plans.export`)::

    "architecture": {"network_class_name": "nnunet_plans.network.SearchedNetwork",
                     "arch_kwargs": {"genotype": {...genotype JSON...}, "strides": [[1, 1, 1], [2, 2, 2], ...],
                                     "genotype_source": "unet_small.json"},
                     "_kw_requires_import": []}

nnU-Net calls ``SearchedNetwork(input_channels=..., num_classes=..., deep_supervision=..., **arch_kwargs)``.

Deep supervision as nnU-Net expects it: with ``decoder.deep_supervision`` on, ``forward`` returns
``len(strides) - 1`` logit maps, highest resolution first; output ``i`` has the size
``patch_size / prod(strides[:i+1])`` (the targets nnU-Net's loss builds from ``strides``). Output 0 is the searched
network's own logits; every other output is a 1x1 conv head on a decoder feature map of the network, average-pooled
when no feature has exactly that resolution (the nearest finer one is pooled; for a network without multi-scale
decoder outputs, its full-resolution final features). The heads exist whether deep supervision is on or off, so a
checkpoint loads strictly in both modes.

The bridge reads a network only through the public protocol (:class:`nas_ops.protocol.SegmentationNetwork`):
``forward_with_features(x) -> (logits, decoder features deepest first)`` and ``total_stride``. A new method plugs
in by giving its network those two; nothing here changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from nas_ops.blocks import avg_pool, conv_type
from nas_ops.errors import GenotypeError
from nas_ops.genotype import Genotype
from nas_ops.protocol import check_protocol
from nas_ops.registry import build_network

ARCH_SOURCE = "nnU-Net plans: architecture.arch_kwargs.genotype"


def check_strides(strides: Any, spatial_dims: int, source: str | None = None) -> list[list[int]]:
    """``strides`` as nnU-Net's per-stage lists: >= 2 stages, ``spatial_dims`` positive ints each, first all 1."""
    field = "architecture.arch_kwargs.strides"
    if not isinstance(strides, (list, tuple)) or len(strides) < 2:
        raise GenotypeError(source, field, f"expected a list of at least 2 per-stage strides, got {strides!r:.60}")
    out = []
    for i, stage in enumerate(strides):
        if isinstance(stage, int) and not isinstance(stage, bool):
            stage = [stage] * spatial_dims
        if (not isinstance(stage, (list, tuple)) or len(stage) != spatial_dims
                or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in stage)):
            problem = f"stage {i}: expected {spatial_dims} positive integers (the genotype is {spatial_dims}D), " \
                      f"got {stage!r}"
            raise GenotypeError(source, f"{field}[{i}]", problem)
        out.append(list(stage))
    if any(s != 1 for s in out[0]):
        raise GenotypeError(source, f"{field}[0]", f"the first stage must not downsample (all 1), got {out[0]}")
    return out


def supervision_factors(strides: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Per deep-supervision output, the downsampling factor per axis: ``prod(strides[:i+1])``, i < len - 1."""
    factors, acc = [], [1] * len(strides[0])
    for stage in strides[:-1]:
        acc = [a * s for a, s in zip(acc, stage, strict=True)]
        factors.append(tuple(acc))
    return factors


class SupervisionHead(nn.Module):
    """Average-pool a decoder feature by ``pool`` per axis, then a 1x1 conv to the classes.

    ``(B, C, *S) -> (B, K, *S / pool)``; ``feature`` is the index of the decoder feature it reads.
    """

    def __init__(self, spatial_dims: int, feature: int, channels: int, num_classes: int, pool: Sequence[int]) -> None:
        super().__init__()
        self.feature = feature
        self.pool_size = tuple(pool)
        self.pool = avg_pool(spatial_dims, self.pool_size) if any(p > 1 for p in self.pool_size) else nn.Identity()
        self.conv = conv_type(spatial_dims)(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decoder features (deepest first) -> ``(B, K, *S_feature / pool)`` logits."""
        return self.conv(self.pool(features[self.feature]))


class SupervisionDecoder(nn.Module):
    """The switch nnU-Net flips (``deep_supervision``) and the supervision heads, one per lower-resolution output."""

    def __init__(self, heads: Sequence[SupervisionHead], deep_supervision: bool) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        self.heads = nn.ModuleList(heads)


class SearchedNetwork(nn.Module):
    """A searched network inside nnU-Net; ``(B, C_in, *P) -> (B, K, *P)`` logits, or with deep supervision a list
    ``[(B, K, *P), (B, K, *P / f_1), ...]`` of ``len(strides) - 1`` maps, ``f_i = prod(strides[:i+1])``.

    Every size of ``P`` must be divisible by ``lcm(total_stride, prod(strides))`` (the exporter makes it so).

    Args:
        input_channels: image channels (nnU-Net: from dataset.json); must equal the genotype's ``in_channels``.
        num_classes: segmentation outputs (nnU-Net's label manager); must equal the genotype's ``out_channels``.
        genotype: the genotype JSON document (validated by :meth:`nas_ops.genotype.Genotype.from_dict`).
        strides: nnU-Net's per-stage strides; they fix the number and sizes of the supervision outputs.
        deep_supervision: start with deep supervision on (nnU-Net switches it via ``decoder.deep_supervision``).
        genotype_source: where the genotype came from, named in error messages (the exporter writes the path).
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        genotype: dict[str, Any],
        strides: Sequence[Sequence[int]],
        deep_supervision: bool = True,
        genotype_source: str | None = None,
    ) -> None:
        super().__init__()
        source = genotype_source or ARCH_SOURCE
        geno = Genotype.from_dict(genotype, source=source)
        if geno.in_channels != input_channels:
            problem = f"the genotype takes {geno.in_channels} input channels, nnU-Net passes {input_channels} " \
                      "(the dataset's channel_names)"
            raise GenotypeError(source, "in_channels", problem)
        if geno.out_channels != num_classes:
            problem = f"the genotype has {geno.out_channels} output channels, nnU-Net needs {num_classes} " \
                      "(the dataset's labels, background included)"
            raise GenotypeError(source, "out_channels", problem)
        self.strides = check_strides(strides, geno.spatial_dims, source)
        self.genotype = geno
        self.spatial_dims = geno.spatial_dims
        self.network = check_protocol(build_network(geno), geno.method, source)
        self.total_stride = self.network.total_stride
        self.divisor = tuple(math.lcm(self.total_stride, math.prod(axis)) for axis in zip(*self.strides, strict=True))
        self.feature_shapes = self._probe_features(input_channels)
        heads = [self._head(i, f, num_classes) for i, f in enumerate(supervision_factors(self.strides)) if i > 0]
        self.decoder = SupervisionDecoder(heads, deep_supervision)

    def _probe_features(self, input_channels: int) -> list[tuple[int, tuple[int, ...]]]:
        """Dry run at the smallest valid size: ``(channels, factor per axis)`` of every decoder feature."""
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(1, input_channels, *self.divisor, generator=generator)
        try:
            logits, feats = dry_run(self.network, x, _with_features)
        except ValueError:  # e.g. InstanceNorm refuses a 1-voxel bottleneck: probe at twice the size
            x = torch.randn(1, input_channels, *(2 * d for d in self.divisor), generator=generator)
            logits, feats = dry_run(self.network, x, _with_features)
        size = tuple(x.shape[2:])
        expected = dry_run(self.network, x)
        if tuple(logits.shape) != tuple(expected.shape) or not torch.allclose(logits, expected, rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"forward_with_features of method '{self.genotype.method}' does not give the logits of "
                               "its forward")
        if tuple(logits.shape[2:]) != size:
            raise GenotypeError(ARCH_SOURCE, "strides", f"the network maps an input of {size} to logits of "
                                f"{tuple(logits.shape[2:])}: not a full-resolution segmentation network")
        shapes = []
        for j, f in enumerate(feats):
            fsize = tuple(f.shape[2:])
            if any(d % s for d, s in zip(size, fsize, strict=True)):
                raise RuntimeError(f"decoder feature {j} has size {fsize} for an input of {size}: "
                                   "not an integer downsampling")
            shapes.append((int(f.shape[1]), tuple(d // s for d, s in zip(size, fsize, strict=True))))
        return shapes

    def _head(self, output: int, factor: tuple[int, ...], num_classes: int) -> SupervisionHead:
        """Head of one supervision output: the nearest decoder feature at or finer than ``factor``."""
        best = None
        for j, (_, f) in enumerate(self.feature_shapes):
            if all(t % s == 0 for t, s in zip(factor, f, strict=True)):
                if best is None or math.prod(f) >= math.prod(self.feature_shapes[best][1]):
                    best = j
        if best is None:
            raise GenotypeError(ARCH_SOURCE, "strides", f"no decoder feature of method '{self.genotype.method}' "
                                f"can be pooled to deep-supervision output {output} (factor {factor})")
        channels, f = self.feature_shapes[best]
        pool = tuple(t // s for t, s in zip(factor, f, strict=True))
        return SupervisionHead(self.spatial_dims, best, channels, num_classes, pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """``(B, C_in, *P) -> (B, K, *P)``; with deep supervision a list, highest resolution first."""
        if not self.decoder.deep_supervision:
            return self.network(x)
        logits, feats = self.network.forward_with_features(x)
        return [logits, *(head(feats) for head in self.decoder.heads)]

    def describe(self) -> str:
        """One readable line per output: which feature and pooling feeds it."""
        lines = [f"{self.genotype.name or self.genotype.method} ({self.genotype.method}, {self.spatial_dims}D), "
                 f"total stride {self.total_stride}, strides {self.strides}",
                 "output 0: the network's logits (factor 1)"]
        factors = supervision_factors(self.strides)
        for i, head in enumerate(self.decoder.heads, start=1):
            channels, f = self.feature_shapes[head.feature]
            lines.append(f"output {i} (factor {factors[i]}): 1x1 head on decoder feature {head.feature} "
                         f"({channels} ch, factor {f}), avg-pooled by {head.pool_size}")
        return "\n".join(lines)


def _with_features(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return net.forward_with_features(x)


def dry_run(net: nn.Module, x: torch.Tensor, fn: Callable[[nn.Module, torch.Tensor], Any] | None = None) -> Any:
    """``fn(net, x)`` (default ``net(x)``) in eval mode without gradients; the training flag is restored."""
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            return net(x) if fn is None else fn(net, x)
    finally:
        net.train(was_training)
