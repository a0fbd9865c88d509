"""The study's outputs: ``results.csv`` (one row per test case, class, model, seed and fold), ``summary.json``,
``report.md`` (per method: the table, the statistics in plain words, the budget and wall times, the command) and the
plots (Dice against MACs with the Pareto front, a box plot per model, each search's progress).

The unit of every test is a test case: its score is the mean over the foreground classes, averaged over the
training seeds and folds (see :mod:`nas_ops.study.statistics`). The random control of a case is the median of the
random architectures' scores on it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import NullFormatter

from nas_ops.atomic import atomic_write, write_json_atomic
from nas_ops.data.msd import MSDDataset
from nas_ops.figures import figure, save_png
from nas_ops.pareto import pareto_front
from nas_ops.search_run import Searcher
from nas_ops.study.models import StudyModel
from nas_ops.study.split import StudySplit
from nas_ops.study.statistics import Rank, TestResult, compare_family, friedman, rank_among

METRICS = ("dice", "iou", "hd95", "surface_dice")
BUDGETS = {"demo": "demo overlays", "paper": "paper settings"}
PAIRING = ("per test case: the mean over the foreground classes, averaged over the training seeds and folds. The "
           "cases are the independent samples; the seeds repeat measurements of the same case, so pairing case x "
           "seed would count each case several times and overstate n")


def _case_scores(results: dict[tuple, dict], model: StudyModel, metric: str) -> dict[str, float]:
    """Per test case: the foreground mean of ``metric``, averaged over the model's seeds and folds."""
    per_case: dict[str, list[float]] = {}
    for (bundle, name, _, _), result in results.items():
        if (bundle, name) != (model.bundle, model.name):
            continue
        for case in result["per_case"]:
            values = np.asarray(case[metric], dtype=float)
            finite = values[np.isfinite(values)]
            per_case.setdefault(case["case"], []).append(float(finite.mean()) if finite.size else math.nan)
    return {c: float(np.nanmean(v)) if not np.all(np.isnan(v)) else math.nan for c, v in sorted(per_case.items())}


def _cost(results: dict[tuple, dict], model: StudyModel) -> dict[str, float]:
    runs = [r for (b, n, _, _), r in results.items() if (b, n) == (model.bundle, model.name)]
    return {"params": runs[0]["params"], "macs": runs[0]["macs"], "input_shape": runs[0]["input_shape"],
            "step_seconds": float(np.mean([r["step_seconds"] for r in runs])),
            "epoch_seconds": float(np.mean([r["epoch_seconds"] for r in runs])),
            "memory_bytes": runs[0]["memory_bytes"], "trainings": len(runs)}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if not arr.size:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def method_summary(method: str, models: list[StudyModel], results: dict[tuple, dict]) -> dict[str, Any]:
    """Per model of one method: scores and costs; the statistics of the found network against the baselines and
    the random control; its rank among the random architectures; the goal's checks."""
    mine = [m for m in models if m.method == method]
    rows = []
    scores = {}
    for m in mine:
        dice = _case_scores(results, m, "dice")
        scores[m.name] = dice
        row: dict[str, Any] = {"model": m.name, "kind": m.kind, **_cost(results, m)}
        for metric in METRICS:
            values = dice if metric == "dice" else _case_scores(results, m, metric)
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(list(values.values()))
        rows.append(row)
    found = next(m for m in mine if m.kind == "found")
    randoms = [m for m in mine if m.kind == "random"]
    cases = sorted(set.intersection(*(set(s) for s in scores.values())))
    cases = [c for c in cases if all(np.isfinite(scores[m.name][c]) for m in mine)]

    def column(name: str) -> list[float]:
        return [scores[name][c] for c in cases]

    control = ([float(np.median([scores[r.name][c] for r in randoms])) for c in cases] if randoms else None)
    others = {m.name: column(m.name) for m in mine if m.kind == "baseline"}
    if control is not None:
        others["random control (median)"] = control
    tests = compare_family(column(found.name), others, found.name) if cases else []
    table = [column(found.name), *others.values()]
    fried = friedman(np.asarray(table)) if cases else TestResult("Friedman", None, None, 0, "no paired cases")
    paired = {m.name: float(np.mean(column(m.name))) if cases else math.nan for m in mine}
    rank = rank_among(paired[found.name], [paired[r.name] for r in randoms]) if randoms else None
    return {"method": method, "rows": rows, "cases": cases, "tests": tests, "friedman": fried, "rank": rank,
            "goal": _goal(rows, found.name, tests, rank)}


