"""Compare the network an MB-NAS search found with U-Net, ResU-Net and a random valid genotype (slow; not CI).

Each model is trained with the bundle's training (Adam 1e-3, polynomial decay 0.9, foreground soft Dice) for every
seed in ``seeds`` (seed k: patient split and training seed k, validation = fold ``fold`` of that split), predicts its
validation cases and is scored by the shared evaluation (Dice, HD95, surface Dice at 2 mm, per case and class).
Writes ``<out_dir>/compare.json`` and the Markdown table ``doc``: mean ± std over seeds of the per-seed means,
MMACs and parameters, and the Wilcoxon signed-rank p-value of found vs U-Net over the (seed, case) pairs of mean
foreground Dice. Runs already finished under ``out_dir`` are reused, so a killed comparison continues.

python scripts/mbnas_compare.py --search_dir runs/mbnas_demo/search --dataset_dir demo_data/Task902_DemoMRI --epochs 6
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon

from nas_ops.atomic import write_json_atomic
from nas_ops.baselines.resunet import resunet_genotype
from nas_ops.bundle import fire_main
from nas_ops.cost_model import measure_cost
from nas_ops.data.setup import load_checked_dataset
from nas_ops.genotype import Genotype
from nas_ops.mbnas.space import SearchSpace, make_genotype, nodes_of, parse_spec
from nas_ops.registry import build_network
from nas_ops.training.chain import train_predict_evaluate
from nas_ops.training.losses import make_loss
from nas_ops.training.metrics import case_means

log = logging.getLogger("mbnas_compare")
MODELS = ("found", "unet", "resunet", "random")


def _genotypes(search_dir: Path, ds, random_seed: int) -> dict[str, Genotype]:
    """The four models, fitted to the dataset; U-Net and the random genotype use the search's base width."""
    found = Genotype.load(search_dir / "genotype.json")
    spec = parse_spec(found.spec)
    space = SearchSpace(len(spec.nodes), spec.max_depth)
    io = dict(in_channels=ds.in_channels, out_channels=ds.num_classes)
    kw = dict(base_channels=spec.base_channels, max_depth=spec.max_depth, norm=spec.norm, **io)
    return {
        "found": make_genotype(nodes_of(found), name="found", provenance=found.provenance, **kw),
        "unet": make_genotype(space.unet(), name="unet", **kw),
        "resunet": resunet_genotype(2, **io),
        "random": make_genotype(space.random(np.random.default_rng(random_seed)), name=f"random{random_seed}", **kw),
    }


