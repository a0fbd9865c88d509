"""Train, predict and evaluate a genotype in one call, into one folder laid out as a bundle's ``output_dir``
(``train/``, ``predictions/``, ``eval/``): what measurement scripts run per model and seed (the study runs the
bundles' own workflows instead: :mod:`nas_ops.study.jobs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas_ops.genotype import Genotype
from nas_ops.training.evaluation import evaluate
from nas_ops.training.inference import predict
from nas_ops.training.trainer import train


def train_predict_evaluate(genotype: Genotype | str | Path, dataset_dir: str | Path, output_dir: str | Path,
                           cases: str = "validation", **train_args: Any) -> tuple[dict, dict]:
    """``(train result, metrics)``: :func:`train` with ``train_args`` (seed, fold, recipe, geometry, ...), then the
    fold's ``cases`` predicted and scored. A finished training is reported, not redone; prediction and scoring
    run again (they take seconds)."""
    out = Path(output_dir)
    trained = train(genotype, dataset_dir, out / "train", **train_args)
    split = {k: train_args[k] for k in ("fold", "n_folds", "seed", "device") if k in train_args}
    predict(out / "train" / "models", dataset_dir, out / "predictions", cases=cases, **split)
    metrics = evaluate(out / "predictions", dataset_dir, out / "eval", out / "train" / "models")
    return trained, metrics
