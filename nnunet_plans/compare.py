"""Comparison harness: train nnU-Net's default and each searched network, collect the folds, test, tabulate.

For one dataset and configuration, a *model* is a plans identifier trained by a trainer (nnU-Net's result folder
``<trainer>__<plans>__<configuration>``). The first model is the reference (nnU-Net's default ``nnUNetPlans``).

- ``mode="local"``: run every missing ``nnUNetv2_train`` (subprocess with a timeout), then report;
  ``mode="print"``: print the commands for a cluster and stop; ``mode="collect"``: only report.
- The report reads every fold's ``fold_X/validation/summary.json`` (nnU-Net's validation on the held-out cases of
  that fold) and writes ``comparison.md``, ``comparison.csv``, ``per_case.csv`` and ``dice_boxplot.png``:
  mean ± std Dice per class over the validation cases of all folds, parameters and MACs (from the plans),
  a Friedman test across models (blocks: cases; needs >= 3 models) and a two-sided Wilcoxon signed-rank test of
  each other model against the reference, paired by case, Holm-adjusted as one family (the statistics are
  :mod:`nas_ops.study.statistics`, shared with the study). A case's score is its mean Dice over the foreground
  classes (classes with no reference and no prediction voxels, Dice NaN in nnU-Net, are left out).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from nas_ops.engine.execution import Job, executor
from nas_ops.errors import InputError
from nas_ops.study.statistics import TestResult, friedman, holm, wilcoxon
from nnunet_plans.plans import (
    PlannedDataset,
    build_planned_network,
    dataset_id,
    dataset_name,
    env_dir,
    network_cost,
    read_json,
    strides_divisor,
)
from nnunet_plans.trainers import ext_trainer_dir

log = logging.getLogger(__name__)

DEFAULT_PLANS = "nnUNetPlans"
MODES = ("local", "print", "collect")
COMPARE = "nnunet compare"  # the source named by errors of the command line's own options


@dataclass(frozen=True)
class Model:
    """One trained model: ``trainer`` on ``plans``; ``label`` is its name in tables."""

    plans: str
    trainer: str
    label: str

    def folder(self, configuration: str) -> str:
        """nnU-Net's result folder name."""
        return f"{self.trainer}__{self.plans}__{configuration}"


def parse_models(plans: str | Sequence[str], trainer: str = "nnUNetTrainer") -> list[Model]:
    """Models from ``PLANS`` or ``TRAINER__PLANS`` entries (a list or a comma-separated string)."""
    entries = [p.strip() for p in plans.split(",")] if isinstance(plans, str) else [str(p).strip() for p in plans]
    models = []
    for entry in filter(None, entries):
        tr, _, pl = entry.rpartition("__")
        pl_label = "nnU-Net" if pl == DEFAULT_PLANS else pl.removeprefix(f"{DEFAULT_PLANS}_")
        models.append(Model(plans=pl, trainer=tr or trainer, label=pl_label if not tr else f"{pl_label} ({tr})"))
    labels = [m.label for m in models]
    if len(models) < 2:
        raise InputError(COMPARE, "plans", f"need at least 2 models to compare, got {labels}")
    if len(set(labels)) != len(labels):
        raise InputError(COMPARE, "plans", f"models repeat: {labels}")
    return models


def parse_folds(folds: int | str | Sequence[int | str]) -> list[int | str]:
    """Folds as nnU-Net names them: integers or ``"all"``."""
    items = folds.split(",") if isinstance(folds, str) else [folds] if isinstance(folds, int) else list(folds)
    return [int(f) if str(f).strip().isdigit() else str(f).strip() for f in items]


# -- running --------------------------------------------------------------------------------------------------


