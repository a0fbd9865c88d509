"""Patient-level k-fold cross-validation: no patient's cases on both sides of a split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nas_ops.data.msd import MSDDataset
from nas_ops.errors import DatasetError


def patient_kfold(
    items: Sequence[dict[str, str]], n_folds: int, seed: int, source: str | Path | None = None
) -> list[tuple[list[int], list[int]]]:
    """``n_folds`` pairs of (train, validation) item indices; patients are shuffled by ``seed`` and dealt into
    folds of near-equal patient count, so every patient is validated in exactly one fold.

    ``source`` (the dataset.json) is named in errors.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise DatasetError(source, "n_folds", f"must be an integer >= 2, got {n_folds!r}")
    by_patient: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_patient.setdefault(str(item["patient"]), []).append(i)
    patients = sorted(by_patient)
    if len(patients) < n_folds:
        raise DatasetError(
            source, "training", f"{len(patients)} patient(s) cannot fill {n_folds} folds: need at least {n_folds}"
        )
    order = np.random.default_rng(seed).permutation(len(patients))
    folds = []
    for chunk in np.array_split(order, n_folds):
        val_patients = {patients[j] for j in chunk}
        val = sorted(i for p in val_patients for i in by_patient[p])
        train = sorted(i for p in patients if p not in val_patients for i in by_patient[p])
        folds.append((train, val))
    return folds


def fold_items(
    ds: MSDDataset, fold: int, n_folds: int = 5, seed: int = 0
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Training and validation items of fold ``fold`` (0-based) of a patient-level ``n_folds``-fold split."""
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < n_folds:
        raise DatasetError(ds.json_path, "fold", f"must be an integer in [0, {n_folds - 1}], got {fold!r}")
    train, val = patient_kfold(ds.items, n_folds, seed, source=ds.json_path)[fold]
    return [ds.items[i] for i in train], [ds.items[i] for i in val]
