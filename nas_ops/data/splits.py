"""Patient-level k-fold cross-validation: no patient's cases on both sides of a split.

A dataset folder may hold its folds as data: ``splits_final.json`` in nnU-Net's format (a list of
``{"train": [case ids], "val": [case ids]}``, a case id being the image's file name without its suffix, as
nnU-Net's MSD conversion names it). Every workflow then uses those folds whatever its seed, and nnU-Net validates
on the same ones when the file is copied to ``nnUNet_preprocessed/<Dataset>/``; the study writes one per dataset.
Without the file, the folds are drawn from the run's seed (:func:`patient_kfold`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nas_ops.data.msd import MSDDataset, case_id
from nas_ops.errors import DatasetError, read_json

SPLIT_FILE = "splits_final.json"


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


def split_folds(ds: MSDDataset) -> list[tuple[list[int], list[int]]] | None:
    """The folds of the dataset's ``splits_final.json`` as (train, validation) item indices; None without one.

    Refused: a file that is not nnU-Net's format, a case id the dataset lacks, a case on both sides of a fold.
    """
    path = ds.root / SPLIT_FILE
    if not path.is_file():
        return None
    doc = read_json(path, DatasetError, what="nnU-Net's splits_final.json")
    if not isinstance(doc, list) or not doc:
        raise DatasetError(path, "<root>", "must be a non-empty list of folds {\"train\": [...], \"val\": [...]}")
    index = {case_id(item["image"]): i for i, item in enumerate(ds.items)}
    if len(index) < len(ds.items):
        raise DatasetError(path, "<root>", f"{ds.json_path} names {len(ds.items) - len(index)} case id(s) twice: folds "
                           "by case id need unique ids (file names without their suffix)")
    folds = []
    for k, fold in enumerate(doc):
        if not isinstance(fold, dict) or set(fold) != {"train", "val"}:
            raise DatasetError(path, f"[{k}]", "must be an object with exactly the keys 'train' and 'val'")
        sides = []
        for side in ("train", "val"):
            ids = fold[side]
            if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
                raise DatasetError(path, f"[{k}].{side}", "must be a list of case ids (strings)")
            unknown = [c for c in ids if c not in index]
            if unknown:
                raise DatasetError(path, f"[{k}].{side}", f"case {unknown[0]!r} is not in {ds.json_path}")
            sides.append(sorted(index[c] for c in ids))
        both = set(sides[0]) & set(sides[1])
        if both:
            raise DatasetError(path, f"[{k}]", f"case {case_id(ds.items[min(both)]['image'])!r} is on both sides")
        folds.append((sides[0], sides[1]))
    return folds


def fold_items(
    ds: MSDDataset, fold: int, n_folds: int = 5, seed: int = 0
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Training and validation items of fold ``fold`` (0-based): the dataset's ``splits_final.json`` when it has
    one (its fold count must be ``n_folds``), else a patient-level ``n_folds``-fold split drawn with ``seed``."""
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < n_folds:
        raise DatasetError(ds.json_path, "fold", f"must be an integer in [0, {n_folds - 1}], got {fold!r}")
    folds = split_folds(ds)
    if folds is not None and len(folds) != n_folds:
        raise DatasetError(ds.root / SPLIT_FILE, "n_folds", f"holds {len(folds)} folds, the run asks for {n_folds}: "
                           f"set n_folds {len(folds)}")
    train, val = (folds if folds is not None else patient_kfold(ds.items, n_folds, seed, source=ds.json_path))[fold]
    return [ds.items[i] for i in train], [ds.items[i] for i in val]
