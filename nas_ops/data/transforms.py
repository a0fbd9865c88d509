"""MONAI dictionary transforms shared by the 2D and 3D pipelines: loading, normalisation by modality, augmentation.

Keys are ``"image"`` (float, channel first) and ``"label"`` (integer class indices, one channel).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import NibabelReader, PILReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    ScaleIntensityd,
    ScaleIntensityRanged,
)

KEYS = ("image", "label")
# Soft-tissue CT window in Hounsfield units (the abdominal window of MONAI's spleen/BTCV tutorials).
CT_WINDOW = (-175.0, 250.0)
_MRI_NAMES = re.compile(r"^(mri?|t1\w*|t2\w*|flair|adc|dwi|pd\w*|swi|dce|b\d+|zscore)$")
_NO_NORM_NAMES = {"nonorm", "none"}


def normalisation_scheme(channel_name: str) -> str:
    """Scheme for one channel name: ``"ct"`` (window), ``"zscore"`` (MRI), ``"none"`` or ``"scale"`` (the rest)."""
    name = channel_name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    if name == "ct" or name.startswith("ct") or name.endswith("ct"):
        return "ct"
    if _MRI_NAMES.match(name):
        return "zscore"
    if name in _NO_NORM_NAMES:
        return "none"
    return "scale"


def _scheme_transform(scheme: str, keys: KeysCollection, ct_window: tuple[float, float]) -> MapTransform | None:
    """The MONAI transform for one scheme (``None`` for ``"none"``)."""
    if scheme == "ct":
        return ScaleIntensityRanged(keys, a_min=ct_window[0], a_max=ct_window[1], b_min=0.0, b_max=1.0, clip=True)
    if scheme == "zscore":
        return NormalizeIntensityd(keys, nonzero=True, channel_wise=True)
    if scheme == "scale":
        return ScaleIntensityd(keys, minv=0.0, maxv=1.0)
    return None


class ChannelGroupsd(MapTransform):
    """Apply a different transform to each run of channels (mixed modalities, e.g. CT plus PET)."""

    def __init__(self, keys: KeysCollection, groups: Sequence[tuple[slice, MapTransform | None]]) -> None:
        super().__init__(keys)
        self.groups = list(groups)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """``(C, *spatial) -> (C, *spatial)``, channel slices normalised independently."""
        d = dict(data)
        for key in self.key_iterator(d):
            parts = []
            for channels, transform in self.groups:
                part = {key: d[key][channels]}
                parts.append((transform(part) if transform is not None else part)[key])
            d[key] = torch.cat([torch.as_tensor(p, dtype=torch.float32) for p in parts], dim=0)
        return d


def normalisation_for(
    channel_names: Sequence[str], keys: KeysCollection = "image", ct_window: tuple[float, float] = CT_WINDOW
) -> MapTransform:
    """Intensity normalisation by modality: CT -> clip to ``ct_window`` (HU) and scale to 0..1; MRI (T1, T2, ADC,
    FLAIR, MRI, ...) -> z-score over nonzero voxels per channel; microscopy/RGB/other -> min-max to 0..1 over the
    whole image (keeps colour ratios). Mixed modalities are normalised per run of channels.
    """
    schemes = [normalisation_scheme(n) for n in channel_names]
    runs: list[tuple[slice, str]] = []
    for i, scheme in enumerate(schemes):
        if runs and runs[-1][1] == scheme:
            runs[-1] = (slice(runs[-1][0].start, i + 1), scheme)
        else:
            runs.append((slice(i, i + 1), scheme))
    if len(runs) == 1:
        only = _scheme_transform(runs[0][1], keys, ct_window)
        return only if only is not None else EnsureTyped(keys, dtype=torch.float32)
    return ChannelGroupsd(keys, [(s, _scheme_transform(scheme, keys, ct_window)) for s, scheme in runs])


def load_transforms(
    channel_names: Sequence[str],
    keys: Sequence[str] = KEYS,
    ct_window: tuple[float, float] = CT_WINDOW,
    nifti: bool | None = None,
) -> Compose:
    """Read files (NIfTI via nibabel, PNG via PIL in ``(H, W)`` order), put channels first, normalise the image.

    MSD multi-modal NIfTI ``(x, y, z, c)`` and RGB PNG ``(H, W, 3)`` both come out channel first. ``nifti`` names
    the one reader to use when the file type is known (MONAI otherwise tries both and logs the failed try).
    """
    png_reader = PILReader(reverse_indexing=False)
    readers = {True: [NibabelReader()], False: [png_reader], None: [png_reader, NibabelReader()]}[nifti]
    transforms = [LoadImaged(list(keys), reader=readers), EnsureChannelFirstd(list(keys))]
    if "image" in keys:
        transforms.append(normalisation_for(channel_names, ct_window=ct_window))
    return Compose(transforms)


def augmentations(spatial_size: Sequence[int], keys: Sequence[str] = KEYS) -> list[MapTransform]:
    """Random affine (rotation, scaling, shift), flips on every axis, brightness and contrast; 2D or 3D by
    ``len(spatial_size)``. Images interpolate bilinearly, labels by nearest neighbour.
    """
    dims = len(spatial_size)
    angle = np.pi / 12
    image_keys = [k for k in keys if k == "image"]
    return [
        RandAffined(
            list(keys),
            prob=0.5,
            rotate_range=(angle,) if dims == 2 else (angle, angle, angle),
            scale_range=(0.15,) * dims,
            translate_range=tuple(0.08 * s for s in spatial_size),
            mode=["bilinear" if k == "image" else "nearest" for k in keys],
            padding_mode="zeros",
        ),
        *[RandFlipd(list(keys), prob=0.5, spatial_axis=axis) for axis in range(dims)],
        RandScaleIntensityd(image_keys, factors=0.15, prob=0.5),
        RandAdjustContrastd(image_keys, prob=0.3, gamma=(0.75, 1.35)),
    ]


def to_tensors(keys: Sequence[str] = KEYS) -> EnsureTyped:
    """Plain tensors at the end of a pipeline: image float32, label int64 class indices (no MetaTensor)."""
    dtypes = [torch.float32 if k == "image" else torch.int64 for k in keys]
    return EnsureTyped(list(keys), dtype=dtypes, track_meta=False)
