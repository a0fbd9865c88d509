"""C2FNAS's found network vs DiNTS's found network vs a 3D U-Net on the demo MRI volumes, over seeds (slow; not CI).

For every seed k: the C2FNAS bundle's demo search (``configs/search.json`` + ``configs/demo.json``: the ``search``
block) and its ``dints`` variant (the ``dints`` block) run with seed k (patient split and search seed k); each found
network and a 3D U-Net of the demo's width are then trained with the demo's training (``demo.json``: 150 epochs,
Adam 1e-3, polynomial decay, foreground soft Dice, 32^3 patches, batch 2), predict fold ``fold`` of split k and are
scored by the shared evaluation (Dice, HD95). Parameters, MACs (one 32^3 patch) and the peak memory of a training
step (estimated by the cost model on the meta device; measured by the CUDA allocator when a GPU is present) are
reported for the found networks and for both supernets; search wall time is measured in this run (a search
already finished under ``out_dir`` keeps the time recorded when it ran). Writes ``<out_dir>/compare.json`` and the
Markdown ``doc``.

python scripts/c2fnas_compare.py --seeds "[0,1,2]"
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas_ops.atomic import write_json_atomic
from nas_ops.baselines.unet import unet_genotype
from nas_ops.bundle import fire_main
from nas_ops.c2fnas.context import C2FNASConfig
from nas_ops.c2fnas.search import HeaviestPath
from nas_ops.c2fnas.search import search as c2fnas_search
from nas_ops.cost_model import count_macs, count_params, estimate_training_memory, peak_activation_memory
from nas_ops.data import ensure_demo_data
from nas_ops.data.setup import load_checked_dataset
from nas_ops.dints.search import DiNTSConfig, meta_parameters, supernet
from nas_ops.dints.search import search as dints_search
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network
from nas_ops.training.chain import train_predict_evaluate
from nas_ops.training.losses import make_loss
from nas_ops.training.metrics import case_means

log = logging.getLogger("c2fnas_compare")
BUNDLE = Path("bundles/c2fnas/configs")
MODELS = ("c2fnas", "dints", "unet3d")
SAMPLES_PER_VOLUME = 2  # train.json's default: a batch of 2 volumes holds 4 patches


def demo_blocks() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(search block, dints block, demo training settings)`` as the bundle's demo resolves them."""
    search, demo = (json.loads((BUNDLE / f"{n}.json").read_text()) for n in ("search", "demo"))
    blocks = ({**search["search"], **demo["+search"]}, {**search["dints"], **demo["+dints"]})
    train = {k: demo[k] for k in ("patch_size", "epochs", "batch_size")}
    return blocks[0], blocks[1], train


def _timed_search(run: Path, fn, **kwargs) -> tuple[dict, float]:
    """The search's summary and its wall time (recorded when it ran; a finished search is only reported)."""
    record = run / "search_seconds.json"
    tic = time.perf_counter()
    summary = fn(output_dir=run / "search", **kwargs)
    if not record.is_file():
        write_json_atomic(record, {"seconds": round(time.perf_counter() - tic, 1)})
    return summary, json.loads(record.read_text())["seconds"]


def _memory(build, channels: int, patch: list[int], batch: int) -> dict[str, float]:
    """GiB of a training step: the meta-device estimate, and the CUDA peak when there is a GPU."""
    est = estimate_training_memory(build, (channels, *patch), batch)
    out = {"estimate_gib": round(est.total_bytes / 2**30, 3)}
    if torch.cuda.is_available():
        net = build().cuda()
        out["cuda_activations_gib"] = round(peak_activation_memory(net, (channels, *patch), batch).bytes / 2**30, 3)
    return out


