"""Training and validation datasets for the 2D and 3D methods, and single-case loading for inference.

Every sample is ``{"image": (C, *spatial) float32, "label": (1, *spatial) int64}`` with label values the class
indices of ``dataset.json``. Use ``monai.data.DataLoader``: 3D training returns a list of patches per volume,
which its collate function flattens into the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from monai.data import CacheDataset, Dataset
from monai.transforms import Compose, RandCropByPosNegLabeld, Resized, SpatialPadd
from tqdm import tqdm

from nas_ops.data.msd import MSDDataset, is_nifti
from nas_ops.data.transforms import CT_WINDOW, KEYS, augmentations, load_transforms, to_tensors
from nas_ops.errors import DatasetError

log = logging.getLogger(__name__)


class Case(NamedTuple):
    """One image ready for inference: the normalised tensor and what is needed to write a prediction back."""

    image: torch.Tensor  # (C, *spatial) float32, normalised
    affine: np.ndarray  # (4, 4) of the input file (identity for PNG)
    shape: tuple[int, ...]  # spatial shape as stored in the file
    meta: dict  # MONAI's metadata of the loaded image (file name, affine): what SaveImage writes back


def _squeeze_2d(arr: torch.Tensor) -> torch.Tensor:
    """``(C, X, Y, 1) -> (C, X, Y)``: a 2D NIfTI stored with a singleton third axis."""
    return arr[..., 0] if arr.ndim == 4 and arr.shape[-1] == 1 else arr


def load_case(
    item_or_path: dict[str, str] | str | Path, ds: MSDDataset, ct_window: tuple[float, float] = CT_WINDOW
) -> Case:
    """Load and normalise one image as the training pipeline does; for 2D-from-3D the caller slices."""
    path = item_or_path["image"] if isinstance(item_or_path, dict) else str(item_or_path)
    loader = load_transforms(ds.channel_names, keys=("image",), ct_window=ct_window, nifti=is_nifti(path))
    image = loader({"image": path})["image"]
    affine = np.asarray(image.affine, dtype=np.float64)
    shape = tuple(int(s) for s in image.shape[1:])
    return Case(image=_squeeze_2d(image.as_tensor()).float(), affine=affine, shape=shape, meta=dict(image.meta))


def _all_nifti(ds: MSDDataset) -> bool | None:
    """True/False when every file of the dataset is NIfTI/not NIfTI, None when they are mixed."""
    kinds = {is_nifti(item[key]) for item in ds.items for key in KEYS}
    return kinds.pop() if len(kinds) == 1 else None


def _load_pair(item: dict[str, str], loader: Compose) -> tuple[np.ndarray, np.ndarray]:
    """``(C, *spatial)`` float32 normalised image and ``(1, *spatial)`` label as numpy arrays."""
    d = loader({"image": item["image"], "label": item["label"]})
    image = _squeeze_2d(d["image"].as_tensor()).numpy().astype(np.float32)
    label = _squeeze_2d(d["label"].as_tensor()).numpy().astype(np.int64)
    return image, label


def slice_items(
    items: Sequence[dict[str, str]],
    loader: Compose,
    slice_axis: int = 2,
    keep_empty_fraction: float = 1.0,
    rng: np.random.Generator | None = None,
) -> list[dict]:
    """Load each case once and cut volumes into 2D slices along spatial axis ``slice_axis``; 2D images pass whole.

    From volumes, every slice with foreground is kept plus ``keep_empty_fraction`` of the empty ones (drawn with
    ``rng``); native 2D images are always kept. Returns in-memory sample dicts with ``patient``/``case``/``slice``.
    """
    if not 0.0 <= keep_empty_fraction <= 1.0:
        raise ValueError(f"keep_empty_fraction must lie in [0, 1], got {keep_empty_fraction}")
    rng = rng if rng is not None else np.random.default_rng(0)
    out: list[dict] = []
    for item in tqdm(items, desc="slicing cases", leave=False, disable=len(items) < 20):
        image, label = _load_pair(item, loader)
        base = {"patient": item["patient"], "case": Path(item["image"]).name}
        if image.ndim == 3:
            out.append({"image": image, "label": label, **base, "slice": 0})
            continue
        axis = 1 + slice_axis
        has_fg = np.moveaxis(label, axis, 0).reshape(label.shape[axis], -1).any(axis=1)
        empty = np.flatnonzero(~has_fg)
        n_keep = int(round(keep_empty_fraction * len(empty)))
        keep = set(np.flatnonzero(has_fg).tolist()) | set(rng.choice(empty, n_keep, replace=False).tolist())
        for k in sorted(keep):
            out.append(
                {"image": np.take(image, k, axis=axis), "label": np.take(label, k, axis=axis), **base, "slice": k}
            )
    return out


def _dataset(data: list, transform: Compose, cache: bool) -> Dataset:
    """A MONAI CacheDataset (deterministic prefix computed once) or a plain Dataset."""
    if cache:
        return CacheDataset(data, transform, num_workers=1, progress=False)
    return Dataset(data, transform)


def _seeded(transform: Compose, seed: int) -> Compose:
    """Seed every random transform of a pipeline so that augmentation repeats for a seed."""
    transform.set_random_state(seed=seed)
    return transform


def train_transform_2d(spatial_size: Sequence[int], augment: bool = True) -> Compose:
    """The default per-sample training pipeline of 2D samples: resize to ``spatial_size``, augment, to tensors."""
    return Compose([_resize(spatial_size), *(augmentations(spatial_size) if augment else []), to_tensors()])


def val_transform_2d(spatial_size: Sequence[int]) -> Compose:
    """The default validation pipeline of 2D samples: resize to ``spatial_size``, to tensors."""
    return Compose([_resize(spatial_size), to_tensors()])


def train_transform_3d(patch_size: Sequence[int], samples_per_volume: int = 2, augment: bool = True) -> Compose:
    """The default training pipeline of loaded volumes: pad, ``samples_per_volume`` patches (half centred on
    foreground), augment, to tensors."""
    crop = [
        SpatialPadd(list(KEYS), patch_size),
        RandCropByPosNegLabeld(list(KEYS), "label", patch_size, pos=1, neg=1, num_samples=samples_per_volume),
    ]
    return Compose([*crop, *(augmentations(patch_size) if augment else []), to_tensors()])


def val_transform_3d() -> Compose:
    """The default validation pipeline of loaded volumes: whole volumes, to tensors (sliding-window inference)."""
    return Compose([to_tensors()])


def _resize(spatial_size: Sequence[int]) -> Resized:
    if len(spatial_size) != 2:
        raise ValueError(f"spatial_size must have 2 entries for 2D datasets, got {tuple(spatial_size)}")
    return Resized(list(KEYS), spatial_size, mode=("bilinear", "nearest-exact"), anti_aliasing=(True, False))


def make_2d_datasets(
    ds: MSDDataset,
    train_items: Sequence[dict[str, str]],
    val_items: Sequence[dict[str, str]],
    spatial_size: Sequence[int] = (128, 128),
    slice_axis: int = 2,
    augment: bool = True,
    cache: bool = True,
    keep_empty_fraction: float = 0.25,
    seed: int = 0,
    ct_window: tuple[float, float] = CT_WINDOW,
    train_transform: Callable | None = None,
    val_transform: Callable | None = None,
) -> tuple[Dataset, Dataset]:
    """Train/validation datasets of 2D samples resized to ``spatial_size``: ``(C, H, W)`` image, ``(1, H, W)`` label.

    Volumes are sliced along ``slice_axis`` (validation keeps all slices; training keeps foreground slices and
    ``keep_empty_fraction`` of the empty ones); PNG and 2D NIfTI images are used whole. The loaded, normalised
    samples then go through ``train_transform``/``val_transform`` (default :func:`train_transform_2d` /
    :func:`val_transform_2d`; augmentation is train only).
    """
    loader = load_transforms(ds.channel_names, ct_window=ct_window, nifti=_all_nifti(ds))
    rng = np.random.default_rng(seed)
    train_data = slice_items(train_items, loader, slice_axis, keep_empty_fraction, rng)
    val_data = slice_items(val_items, loader, slice_axis, 1.0)
    log.info("2D datasets: %d training and %d validation slices", len(train_data), len(val_data))
    train_t = train_transform if train_transform is not None else train_transform_2d(spatial_size, augment)
    val_t = val_transform if val_transform is not None else val_transform_2d(spatial_size)
    return _dataset(train_data, _seeded(_compose(train_t), seed), cache), _dataset(val_data, _compose(val_t), cache)


def make_3d_datasets(
    ds: MSDDataset,
    train_items: Sequence[dict[str, str]],
    val_items: Sequence[dict[str, str]],
    patch_size: Sequence[int] = (64, 64, 64),
    samples_per_volume: int = 2,
    augment: bool = True,
    cache: bool = True,
    seed: int = 0,
    ct_window: tuple[float, float] = CT_WINDOW,
    train_transform: Callable | None = None,
    val_transform: Callable | None = None,
) -> tuple[Dataset, Dataset]:
    """Training patches (``samples_per_volume`` per volume, half centred on foreground) and whole validation volumes.

    Each volume is loaded and normalised by modality, then goes through ``train_transform``/``val_transform``
    (default :func:`train_transform_3d` / :func:`val_transform_3d`). Training items yield a list of
    ``{"image": (C, *patch_size), "label": (1, *patch_size)}``; volumes smaller than the patch are zero-padded.
    Validation items are whole normalised volumes for sliding-window inference.
    """
    if len(patch_size) != 3 or not ds.is_3d:
        raise DatasetError(ds.json_path, "training", f"3D datasets need volumes and a 3D patch, got {patch_size}")
    loader = list(load_transforms(ds.channel_names, ct_window=ct_window, nifti=_all_nifti(ds)).transforms)
    train_t = train_transform if train_transform is not None else train_transform_3d(patch_size, samples_per_volume,
                                                                                        augment)
    val_t = val_transform if val_transform is not None else val_transform_3d()
    train = Compose([*loader, *_compose(train_t).transforms])
    val = Compose([*loader, *_compose(val_t).transforms])
    return _dataset(list(train_items), _seeded(train, seed), cache), _dataset(list(val_items), val, cache)


def _compose(transform: Callable | Sequence[Callable]) -> Compose:
    """A pipeline given as a Compose, one transform or a list of them, as a Compose."""
    if isinstance(transform, Compose):
        return transform
    return Compose(list(transform) if isinstance(transform, (list, tuple)) else [transform])
