"""Inferers for 2D networks, as MONAI ``Inferer`` components a config names: what a bundle's ``inferer`` is when
its network takes whole resized 2D images (3D networks use MONAI's ``SlidingWindowInferer`` as it is)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SlidingWindowInferer


class SliceResizeInferer(Inferer):
    """A 2D network on 2D images, or on every slice of volumes along ``slice_axis``, at the size it was trained at.

    Each image or slice is resized (bilinear) to ``spatial_size``, the network runs on ``batch_size`` of them at a
    time, and the logits are resized back: ``(B, C, H, W) -> (B, K, H, W)``, ``(B, C, X, Y, Z) -> (B, K, X, Y, Z)``.
    (MONAI's ``SliceInferer`` runs sliding windows over slices at their own resolution; networks trained on resized
    slices need them resized.)
    """

    def __init__(self, spatial_size: Sequence[int], slice_axis: int = 2, batch_size: int = 8) -> None:
        super().__init__()
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.slice_axis = int(slice_axis)
        self.batch_size = int(batch_size)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        if inputs.dim() == 4:
            return torch.cat([self._resized(network, chunk) for chunk in inputs.split(self.batch_size)])
        if inputs.dim() != 5:
            raise ValueError(f"expected (B, C, H, W) images or (B, C, X, Y, Z) volumes, got {tuple(inputs.shape)}")
        axis = 2 + self.slice_axis
        out = []
        for volume in inputs:  # (C, X, Y, Z): slices become the batch
            slices = volume.movedim(axis - 1, 0)  # (N, C, H, W)
            logits = torch.cat([self._resized(network, chunk) for chunk in slices.split(self.batch_size)])
            out.append(logits.movedim(0, axis - 1))  # (K, X, Y, Z)
        return torch.stack(out)

    def _resized(self, network: Any, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        y = network(F.interpolate(x, size=self.spatial_size, mode="bilinear", align_corners=False))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def default_inferer(spatial_dims: int, spatial_size: Sequence[int], slice_axis: int, patch_size: Sequence[int],
                    validation: bool = False) -> Inferer | None:
    """The inferer of a network's geometry: for 3D networks MONAI's ``SlidingWindowInferer`` over whole volumes
    (windows of ``patch_size``, 2 at a time, overlap 0.25); for 2D networks the network itself on validation
    samples already resized (None) or :class:`SliceResizeInferer` on whole images and volumes."""
    if spatial_dims == 3:
        return SlidingWindowInferer(roi_size=list(patch_size), sw_batch_size=2, overlap=0.25)
    return None if validation else SliceResizeInferer(spatial_size, slice_axis)
