"""MONAI's SegResNet (Myronenko 2018, without the VAE branch) as a genotype: the hand-designed baseline a MONAI user
reaches for first, 2D or 3D.

spec = {"init_filters": 16, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]}
Level ``l`` of the encoder has ``init_filters * 2**l`` channels and ``blocks_down[l]`` residual blocks; the decoder
upsamples, adds the encoder's output of the same level and runs ``blocks_up`` blocks (group norm, 8 groups).
"""

from __future__ import annotations

import torch
from monai.networks.nets import SegResNet

from nas_ops.genotype import Genotype, SpecError, check_known_keys, check_positive_ints
from nas_ops.registry import register_method

DEFAULT_SPEC = {"init_filters": 16, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]}


class SegResNetNet(SegResNet):
    """MONAI's SegResNet with this project's protocol; ``(B, C_in, *S) -> (B, K, *S)``, sizes divisible by
    ``2**(len(blocks_down) - 1)``."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, init_filters: int = 16,
                 blocks_down: tuple[int, ...] = (1, 2, 2, 4), blocks_up: tuple[int, ...] = (1, 1, 1)) -> None:
        super().__init__(spatial_dims=spatial_dims, init_filters=init_filters, in_channels=in_channels,
                         out_channels=out_channels, blocks_down=tuple(blocks_down), blocks_up=tuple(blocks_up),
                         num_groups=min(8, init_filters))
        self.total_stride = 2 ** (len(blocks_down) - 1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C_in, *S) ->`` logits and the decoder's outputs, deepest first (``nas_ops.protocol``)."""
        x, down_x = self.encode(x)
        down_x.reverse()
        features = []
        for i, (up, level) in enumerate(zip(self.up_samples, self.up_layers, strict=True)):
            x = level(up(x) + down_x[i + 1])
            features.append(x)
        return self.conv_final(x), features


def validate(genotype: Genotype) -> None:
    """Check a SegResNet spec: a positive width (a multiple of 8, for its group norm), block counts per level, one
    decoder level fewer than encoder levels."""
    spec = {**DEFAULT_SPEC, **genotype.spec}
    check_known_keys(genotype.spec, DEFAULT_SPEC)
    width = spec["init_filters"]
    if not isinstance(width, int) or isinstance(width, bool) or width < 1 or (width >= 8 and width % 8):
        raise SpecError("init_filters", f"must be a positive integer, a multiple of 8 from 8 on, got {width!r}")
    check_positive_ints(spec["blocks_down"], "blocks_down", min_length=2)
    check_positive_ints(spec["blocks_up"], "blocks_up", length=len(spec["blocks_down"]) - 1)


def build(genotype: Genotype) -> SegResNetNet:
    """The SegResNet of a genotype."""
    spec = {**DEFAULT_SPEC, **genotype.spec}
    return SegResNetNet(genotype.spatial_dims, genotype.in_channels, genotype.out_channels, spec["init_filters"],
                        spec["blocks_down"], spec["blocks_up"])


def segresnet_genotype(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2, **spec) -> Genotype:
    """The SegResNet baseline genotype (defaults: 16 filters, MONAI's block counts)."""
    return Genotype(method="segresnet", spatial_dims=spatial_dims, in_channels=in_channels,
                    out_channels=out_channels, spec={**DEFAULT_SPEC, **spec}, name="segresnet")


register_method("segresnet", validate=validate, build=build)
