"""How a dataset becomes network inputs: the one place that holds the data geometry of a training or a search."""

from __future__ import annotations

from dataclasses import dataclass

from nas_ops.config import ConfigBlock, Fraction, PositiveInt, Size2D, Size3D, SliceAxis


@dataclass(frozen=True)
class DataGeometry(ConfigBlock):
    """2D networks train on images or slices resized to ``spatial_size`` (volumes sliced along ``slice_axis``,
    keeping every slice with foreground and ``keep_empty_fraction`` of the others); 3D networks on patches of
    ``patch_size``, ``samples_per_volume`` per volume and epoch. Each workflow reads the fields of its
    dimensionality; a bundle's ``train.json`` shows every value as a top-level key (``--spatial_size``)."""

    spatial_size: Size2D = (256, 256)
    slice_axis: SliceAxis = 2
    keep_empty_fraction: Fraction = 0.25
    patch_size: Size3D = (64, 64, 64)
    samples_per_volume: PositiveInt = 2

    def input_size(self, spatial_dims: int) -> list[int]:
        """The spatial size one forward of a network of ``spatial_dims`` takes."""
        return list(self.spatial_size if spatial_dims == 2 else self.patch_size)

    def samples_per_item(self, spatial_dims: int) -> int:
        """Network inputs per item of a training batch (3D: the patches cut from one volume)."""
        return self.samples_per_volume if spatial_dims == 3 else 1