def nnunet_cli(name: str) -> str:
    """Path of an nnU-Net console script: next to this Python first (a venv need not be activated), then PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} nor on PATH: is nnunetv2 installed?")
    return found


def nnunet_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for nnU-Net subprocesses: ours, with this package's trainer folder in ``nnUNet_extTrainer``."""
    env = {**os.environ, **(extra or {})}
    folders = [str(ext_trainer_dir())] + [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    env["nnUNet_extTrainer"] = os.pathsep.join(dict.fromkeys(folders))
    return env


def train_command(dataset: int | str, configuration: str, model: Model, fold: int | str, device: str) -> list[str]:
    """One ``nnUNetv2_train`` call (bare command name: for printing; :func:`run_commands` resolves it)."""
    return ["nnUNetv2_train", str(dataset), configuration, str(fold), "-p", model.plans, "-tr", model.trainer,
            "-device", device]


def run_commands(commands: Sequence[Sequence[str]], logs: Sequence[Path], timeout_s: float | None = None,
                 jobs: int = 1, env: dict[str, str] | None = None) -> list[float]:
    """Run commands, ``jobs`` at a time, each with its own log file and a timeout; returns wall seconds per command.
    ``env``: variables set for the commands (default: this package's trainers in ``nnUNet_extTrainer``).

    Each runs as a job of the execution layer's ``subprocess`` backend: a failed or timed-out command stops the run
    with an error naming its log; a timed-out command's whole process group (nnU-Net's workers included) is killed.
    """
    extra = env if env is not None else {"nnUNet_extTrainer": nnunet_env()["nnUNet_extTrainer"]}
    batch = [Job("nas_ops.engine.execution.run_command",
                 {"argv": [nnunet_cli(cmd[0]), *cmd[1:]], "env": extra}, tag=" ".join(cmd), log=str(path))
             for cmd, path in zip(commands, logs, strict=True)]
    seconds = {}
    with executor("subprocess", parallel_jobs=max(1, jobs), timeout_s=timeout_s) as run:
        for job, result in run(batch):
            seconds[job.tag] = result["seconds"]
            log.info("done in %.1f s: %s", result["seconds"], job.tag)
    return [seconds[job.tag] for job in batch]


# -- collecting -----------------------------------------------------------------------------------------------


@dataclass
class ModelResult:
    """A model's validation results over the folds: per case, Dice per class."""

    model: Model
    folds: list[int | str]
    dice: dict[str, dict[str, float]]  # case -> class key -> Dice (NaN where nnU-Net gives none)
    fold_of: dict[str, int | str]
    params: int | None = None
    macs: int | None = None
    patch_size: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def case_score(self, case: str, classes: Sequence[str]) -> float:
        """Mean Dice over the foreground classes of a case (NaN classes left out)."""
        values = [self.dice[case].get(c, math.nan) for c in classes]
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan


def read_summary(path: Path) -> dict[str, dict[str, float]]:
    """``case -> class -> Dice`` from nnU-Net's ``summary.json`` (case: the reference file's name, no extension)."""
    doc = read_json(path, "written by nnUNetv2_train at the end of the fold's training")
    if "metric_per_case" not in doc:
        raise InputError(path, "metric_per_case", "missing: not an nnU-Net validation summary")
    out = {}
    for i, entry in enumerate(doc["metric_per_case"]):
        try:
            case = Path(entry["reference_file"]).name.split(".")[0]
            out[case] = {str(k): _float(v["Dice"]) for k, v in entry["metrics"].items()}
        except (KeyError, TypeError) as err:
            raise InputError(path, f"metric_per_case[{i}]", f"missing {err}") from None
    return out


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def collect(dataset: int | str, configuration: str, models: Sequence[Model], folds: Sequence[int | str],
            costs: bool = True) -> list[ModelResult]:
    """Every model's validation summaries (all folds must exist), and its parameters and MACs from its plans."""
    name = dataset_name(dataset)
    root = env_dir("nnUNet_results") / name
    missing = [str(root / m.folder(configuration) / f"fold_{f}" / "validation" / "summary.json")
               for m in models for f in folds
               if not (root / m.folder(configuration) / f"fold_{f}" / "validation" / "summary.json").is_file()]
    if missing:
        raise InputError(missing[0], "<file>", f"{len(missing)} validation summaries missing (train first, "
                         f"mode='local' or the printed commands): {missing}")
    results = []
    for m in models:
        folder = root / m.folder(configuration)
        dice: dict[str, dict[str, float]] = {}
        fold_of: dict[str, int | str] = {}
        for f in folds:
            for case, values in read_summary(folder / f"fold_{f}" / "validation" / "summary.json").items():
                dice[case], fold_of[case] = values, f
        result = ModelResult(model=m, folds=list(folds), dice=dice, fold_of=fold_of)
        if costs:
            _add_costs(result, folder, configuration)
        results.append(result)
    return results


def _add_costs(result: ModelResult, folder: Path, configuration: str) -> None:
    """Params and MACs of the trained model's network, built from the plans nnU-Net copied into its folder."""
    planned = PlannedDataset(name=folder.parent.name, folder=folder, plans_path=folder / "plans.json",
                             plans=read_json(folder / "plans.json", "written by nnUNetv2_train"),
                             dataset_json=read_json(folder / "dataset.json", "written by nnUNetv2_train"))
    config = planned.configuration(configuration)
    net = build_planned_network(config, planned.input_channels, planned.num_outputs)
    divisor = getattr(net, "divisor", None) or strides_divisor(config["architecture"]["arch_kwargs"]["strides"])
    cost = network_cost(net, planned.input_channels, config["patch_size"], divisor)
    result.params, result.macs, result.patch_size = cost.params, cost.macs, list(cost.patch_size)


# -- statistics -----------------------------------------------------------------------------------------------


def paired_scores(results: Sequence[ModelResult], classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Cases every model scored (a finite foreground-mean Dice) and the ``(models, cases)`` score matrix."""
    common = sorted(set.intersection(*(set(r.dice) for r in results)))
    scores = np.array([[r.case_score(c, classes) for c in common] for r in results]).reshape(len(results), -1)
    keep = ~np.isnan(scores).any(axis=0)
    return [c for c, k in zip(common, keep, strict=True) if k], scores[:, keep]


# -- the report -----------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What :func:`compare` produced."""

    markdown: Path
    table_csv: Path
    per_case_csv: Path
    boxplot: Path
    friedman: TestResult
    wilcoxon: list[TestResult]
    rows: list[dict[str, Any]]
    train_seconds: dict[str, float] = field(default_factory=dict)


def class_names(dataset_json: dict[str, Any] | None, keys: Sequence[str]) -> dict[str, str]:
    """Readable names of summary class keys (``"1"`` -> ``"inner_zone"``) from dataset.json's labels."""
    by_id = {}
    for label_name, value in (dataset_json or {}).get("labels", {}).items():
        by_id[str(value)] = label_name
    return {k: by_id.get(k, k) for k in keys}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def write_report(results: Sequence[ModelResult], out_dir: str | Path, title: str,
                 dataset_json: dict[str, Any] | None = None) -> Report:
    """Tables, statistics and the box plot for collected results (the reference is ``results[0]``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in results for case in r.dice.values() for k in case if k != "0"},
                  key=lambda k: (len(k), k))
    names = class_names(dataset_json, keys)
    cases, scores = paired_scores(results, keys)
    ref = results[0]
    fried = friedman(scores)
    wil = [wilcoxon(scores[i], scores[0], r.model.label, ref.model.label) for i, r in enumerate(results) if i > 0]
    wil = [replace(w, p_holm=h) for w, h in zip(wil, holm([w.p for w in wil]), strict=True)]  # one family

    rows = []
    for i, r in enumerate(results):
        row: dict[str, Any] = {"model": r.model.label, "trainer": r.model.trainer, "plans": r.model.plans,
                               "folds": " ".join(map(str, r.folds)), "cases": len(r.dice)}
        for k in keys:
            row[f"dice_{names[k]}_mean"], row[f"dice_{names[k]}_std"] = _mean_std([d.get(k, math.nan)
                                                                                  for d in r.dice.values()])
        row["dice_fg_mean"], row["dice_fg_std"] = _mean_std([r.case_score(c, keys) for c in r.dice])
        row["params"], row["macs"] = r.params, r.macs
        row["patch_size"] = "x".join(map(str, r.patch_size)) if r.patch_size else ""
        row["wilcoxon_p_vs_reference"] = "" if i == 0 else ("" if wil[i - 1].p is None else wil[i - 1].p)
        row["wilcoxon_p_holm"] = "" if i == 0 else ("" if wil[i - 1].p_holm is None else wil[i - 1].p_holm)
        rows.append(row)

    table_csv = out / "comparison.csv"
    with table_csv.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    per_case_csv = out / "per_case.csv"
    with per_case_csv.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "case", "fold", *(f"dice_{names[k]}" for k in keys), "dice_fg"])
        for r in results:
            for case in sorted(r.dice):
                writer.writerow([r.model.label, case, r.fold_of[case], *(r.dice[case].get(k, math.nan) for k in keys),
                                 r.case_score(case, keys)])
    boxplot = out / "dice_boxplot.png"
    _boxplot(results, keys, names, boxplot, title)

    md = [f"# {title}", "", f"Validation Dice per model over the held-out cases of folds "
          f"{', '.join(map(str, results[0].folds))} (nnU-Net's `fold_X/validation/summary.json`); mean ± std over "
          f"cases. Reference: **{ref.model.label}**.", ""]
    header = ["model", *(f"Dice {names[k]}" for k in keys), "Dice fg mean", "params", "GMACs (patch)", "cases",
              "Wilcoxon p vs ref (Holm)"]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        dice = [f"{row[f'dice_{names[k]}_mean']:.4f} ± {row[f'dice_{names[k]}_std']:.4f}" for k in keys]
        cost = [f"{row['params']:,}" if row["params"] is not None else "-",
                f"{row['macs'] / 1e9:.3f} ({row['patch_size']})" if row["macs"] is not None else "-"]
        p = row["wilcoxon_p_holm"]
        p_text = "reference" if i == 0 else f"{p:.4g}" if p != "" else "-"
        fg = f"{row['dice_fg_mean']:.4f} ± {row['dice_fg_std']:.4f}"
        md.append("| " + " | ".join([row["model"], *dice, fg, *cost, str(row["cases"]), p_text]) + " |")
    md += ["", "## Statistics", "",
           f"Per-case score: mean foreground Dice; {len(cases)} cases scored by every model.", "",
           f"- {fried.text()}", *(f"- {w.text()}" for w in wil), "",
           f"![Dice per case]({boxplot.name})", ""]
    markdown = out / "comparison.md"
    markdown.write_text("\n".join(md))
    return Report(markdown, table_csv, per_case_csv, boxplot, fried, wil, rows)


def _boxplot(results: Sequence[ModelResult], keys: Sequence[str], names: dict[str, str], path: Path,
             title: str) -> None:
    """Per-case Dice per model: one panel per class and one for the foreground mean (Agg canvas, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(names[k], [[d.get(k, math.nan) for d in r.dice.values()] for r in results]) for k in keys]
    panels.append(("foreground mean", [[r.case_score(c, keys) for c in r.dice] for r in results]))
    fig = Figure(figsize=(3.2 * len(panels) + 1, 4.2))
    FigureCanvasAgg(fig)
    labels = [r.model.label for r in results]
    for i, (panel, data) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.boxplot([[v for v in d if not math.isnan(v)] for d in data], tick_labels=labels)
        ax.set_title(panel)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(axis="x", labelrotation=30)
        if i == 0:
            ax.set_ylabel("Dice per case")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# -- the whole harness ----------------------------------------------------------------------------------------


def compare(
    dataset: int | str,
    plans: str | Sequence[str] = DEFAULT_PLANS,
    folds: int | str | Sequence[int | str] = (0, 1, 2, 3, 4),
    configuration: str = "3d_fullres",
    trainer: str = "nnUNetTrainer",
    mode: str = "collect",
    device: str = "cuda",
    out_dir: str | Path | None = None,
    timeout_s: float | None = None,
    jobs: int = 1,
    costs: bool = True,
) -> Report | list[str]:
    """Train (``mode="local"``), print the commands (``"print"``) or just collect (``"collect"``), then report.

    ``plans``: the models, reference first (``PLANS`` or ``TRAINER__PLANS``; ``trainer`` for those without);
    ``out_dir`` defaults to ``$nnUNet_results/<dataset>/comparison_<configuration>``.
    Returns the report, or the printed command lines in ``"print"`` mode.
    """
    if mode not in MODES:
        raise InputError(COMPARE, "mode", f"{mode!r}: one of {list(MODES)}")
    models = parse_models(plans, trainer)
    fold_list = parse_folds(folds)
    name = dataset_name(dataset)
    ident = dataset_id(name)
    root = env_dir("nnUNet_results") / name
    out = Path(out_dir) if out_dir else root / f"comparison_{configuration}"
    todo = [(m, f) for m in models for f in fold_list
            if not (root / m.folder(configuration) / f"fold_{f}" / "validation" / "summary.json").is_file()]
    if mode == "print":
        lines = [f"export nnUNet_extTrainer={nnunet_env()['nnUNet_extTrainer']}"]
        lines += [" ".join(train_command(ident, configuration, m, f, device)) for m, f in todo or
                  [(m, f) for m in models for f in fold_list]]
        print("\n".join(lines))
        return lines
    seconds: dict[str, float] = {}
    if mode == "local" and todo:
        commands = [train_command(ident, configuration, m, f, device) for m, f in todo]
        logs = [out / "logs" / f"{m.folder(configuration)}_fold_{f}.log" for m, f in todo]
        spent = run_commands(commands, logs, timeout_s=timeout_s, jobs=jobs)
        seconds = {f"{m.label} fold {f}": s for (m, f), s in zip(todo, spent, strict=True)}
    results = collect(name, configuration, models, fold_list, costs=costs)
    dataset_json = read_json(root / models[0].folder(configuration) / "dataset.json", "written by nnUNetv2_train")
    report = write_report(results, out, f"{name} {configuration}: nnU-Net vs searched networks", dataset_json)
    report.train_seconds = seconds
    return report
