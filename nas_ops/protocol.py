"""The public protocol of a segmentation network built from a genotype: what training, the cost model, the
nnU-Net bridge and export read, and all they may read.

A network of any method (a class of its own, 2D or 3D) has:

- ``forward(x)``: ``(B, C_in, *S) -> (B, K, *S)`` logits, every size of ``S`` divisible by ``total_stride``;
- ``forward_with_features(x)``: ``(logits, features)``, the same logits and a list of decoder feature maps,
  deepest (coarsest) first, each ``(B, C_i, *S / f_i)`` with an integer factor ``f_i`` per axis; nnU-Net's deep
  supervision heads sit on them (a network without a multi-scale decoder returns its final features);
- ``total_stride``: an int, what every input size must be divisible by.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from nas_ops.errors import GenotypeError


@runtime_checkable
class SegmentationNetwork(Protocol):
    """A network built from a genotype (see the module docstring)."""

    total_stride: int

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]: ...


def check_protocol(net: object, method: str, source: str | None = None) -> SegmentationNetwork:
    """``net`` if it follows :class:`SegmentationNetwork`; else a GenotypeError naming what is missing."""
    missing = [name for name in ("forward", "forward_with_features") if not callable(getattr(net, name, None))]
    stride = getattr(net, "total_stride", None)
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        missing.append("total_stride (a positive int)")
    if missing:
        raise GenotypeError(source, "method", f"the network of method '{method}' ({type(net).__name__}) lacks "
                            f"{', '.join(missing)}: see nas_ops.protocol.SegmentationNetwork")
    return net  # type: ignore[return-value]
