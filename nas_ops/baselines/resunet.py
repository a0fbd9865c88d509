"""ResU-Net: a U-Net whose encoder is a ResNet (ResNet-50 by default), MB-NAS's second baseline.

Built with MONAI's ``FlexibleUNet`` (randomly initialised, ``pretrained=False``: no weights are downloaded, and the
network does not need torchvision). With a ResNet-50 encoder and the default decoder (256, 128, 64, 32, 16) it has
32.1 M parameters at 1 input channel and 3 classes (the paper lists 32.5 M).

spec = {"backbone": "resnet50", "decoder_channels": [256, 128, 64, 32, 16], "norm": "batch"}
Input sizes must be divisible by 32 (five stride-2 stages).
"""

from __future__ import annotations

import torch
from monai.networks.nets import FlexibleUNet
from torch import nn

from nas_ops.genotype import Genotype, check_choice, check_known_keys, check_positive_ints
from nas_ops.registry import register_method

BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200")
DEFAULT_SPEC = {"backbone": "resnet50", "decoder_channels": [256, 128, 64, 32, 16], "norm": "batch"}
NORMS = ("batch", "instance")


class ResUNet(nn.Module):
    """FlexibleUNet with a ResNet encoder: ``(B, C_in, *S) -> (B, K, *S)``, ``S`` divisible by 32."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, backbone: str = "resnet50",
                 decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16), norm: str = "batch") -> None:
        super().__init__()
        self.total_stride = 32
        self.net = FlexibleUNet(in_channels, out_channels, backbone=backbone, pretrained=False,
                                decoder_channels=tuple(decoder_channels), spatial_dims=spatial_dims, norm=norm)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C_in, *S) ->`` logits and ``[decoder output (B, 16, *S)]`` (``nas_ops.protocol``)."""
        decoded = self.net.decoder(self.net.encoder(x), self.net.skip_connect)
        return self.net.segmentation_head(decoded), [decoded]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *S) -> (B, K, *S)`` logits."""
        return self.net(x)


def validate(genotype: Genotype) -> None:
    """Check a ResU-Net spec: a ResNet backbone, five positive decoder widths, a known norm."""
    spec = genotype.spec
    check_known_keys(spec, DEFAULT_SPEC)
    check_choice(spec.get("backbone", "resnet50"), "backbone", BACKBONES)
    check_positive_ints(spec.get("decoder_channels", DEFAULT_SPEC["decoder_channels"]), "decoder_channels", length=5)
    check_choice(spec.get("norm", "batch"), "norm", NORMS)


def build(genotype: Genotype) -> ResUNet:
    """The ResU-Net of a genotype."""
    spec = {**DEFAULT_SPEC, **genotype.spec}
    return ResUNet(genotype.spatial_dims, genotype.in_channels, genotype.out_channels, **spec)


def resunet_genotype(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, **spec) -> Genotype:
    """The baseline genotype (ResNet-50 encoder by default)."""
    return Genotype(method="resunet", spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                    spec={**DEFAULT_SPEC, **spec}, name="resunet",
                    provenance={"source": "baseline: U-Net with a ResNet encoder (MONAI FlexibleUNet, no pretraining)"})


register_method("resunet", validate=validate, build=build)