def _row(rows: list[dict], name: str) -> dict[str, Any]:
    return next(r for r in rows if r["model"] == name)


def _goal(rows: list[dict], found: str, tests: list[TestResult], rank: Rank | None) -> dict[str, Any]:
    """The goal to measure against: within 1 Dice point of U-Net at no more than half its MACs, better than the
    median random architecture, p < 0.05 against both."""
    f = _row(rows, found)
    unet = next((r for r in rows if r["kind"] == "baseline" and r["model"].startswith("unet")), None)
    goal: dict[str, Any] = {}
    if unet is not None:
        goal["within_1_dice_point_of_unet"] = bool(f["dice_mean"] >= unet["dice_mean"] - 0.01)
        goal["at_most_half_the_macs_of_unet"] = bool(f["macs"] <= unet["macs"] / 2)
        test = next((t for t in tests if t.name.endswith(f"vs {unet['model']}")), None)
        goal["p_vs_unet"] = None if test is None else test.p_final
    if rank is not None:
        goal["above_the_random_median"] = rank.beats_median
        test = next((t for t in tests if t.name.endswith("random control (median)")), None)
        goal["p_vs_random_control"] = None if test is None else test.p_final
    return goal


def write_report(out: Path, ds: MSDDataset, split: StudySplit, models: list[StudyModel], results: dict[tuple, dict],
                 searchers: dict[str, Searcher], run: dict[str, Any]) -> dict[str, Any]:
    """Write ``results.csv``, ``summary.json``, ``report.md`` and the plots; returns the summary."""
    _write_csv(out / "results.csv", models, results)
    per_method = {name: method_summary(name, models, results) for name in searchers}
    plots = {"dice_vs_macs": _plot_dice_vs_macs(per_method, out / "plots" / "dice_vs_macs.png"),
             "boxplot": _plot_boxes(per_method, models, results, out / "plots" / "dice_per_model.png"),
             "progress": _plot_progress(searchers, out, out / "plots" / "search_progress.png")}
    summary = {
        "dataset": ds.name, "split": {"test_cases": len(split.test), "development_cases": len(split.dev),
                                      "n_folds": len(split.folds), "seed": split.seed},
        "pairing": PAIRING, **run,
        "methods": {name: {"rows": s["rows"], "cases": len(s["cases"]),
                           "friedman": _test_dict(s["friedman"]), "tests": [_test_dict(t) for t in s["tests"]],
                           "rank_among_random": None if s["rank"] is None else s["rank"].__dict__, "goal": s["goal"]}
                    for name, s in per_method.items()},
        "plots": {k: str(v.relative_to(out)) for k, v in plots.items() if v is not None},
    }
    write_json_atomic(out / "summary.json", summary)
    text = _markdown(summary, per_method, run)
    atomic_write(out / "report.md", lambda fh: fh.write(text.encode()))
    return summary


def _test_dict(t: TestResult) -> dict[str, Any]:
    return {"name": t.name, "statistic": t.statistic, "p": t.p, "p_holm": t.p_holm, "n": t.n, "note": t.note,
            "verdict": t.verdict(), "mean_difference": t.mean_difference}


def _write_csv(path: Path, models: list[StudyModel], results: dict[tuple, dict]) -> None:
    kinds = {(m.bundle, m.name): m for m in models}
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["method", "model", "kind", "seed", "fold", "case", "class", *METRICS, "params", "macs",
                     "step_seconds", "memory_bytes"])
    for (bundle, name, seed, fold), result in sorted(results.items()):
        methods = sorted({m.method for m in models if (m.bundle, m.name) == (bundle, name)})
        for case in result["per_case"]:
            for c, cls in enumerate(result["classes"]):
                writer.writerow([" ".join(methods), name, kinds[(bundle, name)].kind, seed, fold, case["case"], cls,
                                 *(f"{case[m][c]:.6g}" for m in METRICS), result["params"], result["macs"],
                                 f"{result['step_seconds']:.4g}", result["memory_bytes"]])
    atomic_write(path, lambda fh: fh.write(table.getvalue().encode()))