def compare(
    search_dir: str = "runs/mbnas_demo/search",
    dataset_dir: str = "demo_data/Task902_DemoMRI",
    out_dir: str = "runs/mbnas_compare",
    doc: str = "docs/mbnas_demo_results.md",
    seeds: tuple[int, ...] = (0, 1, 2),
    fold: int = 0,
    n_folds: int = 5,
    epochs: int = 6,
    batch_size: int = 16,
    spatial_size: tuple[int, int] = (64, 64),
    device: str = "cpu",
    random_seed: int = 0,
    num_threads: int = 1,
) -> dict:
    """Train, predict and score the four models for every seed; write compare.json and the Markdown table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(num_threads)
    tic = time.perf_counter()
    out = Path(out_dir)
    ds = load_checked_dataset(dataset_dir, deep=False)
    genotypes = _genotypes(Path(search_dir), ds, random_seed)
    rows: dict[str, dict] = {}
    for name, genotype in genotypes.items():
        source = genotype.save(out / name / "genotype_source.json")
        cost = measure_cost(build_network(genotype), (genotype.in_channels, *spatial_size))
        cost128 = measure_cost(build_network(genotype), (genotype.in_channels, 128, 128))
        per_seed = []
        for seed in seeds:
            run = out / name / f"seed{seed}"
            t0 = time.perf_counter()
            # the MB-NAS protocol: Adam 1e-3 with polynomial decay 0.9 (the trainer's defaults), foreground Dice
            trained, metrics = train_predict_evaluate(
                source, dataset_dir, run, fold=fold, n_folds=n_folds, seed=seed, device=device, epochs=epochs,
                batch_size=batch_size, loss=make_loss("foreground_dice"), spatial_size=spatial_size, slice_axis=2)
            history = trained["history"]
            per_seed.append({"seed": seed, "seconds": round(time.perf_counter() - t0, 1),
                             "train_seconds": round(sum(h["seconds"] for h in history), 1),
                             **{m: case_means(metrics, m) for m in ("dice", "hd95", "surface_dice")}})
            log.info("%s seed %d: Dice %.4f (%.0f s)", name, seed, np.nanmean(list(per_seed[-1]["dice"].values())),
                     per_seed[-1]["seconds"])
        rows[name] = {"genotype": genotype.to_dict(), "params": cost.params, "macs": cost.macs,
                      "macs_128": cost128.macs, "per_seed": per_seed}
    summary = {}
    for name, row in rows.items():
        summary[name] = {m: [float(np.nanmean(list(s[m].values()))) for s in row["per_seed"]]
                         for m in ("dice", "hd95", "surface_dice")}
    pairs = [(s_f["dice"][c], s_u["dice"][c]) for s_f, s_u in zip(rows["found"]["per_seed"], rows["unet"]["per_seed"],
                                                                  strict=True) for c in s_f["dice"]]
    x, y = np.array(pairs).T
    p_value = float(wilcoxon(x, y).pvalue) if np.any(x != y) else 1.0
    result = {"search_dir": search_dir, "dataset_dir": dataset_dir, "seeds": list(seeds), "fold": fold,
              "n_folds": n_folds, "epochs": epochs, "batch_size": batch_size, "spatial_size": list(spatial_size),
              "summary": summary, "wilcoxon_found_vs_unet": {"p": p_value, "n_pairs": len(pairs)},
              "models": rows, "seconds": round(time.perf_counter() - tic, 1)}
    write_json_atomic(out / "compare.json", result)
    _write_doc(Path(doc), result, ds.name)
    log.info("comparison done in %.0f s: %s", result["seconds"], doc)
    return {"doc": doc, "wilcoxon_p": p_value, "seconds": result["seconds"]}


def _ms(values: list[float], fmt: str) -> str:
    v = np.array(values, dtype=float)
    return f"{np.nanmean(v):{fmt}} ± {np.nanstd(v):{fmt}}"


def _write_doc(path: Path, r: dict, dataset: str) -> None:
    search = json.loads((Path(r["search_dir"]) / "search_result.json").read_text())
    lines = [
        "# MB-NAS on the demo MRI data: found network vs U-Net, ResU-Net and a random genotype",
        "",
        "Written by `scripts/mbnas_compare.py` (the numbers below are from its last run; CPU, small budget).",
        "",
        f"- Data: `{r['dataset_dir']}` ({dataset}), 2D slices at {r['spatial_size'][0]}x{r['spatial_size'][1]}; "
        f"seed k = patient split and training seed k, validation = fold {r['fold']} of {r['n_folds']} "
        f"(different patients per seed).",
        f"- Training: {r['epochs']} epochs, batch {r['batch_size']}, Adam 1e-3, polynomial decay 0.9, foreground "
        "soft Dice, augmentation (scaling, shifting, rotation, flips, brightness).",
        f"- Found network: `{search['best_key']}` (variant {search['variant']}, {search['evaluations']} evaluations, "
        f"search score {search['best_score']:.4f}, search dir `{r['search_dir']}`).",
        "- U-Net and the random genotype use the search's base width; ResU-Net is MONAI's FlexibleUNet with a "
        "ResNet-50 encoder (no pretraining).",
        "- Metrics per validation case, mean over the foreground classes; table: mean ± std over seeds of the "
        "per-seed means. MMACs count convolutions and transposed convolutions of one forward (nas_ops.cost_model).",
        "",
        f"| model | Dice | HD95 (mm) | surface Dice @2 mm | MMACs @{r['spatial_size'][0]}² | MMACs @128² "
        "| params (M) | training (s per seed) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        s, m = r["summary"][name], r["models"][name]
        lines.append(f"| {name} | {_ms(s['dice'], '.4f')} | {_ms(s['hd95'], '.2f')} | "
                     f"{_ms(s['surface_dice'], '.4f')} | {m['macs'] / 1e6:.1f} | {m['macs_128'] / 1e6:.1f} | "
                     f"{m['params'] / 1e6:.3f} | {np.mean([p['train_seconds'] for p in m['per_seed']]):.0f} |")
    w = r["wilcoxon_found_vs_unet"]
    lines += [
        "",
        f"Wilcoxon signed-rank test, found vs U-Net, per case (mean foreground Dice, {w['n_pairs']} (seed, case) "
        f"pairs): p = {w['p']:.4g}.",
        "",
        "Read with care: a few epochs on CPU mostly measure how fast a network learns; seed 0's validation "
        "patients are the ones the search scored on (the search used split seed 0, fold 0), seeds 1 and 2 hold out "
        "other patients; with 6 pairs the smallest two-sided Wilcoxon p-value is 0.03125.",
        "",
        f"Wall time of the last invocation: {r['seconds']:.0f} s (finished trainings under the output folder are "
        "reused; the training column sums the epoch times of each run).",
        "",
        "Command:",
        "",
        "```bash",
        f"python scripts/mbnas_compare.py --search_dir {r['search_dir']} --dataset_dir {r['dataset_dir']} "
        f"--epochs {r['epochs']}",
        "```",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    fire_main(compare)