def compare(
    dataset_dir: str = "demo_data/Task902_DemoMRI",
    out_dir: str = "runs/c2fnas_compare",
    doc: str = "docs/c2fnas_comparison.md",
    seeds: tuple[int, ...] = (0, 1, 2),
    fold: int = 0,
    n_folds: int = 5,
    device: str = "cpu",
    num_threads: int = 2,
    note: str = "",
) -> dict:
    """Search (both variants), train, predict and score for every seed; write compare.json and the table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(num_threads)
    tic = time.perf_counter()
    if dataset_dir == "demo_data/Task902_DemoMRI":
        ensure_demo_data(dataset_dir, "mri")
    out = Path(out_dir)
    ds = load_checked_dataset(dataset_dir, deep=False)
    c2f_block, dints_block, train = demo_blocks()
    patch, batch = train["patch_size"], train["batch_size"]
    common = {"dataset_dir": dataset_dir, "fold": fold, "n_folds": n_folds, "device": device,
              "num_threads": num_threads}
    c2f_cfg, dints_cfg = C2FNASConfig.from_values(c2f_block), DiNTSConfig.from_values(dints_block)

    def dints_probe():
        with meta_parameters():
            return supernet(dints_cfg, ds.in_channels, ds.num_classes)

    supernets = {"c2fnas": _memory(lambda: HeaviestPath(c2f_cfg, ds.in_channels, ds.num_classes), ds.in_channels,
                                   list(c2f_cfg.patch_size), c2f_cfg.batch_size * c2f_cfg.samples_per_volume),
                 "dints": _memory(dints_probe, ds.in_channels, list(dints_cfg.patch_size),
                                  dints_cfg.batch_size * dints_cfg.samples_per_volume)}
    rows: dict[str, list[dict]] = {m: [] for m in MODELS}
    for seed in seeds:
        found: dict[str, tuple[Path, float | None, dict]] = {}
        run = out / f"c2fnas_s{seed}"
        summary, seconds = _timed_search(run, c2fnas_search, config=c2f_block, seed=seed, plots=False, **common)
        found["c2fnas"] = (run / "search" / "genotype.json", seconds, summary)
        run = out / f"dints_s{seed}"
        summary, seconds = _timed_search(run, dints_search, config=dints_block, seed=seed, **common)
        found["dints"] = (run / "search" / "genotype.json", seconds, summary)
        unet = unet_genotype(3, ds.in_channels, ds.num_classes, features=[8, 16, 32, 64, 128],
                             norm="instance").replace(name="unet3d-w8")
        found["unet3d"] = (unet.save(out / f"unet3d_s{seed}" / "genotype_source.json"), None, {})
        for name, (source, search_seconds, summary) in found.items():
            genotype = Genotype.load(source)
            net = build_network(genotype)
            t0 = time.perf_counter()
            trained, metrics = train_predict_evaluate(
                source, dataset_dir, out / f"{name}_s{seed}", fold=fold, n_folds=n_folds, seed=seed, device=device,
                epochs=train["epochs"], batch_size=batch, loss=make_loss("foreground_dice"), patch_size=patch,
                samples_per_volume=SAMPLES_PER_VOLUME)
            row = {"seed": seed, "search_seconds": search_seconds, "search": summary,
                   "params": count_params(net), "macs": count_macs(net, (ds.in_channels, *patch)),
                   "memory": _memory(lambda g=genotype: build_network(g), ds.in_channels, patch,
                                     batch * SAMPLES_PER_VOLUME),
                   "train_seconds": round(sum(h["seconds"] for h in trained["history"]), 1),
                   "seconds": round(time.perf_counter() - t0, 1),
                   **{m: case_means(metrics, m) for m in ("dice", "hd95")}}
            rows[name].append(row)
            log.info("%s seed %d: Dice %.4f, %d params", name, seed, np.nanmean(list(row["dice"].values())),
                     row["params"])
    result = {"dataset_dir": dataset_dir, "seeds": list(seeds), "fold": fold, "n_folds": n_folds, "train": train,
              "search_block": c2f_block, "dints_block": dints_block, "supernets": supernets, "models": rows,
              "device": device, "cuda": torch.cuda.is_available(), "note": note,
              "seconds": round(time.perf_counter() - tic, 1)}
    write_json_atomic(out / "compare.json", result)
    _write_doc(Path(doc), result, ds.name)
    log.info("comparison done in %.0f s: %s", result["seconds"], doc)
    return {"doc": doc, "seconds": result["seconds"]}


def _ms(values: list[float], fmt: str, scale: float = 1.0) -> str:
    v = np.array([x for x in values if x is not None], dtype=float) / scale
    return f"{np.nanmean(v):{fmt}} ± {np.nanstd(v):{fmt}}" if v.size else "—"


def _write_doc(path: Path, r: dict, dataset: str) -> None:
    t = r["train"]
    lines = [
        "# C2FNAS vs DiNTS vs a 3D U-Net on the demo MRI volumes",
        "",
        "Written by `scripts/c2fnas_compare.py` (the numbers below are from its last run; 2-core CPU, demo budget).",
        "",
        f"- Data: `{r['dataset_dir']}` ({dataset}), 3D volumes; seed k = patient split, search seed and training "
        f"seed k; validation = fold {r['fold']} of {r['n_folds']} of split k (other patients per seed).",
        "- Searches: the C2FNAS bundle's demo (`configs/search.json` + `configs/demo.json`), both variants. "
        f"C2FNAS: {r['search_block']['coarse_groups']} coarse groups x {r['search_block']['coarse_epochs']} epochs, "
        f"fine stage {r['search_block']['fine_epochs']} epochs, evolution {r['search_block']['population']} x "
        f"{r['search_block']['generations']}. DiNTS (MONAI's TopologySearch, {r['dints_block']['num_blocks']} "
        f"blocks x {r['dints_block']['num_depths']} levels, channel_mul {r['dints_block']['channel_mul']}): "
        f"{r['dints_block']['epochs']} epochs ({r['dints_block']['warmup_epochs']} warm-up) on half the training "
        "cases each for weights and architecture. The budget is about the same search wall time on this machine, "
        "not the same epochs: an epoch of DiNTS's multi-path supernet (about 4.5 s) costs about five of "
        "C2FNAS's single-path epochs.",
        f"- Training of every found network and of the U-Net (features 8-128, the demo's width, InstanceNorm like "
        f"the searched nets and `genotypes/unet3d.json`): {t['epochs']} "
        f"epochs, batch {t['batch_size']}, {t['patch_size'][0]}^3 patches, Adam 1e-3, polynomial decay 0.9, "
        "foreground soft Dice.",
        "- Metrics per validation case, mean over the foreground classes; table: mean ± std over seeds of the "
        "per-seed means. MACs: one forward of one patch (convolutions). Memory: a training step at the training "
        "batch (2 volumes x 2 patches) and patch (weights, gradients, Adam moments and the tensors kept for "
        "backward), "
        + ("measured on the GPU." if r["cuda"] else "estimated on the meta device (no GPU in this run)."),
        "",
        f"| model | Dice | HD95 (mm) | params (M) | MMACs @{t['patch_size'][0]}^3 | training memory (GiB) "
        "| search wall time (s) | training (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        rows = r["models"][name]
        dice = [float(np.nanmean(list(x["dice"].values()))) for x in rows]
        hd = [float(np.nanmean(list(x["hd95"].values()))) for x in rows]
        lines.append(f"| {name} | {_ms(dice, '.4f')} | {_ms(hd, '.2f')} | "
                     f"{_ms([x['params'] for x in rows], '.3f', 1e6)} | {_ms([x['macs'] for x in rows], '.0f', 1e6)} | "
                     f"{_ms([x['memory']['estimate_gib'] for x in rows], '.3f')} | "
                     f"{_ms([x['search_seconds'] for x in rows], '.0f')} | "
                     f"{_ms([x['train_seconds'] for x in rows], '.0f')} |")
    s = r["supernets"]
    lines += [
        "",
        f"Supernets' training step (estimate): C2FNAS's largest (every topology and op of the demo's space) "
        f"{s['c2fnas']['estimate_gib']:.2f} GiB, DiNTS's {s['dints']['estimate_gib']:.2f} GiB.",
        "",
        "Per seed:",
        "",
        "| model | seed | Dice | HD95 (mm) | params | search result |",
        "|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        for x in r["models"][name]:
            found = x["search"]
            what = (f"topology {found.get('topology')}, ops {','.join(found.get('ops', []))}" if name == "c2fnas"
                    else f"{found.get('active_paths')} active paths" if name == "dints" else "fixed")
            lines.append(f"| {name} | {x['seed']} | {np.nanmean(list(x['dice'].values())):.4f} | "
                         f"{np.nanmean(list(x['hd95'].values())):.2f} | {x['params']:,} | {what} |")
    lines += [
        "",
        "Read with care: a demo budget on CPU mostly measures how fast each network learns in 150 epochs; the "
        "supernets are far from converged, and two seeds give a rough spread only.",
        *([""] + [r["note"]] if r.get("note") else []),
        "",
        f"Wall time of the last invocation: {r['seconds']:.0f} s (finished searches and trainings under the output "
        "folder are reused, with their recorded times).",
        "",
        "Command:",
        "",
        "```bash",
        f"python scripts/c2fnas_compare.py --seeds \"[{','.join(str(s) for s in r['seeds'])}]\"",
        "```",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    fire_main(compare)
