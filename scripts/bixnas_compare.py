"""Retrain the networks of BiX-NAS demo searches beside BiO-Net++ and U-Net over 3 seeds (slow; not CI).

Each genotype is trained with the bundle's shared trainer for every seed (seed k: patient split and training
seed k, validation = fold 0 of that split), predicts its validation cases and is scored by the shared evaluation.
Writes ``docs/bixnas_demo_results.md``: Dice and IoU mean ± std over seeds, params and MACs at the training size.
Runs already finished under ``out_dir`` are reused, so a killed comparison continues.

python scripts/bixnas_compare.py --search_dirs "['runs/bixnas_demo/search','runs/bixnas_demo_seed1/search']" --epochs 20
    (one row per search folder, named by its output_dir: its genotype.json)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nas_ops.bundle import fire_main
from nas_ops.cost_model import measure_cost
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network
from nas_ops.training.chain import train_predict_evaluate

log = logging.getLogger("bixnas_compare")


def compare(
    search_dirs: str | Sequence[str] = ("runs/bixnas_demo/search",),
    dataset_dir: str = "demo_data/Task901_DemoNuclei",
    bundle_dir: str = "bundles/bixnas",
    out_dir: str = "runs/bixnas_compare",
    doc: str = "docs/bixnas_demo_results.md",
    seeds: tuple[int, ...] = (0, 1, 2),
    epochs: int = 20,
    batch_size: int = 4,
    spatial_size: tuple[int, int] = (128, 128),
    num_threads: int = 2,
) -> dict:
    """Train, predict and score each searched net, BiO-Net++ and U-Net for every seed; write the table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(num_threads)
    search_dirs = [search_dirs] if isinstance(search_dirs, str) else list(search_dirs)
    runs = {d: (Path(d).parent.name if Path(d).name == "search" else Path(d).name) for d in search_dirs}
    models = {f"BiX-NAS ({run})": (Path(d) / "genotype.json", f"bixnas_{run}") for d, run in runs.items()}
    models["BiO-Net++"] = (Path(bundle_dir) / "genotypes" / "bionet_pp.json", "bio-net++")
    models["U-Net"] = (Path(bundle_dir) / "genotypes" / "unet.json", "u-net")
    rows = []
    for name, (path, key) in models.items():
        genotype = Genotype.load(path)
        cost = measure_cost(build_network(genotype), (genotype.in_channels, *spatial_size))
        dice, iou, seconds = [], [], []
        for seed in seeds:
            run = Path(out_dir) / key / f"seed{seed}"
            trained, metrics = train_predict_evaluate(path, dataset_dir, run, seed=seed, device="cpu", epochs=epochs,
                                                      batch_size=batch_size, spatial_size=spatial_size)
            summary = metrics["summary"]
            dice.append(np.mean([v["mean"] for v in summary["dice"].values()]))
            iou.append(np.mean([v["mean"] for v in summary["iou"].values()]))
            history = trained["history"]
            seconds.append(sum(row["seconds"] for row in history))  # training epochs (kept when a run is reused)
            log.info("%s seed %d: Dice %.4f", name, seed, dice[-1])
        rows.append(f"| {name} | {np.mean(dice):.4f} ± {np.std(dice):.4f} | {np.mean(iou):.4f} ± {np.std(iou):.4f} "
                    f"| {cost.params:,} | {cost.macs / 1e9:.3f} | {np.mean(seconds):.0f} |")
    lines = [
        "# BiX-NAS on the demo nuclei data: searched network vs BiO-Net++ and U-Net",
        "",
        "Written by `scripts/bixnas_compare.py` after demo searches "
        "(`python -m monai.bundle run --config_file \"['bundles/bixnas/configs/search.json',"
        "'bundles/bixnas/configs/demo.json']\"`, with `--seed k --output_dir runs/bixnas_demo_seedk` for the "
        "other search seeds). CPU, small budget: read as a smoke-level comparison.",
        "",
        f"- Data: `{dataset_dir}`, {spatial_size[0]}x{spatial_size[1]}; seed k = patient split and training seed "
        f"k, validation = fold 0 of 5 (different images per seed).",
        f"- Training: {epochs} epochs, batch {batch_size}, Adam 1e-3, polynomial decay 0.9, Dice + CE, "
        f"{num_threads} torch thread(s).",
        "- Dice and IoU: per validation image, mean over images, then mean ± std over the 3 seeds.",
        f"- GMACs: convolutions and transposed convolutions of one forward at {spatial_size[0]}x{spatial_size[1]}.",
        "",
        "| model | Dice | IoU | params | GMACs | training seconds per seed |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    Path(doc).write_text("\n".join(lines))
    return {"doc": doc}


if __name__ == "__main__":
    fire_main(compare)
