"""Data: MSD datasets (read, validate, write), patient-level folds, MONAI pipelines and the demo datasets."""

from nas_ops.data.demo import (
    DEMO_KINDS,
    DEMO_TASK_DIRS,
    ensure_demo_data,
    make_mri_dataset,
    make_nuclei_dataset,
    threshold_dice,
)
from nas_ops.data.loaders import Case, load_case, make_2d_datasets, make_3d_datasets, slice_items
from nas_ops.data.msd import MSDDataset, load_msd_dataset, read_array, validate_dataset, write_dataset_json
from nas_ops.data.splits import fold_items, patient_kfold
from nas_ops.data.transforms import augmentations, load_transforms, normalisation_for, normalisation_scheme

__all__ = [
    "DEMO_KINDS",
    "DEMO_TASK_DIRS",
    "Case",
    "MSDDataset",
    "augmentations",
    "ensure_demo_data",
    "fold_items",
    "load_case",
    "load_msd_dataset",
    "load_transforms",
    "make_2d_datasets",
    "make_3d_datasets",
    "make_mri_dataset",
    "make_nuclei_dataset",
    "normalisation_for",
    "normalisation_scheme",
    "patient_kfold",
    "read_array",
    "slice_items",
    "threshold_dice",
    "validate_dataset",
    "write_dataset_json",
]
