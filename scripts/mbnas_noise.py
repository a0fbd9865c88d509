"""How noisy is MB-NAS's candidate score at a budget? The same networks retrained over seeds, against the score
differences Local Search acts on (slow; not CI).

For the U-Net start and ``neighbours`` of its one-variable moves (the candidates the first sweep scores), every
network is trained ``seeds`` times with the search's own protocol (:func:`nas_ops.mbnas.evaluate.train_and_score`,
fold 0, the bundle's search block merged with the overlays given). Prints per network the mean and standard deviation
of its score over the seeds, the pooled standard deviation of one score (what one evaluation with one seed carries),
the standard deviation of a difference of two such scores (sqrt 2 times it: what an accepted move must beat), and
the differences between the networks' means.

python scripts/mbnas_noise.py --dataset_dir demo_data/Task902_DemoMRI --overlays "[demo.json]" --seeds 5
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from nas_ops.data.setup import load_checked_dataset
from nas_ops.entry import fire_main
from nas_ops.mbnas.config import MBNASConfig
from nas_ops.mbnas.evaluate import TrainingBudget, train_and_score
from nas_ops.mbnas.space import SearchSpace, arch_key, make_genotype
from nas_ops.study.workflows import config_value


def measure(dataset_dir: str = "demo_data/Task902_DemoMRI", overlays: tuple[str, ...] = ("demo.json",),
            seeds: int = 5, neighbours: int = 3, bundle_dir: str = "bundles/mbnas", n_folds: int = 5,
            overrides: dict | None = None, out: str | None = None) -> dict:
    """Train the U-Net start and ``neighbours`` of its first-sweep candidates ``seeds`` times each; see the module.
    ``overrides``: keys of the search block set over the overlays (``{"epochs": 15}``)."""
    torch.set_num_threads(1)
    block = {**config_value(bundle_dir, ["search.json", *overlays], "search"), **(overrides or {})}
    cfg = MBNASConfig.from_values(block)
    ds = load_checked_dataset(dataset_dir)
    space = SearchSpace(cfg.num_nodes, cfg.max_depth, tuple(cfg.blocks), tuple(cfg.kernel_sizes))
    start = space.unet()
    nets = [("U-Net start", start)]
    for variable in space.variables():
        for value, nodes in space.neighbours(start, variable, cfg.cut_broken_skips):
            if len(nets) <= neighbours:
                nets.append((f"{variable} = {value}", nodes))
    budget = TrainingBudget(dataset_dir=str(Path(dataset_dir).resolve()), epochs=cfg.epochs,
                            batch_size=cfg.batch_size, spatial_size=tuple(cfg.spatial_size), slice_axis=cfg.slice_axis,
                            n_folds=n_folds, lr=cfg.lr, lr_power=cfg.lr_power, loss=cfg.loss,
                            last_fraction=cfg.last_fraction, keep_empty_fraction=cfg.keep_empty_fraction,
                            device="cpu", dataset_fingerprint=ds.fingerprint).to_dict()
    tic = time.perf_counter()
    rows = []
    for name, nodes in nets:
        genotype = make_genotype(nodes, ds.in_channels, ds.num_classes, 2, cfg.base_channels, cfg.max_depth,
                                 cfg.norm).to_dict()
        scores = [train_and_score(genotype, 0, seed, budget)["score"] for seed in range(seeds)]
        rows.append({"network": name, "key": arch_key(nodes), "scores": scores, "mean": float(np.mean(scores)),
                     "std": float(np.std(scores, ddof=1))})
        print(f"{name:24s} {arch_key(nodes)}: mean {rows[-1]['mean']:.4f}, std {rows[-1]['std']:.4f} over {seeds} "
              f"seeds ({', '.join(f'{s:.3f}' for s in scores)})", flush=True)
    pooled = math.sqrt(float(np.mean([r["std"] ** 2 for r in rows])))
    means = [r["mean"] for r in rows]
    result = {"budget": {k: block[k] for k in ("epochs", "batch_size", "spatial_size", "base_channels", "seeds",
                                                "folds")},
              "seeds": seeds, "networks": rows, "pooled_std": pooled, "difference_std": math.sqrt(2) * pooled,
              "mean_differences": [m - means[0] for m in means[1:]], "seconds": round(time.perf_counter() - tic, 1)}
    differences = ", ".join(f"{d:+.4f}" for d in result["mean_differences"])
    print(f"pooled std of one score: {pooled:.4f}; std of a difference of two scores: {math.sqrt(2) * pooled:.4f}; "
          f"differences of the neighbours' means to the start: {differences}; {result['seconds']:.0f} s")
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    fire_main(measure)
