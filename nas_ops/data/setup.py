"""One fold of a dataset, ready for a genotype: validated, split by patient, turned into datasets.

Every workflow (training, search, inference) starts here, so every one of them refuses bad input
the same way, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from monai.data import Dataset

from nas_ops.data.loaders import make_2d_datasets, make_3d_datasets
from nas_ops.data.msd import MSDDataset, load_msd_dataset, validate_dataset
from nas_ops.data.splits import fold_items
from nas_ops.errors import DatasetError, GenotypeError
from nas_ops.genotype import Genotype


@dataclass
class FoldData:
    """A dataset's fold: the parsed dataset, its train/validation items and MONAI datasets."""

    dataset: MSDDataset
    train_items: list[dict[str, str]]
    val_items: list[dict[str, str]]
    train: Dataset
    val: Dataset


def check_compatible(genotype: Genotype, ds: MSDDataset, genotype_source: str | Path | None = None) -> None:
    """Refuse a genotype whose channels or dimensionality do not fit the dataset."""
    if genotype.in_channels != ds.in_channels:
        raise GenotypeError(
            genotype_source, "in_channels",
            f"is {genotype.in_channels} but {ds.json_path} has {ds.in_channels} image channel(s) {ds.channel_names}",
        )
    if genotype.out_channels != ds.num_classes:
        raise GenotypeError(
            genotype_source, "out_channels",
            f"is {genotype.out_channels} but {ds.json_path} has {ds.num_classes} classes (with background)",
        )
    if genotype.spatial_dims == 3 and not ds.is_3d:
        raise GenotypeError(genotype_source, "spatial_dims", f"is 3 but {ds.json_path} holds 2D images")


def load_checked_dataset(dataset_dir: str | Path, deep: bool = True) -> MSDDataset:
    """Parse and validate an MSD dataset (``deep`` opens every file)."""
    if not Path(dataset_dir).is_dir():
        raise DatasetError(dataset_dir, "dataset_dir", "no such folder")
    ds = load_msd_dataset(dataset_dir)
    validate_dataset(ds, deep=deep)
    return ds


def prepare_fold(
    dataset_dir: str | Path,
    spatial_dims: int,
    fold: int = 0,
    n_folds: int = 5,
    seed: int = 0,
    spatial_size: Sequence[int] = (128, 128),
    slice_axis: int = 2,
    patch_size: Sequence[int] = (64, 64, 64),
    samples_per_volume: int = 2,
    keep_empty_fraction: float = 0.25,
    augment: bool = True,
    genotype: Genotype | None = None,
    genotype_source: str | Path | None = None,
) -> FoldData:
    """Validate, split and build the datasets of one fold: 2D slices/images or 3D patches."""
    ds = load_checked_dataset(dataset_dir)
    if genotype is not None:
        check_compatible(genotype, ds, genotype_source)
    train_items, val_items = fold_items(ds, fold, n_folds, seed)
    if spatial_dims == 2:
        train, val = make_2d_datasets(ds, train_items, val_items, spatial_size, slice_axis, augment=augment,
                                      keep_empty_fraction=keep_empty_fraction, seed=seed)
    else:
        train, val = make_3d_datasets(ds, train_items, val_items, patch_size, samples_per_volume, augment, seed=seed)
    return FoldData(ds, train_items, val_items, train, val)
