"""Score written predictions against the dataset's labels: a per-case table and mean ± std per class.

``evaluate(...)`` is what every bundle's ``evaluate.json`` runs. It reads the predictions of ``prediction_dir``
and writes ``<output_dir>/metrics.json`` (per case, summary, and the params and MACs of the trained model at the
geometry it was trained at, read from its ``models/`` folder) and ``<output_dir>/metrics.csv`` (one row per case
and class). Distances are in mm from the label's affine.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
import torch

from nas_ops.atomic import atomic_write, write_json_atomic
from nas_ops.config import PositiveFloat, check_output_dir
from nas_ops.cost_model import measure_cost
from nas_ops.data.msd import case_id, read_array
from nas_ops.data.setup import load_checked_dataset
from nas_ops.entry import entry
from nas_ops.errors import InputError, read_json
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network
from nas_ops.training.artifacts import GENOTYPE_FILE, Geometry, read_info, verify_checksums
from nas_ops.training.inference import RUN_FILE
from nas_ops.training.metrics import METRICS, CaseMetrics, summarise

log = logging.getLogger(__name__)


def voxel_spacing(affine: np.ndarray | None, ndim: int) -> list[float]:
    """mm per voxel along each array axis (1.0 for files without geometry, e.g. PNG)."""
    if affine is None:
        return [1.0] * ndim
    return [float(v) for v in np.linalg.norm(affine[:3, :ndim], axis=0)]


@entry
def evaluate(
    prediction_dir: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    model_dir: str | Path | None = None,
    tolerance_mm: PositiveFloat = 2.0,
    allow_outside_dataset_dir: bool = False,
    config_source: str | None = None,
) -> dict:
    """Compare every file in ``prediction_dir`` with its label; returns what metrics.json holds."""
    check_output_dir(output_dir, source=config_source)
    ds = load_checked_dataset(dataset_dir, deep=False, allow_outside=allow_outside_dataset_dir)
    folder = Path(prediction_dir)
    preds = sorted(p for p in folder.glob("*") if p.is_file() and not p.name.startswith(".")) if folder.is_dir() \
        else []
    if not preds:
        raise InputError(folder, "predictions", "no predictions to evaluate (run inference.json first)")
    marker = folder / RUN_FILE  # what inference predicted: the same dataset, or refused naming it
    if marker.is_file():
        made = read_json(marker).get("identity", {}).get("dataset", {})
        if made.get("fingerprint") not in (None, ds.fingerprint):
            raise InputError(marker, "dataset.fingerprint", f"these predictions are of another dataset "
                             f"({made.get('name')!r}, {str(made.get('fingerprint'))[:19]}...) than {ds.json_path} "
                             f"({ds.fingerprint[:19]}...): evaluate against the dataset they were predicted from")
    by_case = {case_id(item["label"]): item for item in ds.items}
    scorer = CaseMetrics(ds.num_classes, tolerance_mm)
    class_names = [ds.labels[c] for c in sorted(ds.labels) if c != 0]
    per_case = []
    for pred_path in preds:
        cid = case_id(pred_path)
        if cid not in by_case:
            raise InputError(pred_path, "case", f"no training case '{cid}' in {ds.json_path}")
        label, affine = read_array(by_case[cid]["label"])
        pred, _ = read_array(pred_path)
        label, pred = np.squeeze(label), np.squeeze(pred)
        if label.shape != pred.shape:
            raise InputError(pred_path, "shape", f"prediction {pred.shape} differs from label {label.shape}")
        scores = scorer(torch.as_tensor(pred.astype(np.int64)), torch.as_tensor(label.astype(np.int64)),
                        voxel_spacing(affine, label.ndim))
        per_case.append({"case": cid, **scores})
    result: dict = {"classes": class_names, "tolerance_mm": tolerance_mm, "num_cases": len(per_case),
                    "summary": summarise(per_case, class_names), "per_case": per_case}
    if model_dir is not None:
        info = read_info(model_dir)
        verify_checksums(model_dir, info)
        genotype, geometry = Genotype.load(Path(model_dir) / GENOTYPE_FILE), Geometry(**info["geometry"])
        cost = measure_cost(build_network(genotype), (genotype.in_channels, *geometry.input_size))
        result.update(genotype=genotype.name, params=cost.params, macs=cost.macs, input_shape=list(cost.input_shape))
    out = Path(output_dir)
    write_json_atomic(out / "metrics.json", result)
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["case", "class", *METRICS])
    for row in per_case:
        for c, name in enumerate(class_names):
            writer.writerow([row["case"], name, *(f"{row[m][c]:.6g}" for m in METRICS)])
    atomic_write(out / "metrics.csv", lambda fh: fh.write(table.getvalue().encode()))
    for name in class_names:
        s = result["summary"]
        log.info("%s: Dice %.4f ± %.4f, HD95 %.2f mm, surface Dice %.4f", name, s["dice"][name]["mean"],
                 s["dice"][name]["std"], s["hd95"][name]["mean"], s["surface_dice"][name]["mean"])
    return result
