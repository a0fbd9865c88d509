"""One training of a study and its test-set evaluation: a job of the execution layer (JSON in, JSON out).

The job runs the bundle's own workflows, as ``python -m monai.bundle run`` would: ``train.json`` (with the
budget's overlays) on the development cases, ``inference.json`` on every held-out test case, ``evaluate.json``
against their labels. Its result (per test case and class: Dice, IoU, HD95, surface Dice; the network's
parameters and MACs, the median time of a training step on random data and the time per epoch, the training
step's estimated memory) is kept in
``study_result.json`` beside the run, with the job's identity: a finished job is reported, not run again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nas_ops.atomic import write_json_atomic
from nas_ops.cost_model import estimate_training_memory, time_training_step
from nas_ops.engine.seeds import seed_everything
from nas_ops.errors import InputError, read_json
from nas_ops.genotype import Genotype
from nas_ops.process import resolve_device
from nas_ops.registry import build_network
from nas_ops.study.workflows import config_value, run_workflow
from nas_ops.training.artifacts import sha256_file

RESULT_FILE = "study_result.json"


def finished(run_dir: str | Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The result of a finished job of this identity in ``run_dir``, or None (a half-written or other one is
    not a result)."""
    path = Path(run_dir) / RESULT_FILE
    try:
        doc = read_json(path)
    except InputError:
        return None
    if not isinstance(doc, dict) or doc.get("identity") != json.loads(json.dumps(identity)):
        return None
    return doc.get("result")


def train_and_test(bundle_dir: str, train_configs: list[str], genotype_path: str, dev_dir: str, test_dir: str,
                   run_dir: str, fold: int, n_folds: int, seed: int, device: str = "cpu",
                   fingerprints: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Train ``genotype_path`` on fold ``fold`` of the development cases with the bundle's ``train.json`` (and
    ``train_configs``' overlays, then ``overrides``), predict and score every test case; returns the job's result
    (see the module)."""
    overrides = overrides or {}
    configs = ["train.json", *train_configs, "inference.json", "evaluate.json"]
    identity = {"bundle": Path(bundle_dir).name, "configs": {name: sha256_file(Path(bundle_dir, "configs", name))
                                                             for name in configs},
                "genotype": Genotype.load(genotype_path).to_dict(), "fold": fold, "n_folds": n_folds, "seed": seed,
                "data": fingerprints or {}, "overrides": overrides, "device": device}
    done = finished(run_dir, identity)
    if done is not None:
        return done
    common = {"output_dir": run_dir, "device": device, "num_threads": 1}
    tic = time.perf_counter()
    run_workflow(bundle_dir, ["train.json", *train_configs], dataset_dir=dev_dir, genotype_path=genotype_path,
                 fit_channels=False, fold=fold, n_folds=n_folds, seed=seed, **common, **overrides)
    trained = time.perf_counter()
    run_workflow(bundle_dir, ["inference.json"], dataset_dir=test_dir, cases="all", **common)
    run_workflow(bundle_dir, ["evaluate.json"], dataset_dir=test_dir, output_dir=run_dir, num_threads=1)
    metrics = read_json(Path(run_dir) / "eval" / "metrics.json")
    log = read_json(Path(run_dir) / "train" / "train_log.json")
    history = log["history"]
    batch = config_value(bundle_dir, ["train.json", *train_configs], "batch_size", **overrides)
    genotype = Genotype.load(genotype_path)
    samples = 1
    if genotype.spatial_dims == 3:
        samples = config_value(bundle_dir, ["train.json", *train_configs], "samples_per_volume", **overrides)
    memory = estimate_training_memory(lambda: build_network(genotype), log["input_shape"], batch * samples)
    seed_everything(seed)
    step_seconds = time_training_step(build_network(genotype).to(resolve_device(device)), log["input_shape"],
                                      batch * samples)
    result = {
        "classes": metrics["classes"], "per_case": metrics["per_case"], "params": log["params"],
        "macs": log["macs"], "input_shape": log["input_shape"], "epochs": len(history),
        "step_seconds": step_seconds,
        "epoch_seconds": sum(r["seconds"] for r in history) / len(history),
        "train_seconds": round(trained - tic, 1), "job_seconds": round(time.perf_counter() - tic, 1),
        "memory_bytes": memory.total_bytes, "final_val_dice": log.get("final_val_dice"),
    }
    write_json_atomic(Path(run_dir) / RESULT_FILE, {"identity": identity, "result": result})
    return result
