"""The plain U-Net genotype: the baseline every searched network is compared with.

spec = {"features": [32, 64, 128, 256, 512], "convs_per_level": 2, "kernel_size": 3, "norm": "batch"}
Each level runs ``convs_per_level`` ConvUnits; max pooling goes down, a 2x2 transposed conv goes up,
the skip is concatenated, and a 1x1 conv gives the class logits (Ronneberger et al. 2015, with BN).
"""

from __future__ import annotations

import torch
from torch import nn

from nas_ops.blocks import NORMS, ConvUnit, conv_type, max_pool
from nas_ops.genotype import Genotype, SpecError, check_choice, check_known_keys, check_positive_ints
from nas_ops.registry import register_method

DEFAULT_SPEC = {"features": [32, 64, 128, 256, 512], "convs_per_level": 2, "kernel_size": 3, "norm": "batch"}


class UNet(nn.Module):
    """Plain U-Net; ``(B, C_in, *S) -> (B, K, *S)`` with every size in S divisible by ``2**(len(features)-1)``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: list[int],
        convs_per_level: int = 2,
        kernel_size: int = 3,
        norm: str = "batch",
    ) -> None:
        super().__init__()

        def stack(c_in: int, c_out: int) -> nn.Sequential:
            units = [ConvUnit(spatial_dims, c_in if i == 0 else c_out, c_out, kernel_size, norm=norm)
                     for i in range(convs_per_level)]
            return nn.Sequential(*units)

        self.total_stride = 2 ** (len(features) - 1)
        self.encoder = nn.ModuleList()
        c_in = in_channels
        for f in features:
            self.encoder.append(stack(c_in, f))
            c_in = f
        self.pool = max_pool(spatial_dims)
        up = conv_type(spatial_dims, transposed=True)
        self.up = nn.ModuleList(up(features[i + 1], features[i], 2, stride=2) for i in range(len(features) - 1))
        self.decoder = nn.ModuleList(stack(2 * features[i], features[i]) for i in range(len(features) - 1))
        self.head = conv_type(spatial_dims)(features[0], out_channels, 1)

    def decoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder outputs, deepest first then up to full resolution (for deep supervision)."""
        skips = []
        for i, level in enumerate(self.encoder):
            x = level(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        outs = []
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](torch.cat([skips[i], self.up[i](x)], dim=1))
            outs.append(x)
        return outs

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C_in, *S) ->`` logits ``(B, K, *S)`` and the decoder outputs, deepest first (``nas_ops.protocol``)."""
        feats = self.decoder_features(x)
        return self.head(feats[-1]), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *S) -> (B, K, *S)`` logits."""
        return self.head(self.decoder_features(x)[-1])


def validate(genotype: Genotype) -> None:
    """Check a U-Net spec: a list of >= 2 positive widths, odd kernel, known norm."""
    spec = genotype.spec
    check_known_keys(spec, DEFAULT_SPEC)
    check_positive_ints(spec.get("features"), "features", min_length=2)
    cpl = spec.get("convs_per_level", 2)
    if not isinstance(cpl, int) or isinstance(cpl, bool) or cpl < 1:
        raise SpecError("convs_per_level", f"must be a positive integer, got {cpl!r}")
    k = spec.get("kernel_size", 3)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise SpecError("kernel_size", f"must be a positive odd integer, got {k!r}")
    check_choice(spec.get("norm", "batch"), "norm", NORMS)


def build(genotype: Genotype) -> UNet:
    """The U-Net of a genotype."""
    spec = {**DEFAULT_SPEC, **genotype.spec}
    return UNet(genotype.spatial_dims, genotype.in_channels, genotype.out_channels, **spec)


def unet_genotype(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, **spec) -> Genotype:
    """The baseline genotype (defaults: widths 32..512, two convs per level, BN)."""
    return Genotype(method="unet", spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                    spec={**DEFAULT_SPEC, **spec}, name="unet")


register_method("unet", validate=validate, build=build)
