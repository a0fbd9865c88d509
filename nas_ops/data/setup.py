"""One fold of a dataset, ready for a genotype: validated, split by patient, turned into datasets.

Every workflow (training, search, inference) starts here, so every one of them refuses bad input
the same way, before anything is written. A dataset is validated once per process and fingerprint
(:mod:`nas_ops.data.fingerprint`): the candidate trainings of a search, and inference after training, trust
a dataset whose fingerprint was validated before (in another process: pass it as ``trusted``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.data import DataLoader, Dataset

from nas_ops.data.fingerprint import dataset_fingerprint
from nas_ops.data.geometry import DataGeometry
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

    @property
    def fingerprint(self) -> str:
        """The dataset's fingerprint (validated)."""
        return self.dataset.fingerprint


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


_VALIDATED: set[tuple[str, bool]] = set()  # (fingerprint, deep) validated in this process


def check_inside(ds: MSDDataset, allow_outside: bool = False) -> None:
    """Refuse the first case path that leaves the dataset's folder, unless the run allows it (the config key
    ``allow_outside_dataset_dir``, false by default: a path such as ``../../etc/x`` or ``/data/other/x`` is then a
    mistake or an attack rather than a case)."""
    if ds.outside and not allow_outside:
        field_name, listed = ds.outside[0]
        raise DatasetError(ds.json_path, field_name, f"path {listed!r} leaves the dataset folder {ds.root}: move the "
                           "case inside it, or set allow_outside_dataset_dir true")


def load_checked_dataset(dataset_dir: str | Path, deep: bool = True, trusted: str | None = None,
                         allow_outside: bool = False) -> MSDDataset:
    """Parse and validate an MSD dataset (``deep`` opens every file); its fingerprint is set on the result.

    Validation runs once per fingerprint in a process; a ``trusted`` fingerprint (validated by the process that
    started this one, under that run's ``allow_outside``) skips it when the dataset still has that fingerprint.
    """
    if not Path(dataset_dir).is_dir():
        raise DatasetError(dataset_dir, "dataset_dir", "no such folder")
    ds = load_msd_dataset(dataset_dir)
    ds.fingerprint = dataset_fingerprint(ds)
    if ds.fingerprint != trusted:
        check_inside(ds, allow_outside)
    done = {(ds.fingerprint, True), (ds.fingerprint, deep)} & _VALIDATED
    if not done and ds.fingerprint != trusted:
        validate_dataset(ds, deep=deep)
        _VALIDATED.add((ds.fingerprint, deep))
    return ds


def dataset_identity(dataset_dir: str | Path) -> dict[str, str]:
    """``{"name", "fingerprint"}`` of a dataset without validating it: what a run's identity records of its data
    (cheap: dataset.json and a ``stat`` per file). A missing folder or file is refused."""
    if not Path(dataset_dir).is_dir():
        raise DatasetError(dataset_dir, "dataset_dir", "no such folder")
    ds = load_msd_dataset(dataset_dir)
    return {"name": ds.name, "fingerprint": dataset_fingerprint(ds)}


def prepare_fold(
    dataset_dir: str | Path,
    spatial_dims: int,
    geometry: DataGeometry,
    fold: int = 0,
    n_folds: int = 5,
    seed: int = 0,
    *,
    augment: bool = True,
    genotype: Genotype | None = None,
    trusted: str | None = None,
    train_transform: Callable | None = None,
    val_transform: Callable | None = None,
    allow_outside: bool = False,
) -> FoldData:
    """Validate, split and build the datasets of one fold: 2D slices/images or 3D patches cut by ``geometry``.

    ``train_transform``/``val_transform`` replace the default per-sample pipelines (a bundle's
    ``train#preprocessing`` and ``validate#preprocessing``); see :mod:`nas_ops.data.loaders`. A ``genotype`` whose
    channels or dimensionality do not fit the dataset is refused.
    """
    ds = load_checked_dataset(dataset_dir, trusted=trusted, allow_outside=allow_outside)
    if genotype is not None:
        check_compatible(genotype, ds, genotype.source)
    train_items, val_items = fold_items(ds, fold, n_folds, seed)
    g = geometry
    if spatial_dims == 2:
        train, val = make_2d_datasets(ds, train_items, val_items, g.spatial_size, g.slice_axis, augment=augment,
                                      keep_empty_fraction=g.keep_empty_fraction, seed=seed,
                                      train_transform=train_transform, val_transform=val_transform)
    else:
        train, val = make_3d_datasets(ds, train_items, val_items, g.patch_size, g.samples_per_volume, augment,
                                      seed=seed, train_transform=train_transform, val_transform=val_transform)
    return FoldData(ds, train_items, val_items, train, val)


@dataclass
class FoldLoaders:
    """The data loaders of a fold: training (shuffled by ``generator``, which a checkpoint keeps) and validation."""

    train: DataLoader
    val: DataLoader
    generator: torch.Generator


def make_loaders(data: FoldData, batch_size: int, seed: int, num_workers: int = 0,
                 val_batch_size: int | None = None) -> FoldLoaders:
    """Loaders of a fold: the training set shuffled with a generator seeded by ``seed`` (the last incomplete batch
    dropped when there is more than one batch), validation in order with ``val_batch_size`` (default
    ``batch_size``; 1 for whole 3D volumes)."""
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(data.train, batch_size=batch_size, shuffle=True, num_workers=num_workers, generator=generator,
                       drop_last=len(data.train) > batch_size)
    val = DataLoader(data.val, batch_size=val_batch_size or batch_size, shuffle=False, num_workers=num_workers)
    return FoldLoaders(train, val, generator)
