"""One split per dataset, nested: held-out test cases that no search, selection or early stopping touches, and
patient-grouped folds of the other cases (the development cases), shared with nnU-Net.

The split is drawn once from the study's seed and written to ``<study>/split.json``; the development cases become a
dataset folder of their own (``<study>/data/dev``: ``dataset.json``, links to the original files and the folds as
nnU-Net's ``splits_final.json``), the test cases another (``<study>/data/test``). Every search and every training of
the study reads the development folder only, so a test case cannot reach a search's training or validation; every
workflow reads the folds from ``splits_final.json`` (:mod:`nas_ops.data.splits`) whatever its seed, and the nnU-Net
export copies that file into ``nnUNet_preprocessed/<Dataset>/`` so nnU-Net validates on the same folds.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas_ops.atomic import write_json_atomic
from nas_ops.data.msd import DATASET_JSON, MSDDataset, case_id
from nas_ops.data.splits import SPLIT_FILE, patient_kfold
from nas_ops.errors import DatasetError, InputError, read_json

FORMAT, VERSION = "medseg-nas-split", 1
ALPHA = 0.05


def min_test_cases(family: int = 1, alpha: float = ALPHA) -> int:
    """The fewest paired test cases with which the best outcome of a family of ``family`` two-sided Wilcoxon
    signed-rank tests (every case better: exact p = 2 / 2^n) still has a Holm-adjusted p below ``alpha``:
    ``family x 2^(1 - n) < alpha`` (one test: 6 cases; six: 8)."""
    n = 1
    while max(family, 1) * 2.0 ** (1 - n) >= alpha:
        n += 1
    return n


@dataclass(frozen=True)
class StudySplit:
    """Test case ids and the folds of the development cases (nnU-Net's ``splits_final.json`` form)."""

    dataset: dict[str, str]  # name and fingerprint of the dataset it splits
    seed: int
    test: list[str]
    folds: list[dict[str, list[str]]]

    @property
    def dev(self) -> list[str]:
        """The development case ids."""
        return sorted({c for fold in self.folds for side in fold.values() for c in side})

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


def draw_split(ds: MSDDataset, n_folds: int, seed: int, test_fraction: float = 0.2,
               min_test: int | None = None) -> StudySplit:
    """Hold out whole patients, shuffled by ``seed``, until at least ``max(min_test, test_fraction x cases)``
    cases are test cases (``min_test`` default: what one Wilcoxon test needs, :func:`min_test_cases`); split the
    remaining patients into ``n_folds`` folds (:func:`patient_kfold`). Case ids (the image's file name without its
    suffix, as nnU-Net names cases) must be unique."""
    min_test = min_test_cases() if min_test is None else min_test
    check_unique_ids(ds)
    n_cases = len(ds.items)
    want = max(min_test, math.ceil(test_fraction * n_cases))
    by_patient: dict[str, list[int]] = {}
    for i, item in enumerate(ds.items):
        by_patient.setdefault(str(item["patient"]), []).append(i)
    patients = sorted(by_patient)
    order = np.random.default_rng([seed, 7]).permutation(len(patients))
    test_idx: list[int] = []
    taken = 0
    for j in order:
        if len(test_idx) >= want:
            break
        test_idx += by_patient[patients[j]]
        taken += 1
    left = len(patients) - taken
    if len(test_idx) < want or left < n_folds:
        raise InputError(ds.json_path, "training", f"{n_cases} cases of {len(patients)} patients cannot give "
                         f"{want} test cases and {n_folds} folds of the rest: the study needs at least {want} test "
                         f"cases (its Holm-adjusted Wilcoxon tests on fewer cannot reach p < 0.05) and a patient per "
                         "fold")
    test_set = set(test_idx)
    dev = [i for i in range(n_cases) if i not in test_set]
    dev_items = [ds.items[i] for i in dev]
    folds = []
    for train, val in patient_kfold(dev_items, n_folds, seed, source=ds.json_path):
        folds.append({"train": sorted(case_id(dev_items[i]["image"]) for i in train),
                      "val": sorted(case_id(dev_items[i]["image"]) for i in val)})
    return StudySplit({"name": ds.name, "fingerprint": ds.fingerprint or ""}, seed,
                      sorted(case_id(ds.items[i]["image"]) for i in test_idx), folds)


def check_unique_ids(ds: MSDDataset) -> None:
    """Refuse two cases with one case id (``site1/case_001.nii.gz`` and ``site2/case_001.nii.gz``): a split, a
    dataset folder of links and nnU-Net all name cases by it."""
    seen: dict[str, int] = {}
    for i, item in enumerate(ds.items):
        cid = case_id(item["image"])
        if cid in seen:
            raise DatasetError(ds.json_path, f"training[{i}].image", f"case id {cid!r} is also training[{seen[cid]}]'s:"
                               " case ids (file names without their suffix) must be unique")
        seen[cid] = i


def read_split(path: str | Path) -> StudySplit:
    """A study's ``split.json``, checked."""
    doc = read_json(path, DatasetError, what="a study split")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise DatasetError(path, "format", f"not a {FORMAT} file of version {VERSION}")
    try:
        return StudySplit(doc["dataset"], doc["seed"], list(doc["test"]), list(doc["folds"]))
    except KeyError as err:
        raise DatasetError(path, str(err.args[0]), "missing") from None


def _view(ds: MSDDataset, doc: dict[str, Any], ids: list[str], folder: Path, what: str) -> Path:
    """A dataset folder holding only the cases ``ids``: ``dataset.json`` and links to the original files."""
    check_unique_ids(ds)
    wanted = set(ids)
    training = []
    for entry, item in zip(doc["training"], ds.items, strict=True):
        if case_id(item["image"]) not in wanted:
            continue
        new = dict(entry)
        for key, sub in (("image", "imagesTr"), ("label", "labelsTr")):
            source = Path(item[key])
            link = folder / sub / source.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(source, link)
            new[key] = f"./{sub}/{source.name}"
        training.append(new)
    view = {**doc, "description": f"{doc.get('description', '')} [{what} of a medseg-nas study]".strip(),
            "numTraining": len(training), "training": training, "numTest": 0, "test": []}
    (folder / DATASET_JSON).write_text(json.dumps(view, indent=2) + "\n")
    return folder


def write_views(ds: MSDDataset, split: StudySplit, out: Path) -> tuple[Path, Path]:
    """The development folder (with the folds as ``splits_final.json``) and the test folder, written once:
    ``(out/dev, out/test)``."""
    doc = read_json(ds.json_path, DatasetError)
    dev = _view(ds, doc, split.dev, out / "dev", "development cases")
    write_json_atomic(dev / SPLIT_FILE, split.folds)
    test = _view(ds, doc, split.test, out / "test", "held-out test cases")
    return dev, test
