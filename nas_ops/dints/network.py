"""The network DiNTS finds, built from a genotype (:mod:`nas_ops.dints.space`): MONAI's ``DiNTS`` over a
``TopologyInstance`` (method ``"dints"``).

:class:`DiNTSNet` is MONAI's ``DiNTS`` without what the decoded network never runs (the input stems of inactive
levels, the output stems below the deepest active level), with this project's protocol (``total_stride``,
``forward_with_features``: the output stems' features, deepest first).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.networks.nets import DiNTS, TopologyInstance

from nas_ops.dints.space import DEFAULT_SPEC, quiet, validate
from nas_ops.genotype import Genotype
from nas_ops.registry import register_method


class DiNTSNet(DiNTS):
    """The decoded DiNTS network of one genotype (``nas_ops.protocol``)."""

    def __init__(self, in_channels: int, out_channels: int, node_a: Any, arch_code_a: Any, arch_code_c: Any,
                 channel_mul: float = 0.5, num_blocks: int = 12, num_depths: int = 4,
                 use_downsample: bool = True) -> None:
        node = np.asarray(node_a, dtype=np.int64)
        space = quiet(TopologyInstance, arch_code=[np.asarray(arch_code_a, dtype=np.float32),
                                                   np.asarray(arch_code_c, dtype=np.int64)],
                      channel_mul=channel_mul, num_blocks=num_blocks, num_depths=num_depths, spatial_dims=3,
                      use_downsample=use_downsample, device="cpu")
        super().__init__(dints_space=space, in_channels=in_channels, num_classes=out_channels, spatial_dims=3,
                         use_downsample=use_downsample, node_a=torch.from_numpy(node))
        self.total_stride = 2 ** (num_depths - 1 + int(use_downsample))
        self.active_inputs = [bool(node[0][d]) for d in range(num_depths)]
        self.deepest_output = max(d for d in range(num_depths) if node[num_blocks][d])
        for d in range(num_depths):  # modules the decoded network never runs
            if not self.active_inputs[d]:
                del self.stem_down[str(d)]
            if d > self.deepest_output:
                del self.stem_up[str(d)]

    def _check(self, x: torch.Tensor) -> None:
        if any(s % self.total_stride for s in x.shape[2:]):
            raise ValueError(f"input size {tuple(x.shape[2:])} is not divisible by {self.total_stride} (the stem's "
                             f"2 times 2 ** the deepest of {self.num_depths} levels)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, D, H, W) -> (B, K, D, H, W)`` logits."""
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the output stems' features, deepest first (MONAI's ``DiNTS.forward``, keeping them)."""
        self._check(x)
        inputs = []
        for d in range(self.num_depths):
            if self.active_inputs[d]:
                inputs.append(self.stem_down[str(d)](x))
            else:  # what MONAI feeds an inactive level: zeros of its shape
                size = [s // 2 ** (d + int(self.dints_space.use_downsample)) for s in x.shape[2:]]
                inputs.append(x.new_zeros(x.shape[0], self.filter_nums[d + int(self.dints_space.use_downsample)],
                                          *size))
        outputs = self.dints_space(inputs)
        features: list[torch.Tensor] = []
        temp = self.stem_up[str(self.deepest_output)](outputs[self.deepest_output])
        features.append(temp)
        for d in range(self.deepest_output - 1, -1, -1):
            temp = self.stem_up[str(d)](outputs[d] + temp)
            features.append(temp)
        return self.stem_finals(temp), features


def build(genotype: Genotype) -> DiNTSNet:
    """The network of a DiNTS genotype."""
    spec = {**DEFAULT_SPEC, **genotype.spec}
    return DiNTSNet(genotype.in_channels, genotype.out_channels, spec["node_a"], spec["arch_code_a"],
                    spec["arch_code_c"], spec["channel_mul"], spec["num_blocks"], spec["num_depths"],
                    spec["use_downsample"])


register_method("dints", validate=validate, build=build)
