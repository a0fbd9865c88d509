"""Measure how hard the demo datasets are: Dice of the best intensity threshold, a tiny net and a small U-Net.

    python scripts/measure_demo_baselines.py --root demo_data --out docs/demo_data.md

Nets are trained on fold 0 of 5 (patient-level) with the shared trainer and scored on the held-out fold by the
shared evaluation (per-case Dice, mean ± std). Slow (minutes): not part of CI.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from nas_ops.baselines.unet import unet_genotype
from nas_ops.data import ensure_demo_data, fold_items, load_case, load_msd_dataset, read_array, threshold_dice
from nas_ops.data.geometry import DataGeometry
from nas_ops.entry import fire_main
from nas_ops.training.chain import train_predict_evaluate
from nas_ops.training.recipe import Recipe

NETS = {  # name -> U-Net spec: the tiny net has 2 levels of 4/8 channels and one conv per level
    "tiny net": {"features": [4, 8], "convs_per_level": 1},
    "small U-Net": {"features": [16, 32, 64, 128], "convs_per_level": 2},
}
SETTINGS = {
    "nuclei": {"task": "Task901_DemoNuclei", "spatial_size": (128, 128), "epochs": 30, "batch_size": 4},
    "mri": {"task": "Task902_DemoMRI", "spatial_size": (64, 64), "epochs": 15, "batch_size": 8},
}


def _threshold(dataset_dir: Path) -> list[float]:
    """Best global threshold window per foreground class on the validation fold, on the normalised intensity
    (the mean over channels for RGB)."""
    ds = load_msd_dataset(dataset_dir)
    _, val = fold_items(ds, 0, 5, 0)
    images = [load_case(item, ds).image.mean(0).numpy() for item in val]
    labels = [np.squeeze(read_array(item["label"])[0]) for item in val]
    return [threshold_dice(images, labels, c) for c in sorted(ds.labels) if c != 0]


def measure(root: str = "demo_data", out: str = "docs/demo_data.md", work: str = "runs/demo_baselines") -> dict:
    """Measure every demo dataset and write the markdown table to ``out``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(2)
    rows, results = [], {}
    for kind, s in SETTINGS.items():
        dataset_dir = ensure_demo_data(Path(root) / s["task"], kind)
        ds = load_msd_dataset(dataset_dir)
        classes = [ds.labels[c] for c in sorted(ds.labels) if c != 0]
        res = {"threshold": {"dice": _threshold(dataset_dir)}}
        for name, spec in NETS.items():
            run = Path(work) / kind / name.replace(" ", "_")
            g = unet_genotype(2, ds.in_channels, ds.num_classes, **spec).replace(name=name)
            g.save(run / "source_genotype.json")
            tic = time.perf_counter()
            _, m = train_predict_evaluate(run / "source_genotype.json", dataset_dir, run,
                                          recipe=Recipe(epochs=s["epochs"], batch_size=s["batch_size"]),
                                          geometry=DataGeometry(spatial_size=s["spatial_size"]), device="cpu")
            res[name] = {
                "dice": [m["summary"]["dice"][c]["mean"] for c in classes],
                "std": [m["summary"]["dice"][c]["std"] for c in classes],
                "params": m["params"], "seconds": round(time.perf_counter() - tic),
            }
        results[kind] = res
        for method, r in res.items():
            cells = [f"{d:.3f}" + (f" ± {r['std'][i]:.3f}" if "std" in r else "") for i, d in enumerate(r["dice"])]
            rows.append(f"| {s['task']} | {method} | {' / '.join(cells)} | {r.get('params', '-')} |")
    header = [
        "# Demo data: how hard it is",
        "",
        "Measured by `python scripts/measure_demo_baselines.py` (fold 0 of a 5-fold patient split, seed 0, CPU).",
        "Threshold: the best global intensity window per class, tuned on the very cases it is scored on (an upper",
        "bound for any threshold). Nets: plain U-Net genotypes trained with the shared trainer (Dice + CE, Adam",
        f"1e-3, polynomial decay); settings {json.dumps({k: {kk: v[kk] for kk in ('spatial_size', 'epochs')} for k, v in SETTINGS.items()})}.",  # noqa: E501
        "Dice per foreground class on the held-out fold, mean ± std over its cases.",
        "",
        "| dataset | method | Dice per class | params |",
        "|---|---|---|---|",
    ]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join([*header, *rows]) + "\n")
    return results


if __name__ == "__main__":
    fire_main(measure)