def _recipe_text(ident: dict[str, Any]) -> str:
    """How the study trained its models, in words."""
    if ident["recipe"] == "nnunet":
        return (f"every genotype exported to an nnU-Net plans variant and trained, as nnU-Net's own networks, by the "
                f"stock `nnUNetv2_train` with `{ident['nnunet_trainer']}`; nnU-Net sets no seed, so a seed is an "
                "independent repetition")
    return "each bundle's `train.json`"


def _fmt(mean: float, std: float, digits: int = 4) -> str:
    return "-" if not math.isfinite(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _markdown(summary: dict[str, Any], per_method: dict[str, dict], run: dict[str, Any]) -> str:
    ident = run["identity"]
    lines = [f"# Study: {summary['dataset']}", "", "```", run["command"], "```", "",
             f"- split: {summary['split']['test_cases']} held-out test cases (never seen by a search, a selection or "
             f"an early stop), {summary['split']['development_cases']} development cases in "
             f"{summary['split']['n_folds']} patient-grouped folds (`data/dev/splits_final.json`, nnU-Net's format)",
             f"- budget: `{ident['budget']}` (the bundles' {BUDGETS[ident['budget']]}), recipe `{ident['recipe']}` "
             f"({_recipe_text(ident)}); {ident['seeds']} training seed(s) x "
             f"{ident['folds']} fold(s) per model; {ident['random']} random architectures per method",
             f"- wall time: study {run['study_seconds'] / 60:.1f} min over {len(run['runs'])} invocation(s) "
             "(`timing.json`); searches "
             + ", ".join(f"{k} {v / 60:.1f} min" for k, v in run["search_seconds"].items())
             + f"; {run['trainings']} trainings {run['training_seconds'] / 60:.1f} min with "
             f"{run['runs'][-1]['parallel_jobs']} job(s) at once ({run['job_seconds'] / 60:.1f} min summed over the "
             "jobs)",
             f"- statistics: Friedman across the found network, the baselines and the random control; two-sided "
             f"Wilcoxon signed-rank tests of the found network against each, Holm-adjusted per method. Unit of "
             f"pairing: {PAIRING}.", ""]
    for name, s in per_method.items():
        lines += [f"## {name}", "", "| model | kind | Dice | IoU | HD95 (mm) | surface Dice | params | GMACs | "
                  "s/step | est. memory (GiB) | found minus it: Dice, Holm p |", "|" + "---|" * 11]
        tests = {t.name.split(" vs ", 1)[1]: t for t in s["tests"]}
        for r in sorted(s["rows"], key=lambda r: ({"found": 0, "baseline": 1, "random": 2}[r["kind"]], r["model"])):
            t = tests.get(r["model"])
            p = "" if t is None else _versus(t)
            lines.append(f"| {r['model']} | {r['kind']} | {_fmt(r['dice_mean'], r['dice_std'])} | "
                         f"{_fmt(r['iou_mean'], r['iou_std'])} | {_fmt(r['hd95_mean'], r['hd95_std'], 2)} | "
                         f"{_fmt(r['surface_dice_mean'], r['surface_dice_std'])} | {r['params']:,} | "
                         f"{r['macs'] / 1e9:.3f} | {r['step_seconds']:.3f} | {r['memory_bytes'] / 2**30:.2f} | {p} |")
        lines += ["", f"Scores: mean ± std over the {len(s['cases'])} test cases (each averaged over seeds and "
                  "folds). GMACs: one forward at the training input size.", "", "Statistics:", "",
                  f"- {s['friedman'].text()}"]
        lines += [f"- {t.text()}" for t in s["tests"]]
        if s["rank"] is not None:
            lines.append(f"- the found network's mean test Dice: {s['rank'].text()}")
        control = tests.get("random control (median)")
        if control is not None:
            lines.append(f"- against the random control (per case, the median of the random architectures): "
                         f"{_versus(control)}")
        lines += ["", "In plain words: " + _plain_words(name, s), ""]
    lines += ["## Plots", "", *(f"![{k}]({v})" for k, v in summary["plots"].items()), ""]
    return "\n".join(lines)


def _versus(t: TestResult) -> str:
    """``+0.062, p 0.039 (significant)``: the found network's mean Dice minus the other's, and the Holm p."""
    diff = "" if t.mean_difference is None else f"{t.mean_difference:+.3f}, "
    return f"{diff}-" if t.p_final is None else f"{diff}p {t.p_final:.3g} ({t.verdict()})"


def _plain_words(name: str, s: dict[str, Any]) -> str:
    words = []
    for t in s["tests"]:
        other = t.name.split(" vs ", 1)[1]
        if t.p_final is None:
            words.append(f"against {other} there is no test ({t.note})")
        elif t.significant:
            better = "better" if (t.mean_difference or 0) > 0 else "worse"
            words.append(f"the found network is significantly {better} than {other} (Holm p {t.p_final:.3g})")
        else:
            words.append(f"the difference to {other} is not significant (Holm p {t.p_final:.3g})")
    if s["rank"] is not None and not s["rank"].beats_median:
        words.append("the found network does not beat the median random architecture")
    return "; ".join(words) + "." if words else "no comparison."


def _plot_dice_vs_macs(per_method: dict[str, dict], path: Path) -> Path:
    fig = figure(figsize=(4.6 * len(per_method), 4.0))
    marker = {"found": ("*", 220), "baseline": ("s", 60), "random": ("o", 30)}
    for i, (name, s) in enumerate(per_method.items()):
        ax = fig.add_subplot(1, len(per_method), i + 1)
        rows = [r for r in s["rows"] if math.isfinite(r["dice_mean"])]
        for kind, (mk, size) in marker.items():
            pts = [r for r in rows if r["kind"] == kind]
            ax.scatter([r["macs"] / 1e9 for r in pts], [r["dice_mean"] for r in pts], marker=mk, s=size, label=kind)
        front = sorted((rows[j] for j in pareto_front([(r["dice_mean"], r["macs"]) for r in rows])),
                       key=lambda r: r["macs"])
        ax.plot([r["macs"] / 1e9 for r in front], [r["dice_mean"] for r in front], "k--", lw=1, label="Pareto front")
        for r in rows:
            if r["kind"] != "random":
                ax.annotate(r["model"], (r["macs"] / 1e9, r["dice_mean"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis overlap
        ax.set_xlabel("GMACs (one forward, log scale)")
        ax.set_ylabel("mean test Dice")
        ax.set_title(name)
        ax.legend(fontsize=7)
    return save_png(fig, path)


def _plot_boxes(per_method: dict[str, dict], models: list[StudyModel], results: dict[tuple, dict],
                path: Path) -> Path:
    fig = figure(figsize=(max(6.0, 0.5 * len(models) + 2), 3.6 * len(per_method)))
    for i, name in enumerate(per_method):
        ax = fig.add_subplot(len(per_method), 1, i + 1)
        mine = sorted((m for m in models if m.method == name),
                      key=lambda m: ({"found": 0, "baseline": 1, "random": 2}[m.kind], m.name))
        data = [[v for v in _case_scores(results, m, "dice").values() if math.isfinite(v)] for m in mine]
        ax.boxplot(data)
        ax.set_xticks(range(1, len(mine) + 1), [m.name.replace(f"{name}-", "") for m in mine])
        ax.set_ylabel("test Dice per case")
        ax.set_title(name)
        ax.tick_params(axis="x", labelrotation=40)
    fig.tight_layout()
    return save_png(fig, path)


def _plot_progress(searchers: dict[str, Searcher], out: Path, path: Path) -> Path | None:
    shown = [(name, s.progress(out / "searches" / name / "search")) for name, s in searchers.items()]
    shown = [(name, p) for name, p in shown if p is not None and p.values]
    if not shown:
        return None
    fig = figure(figsize=(4.6 * len(shown), 3.4))
    for i, (name, p) in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        ax.plot(p.steps, p.values, ".-")
        ax.set_xlabel(p.step, fontsize=8)
        ax.set_ylabel(p.value, fontsize=8)
        ax.set_title(f"{name} search")
    fig.tight_layout()
    return save_png(fig, path)
