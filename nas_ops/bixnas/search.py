"""The BiX-NAS search end to end: Phase 1 then Phase 2 on one output folder, resumable, each phase also alone.

``search(...)`` is what ``bundles/bixnas/configs/search.json`` runs. Everything is checked before anything is
written: the config values (an :class:`~nas_ops.errors.InputError` names the key), the dataset (MSD layout, via
:func:`nas_ops.data.setup.prepare_fold`: 2D images are used whole, 3D volumes are sliced along ``slice_axis``;
``out_channels`` is the number of classes with background, IoU the mean foreground IoU), and that a search already
in ``output_dir`` was started with the same settings. A killed search resumes from its last checkpoint when run
again and ends with the same genotype as an uninterrupted one; a finished one is not run again, its result is
reported. Progress: tqdm bars, log lines, and ``<output_dir>/search_log.jsonl`` (one JSON object per epoch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import set_determinism

from nas_ops.bixnas.context import CONFIG_SOURCE, SearchConfig, SearchRun, check_run_args
from nas_ops.bixnas.phase1 import phase1_state, run_phase1
from nas_ops.bixnas.phase2 import GENOTYPE_FILE, phase2_state, run_phase2
from nas_ops.data.setup import prepare_fold
from nas_ops.errors import InputError
from nas_ops.search_state import SearchState, refuse_other_settings
from nas_ops.training.loop import resolve_device

log = logging.getLogger(__name__)


def search(
    dataset_dir: str | Path,
    output_dir: str | Path,
    seed: int = 0,
    device: str = "auto",
    fold: int = 0,
    n_folds: int = 5,
    phase: str = "all",
    spatial_size: Sequence[int] = (512, 512),
    num_workers: int = 0,
    num_threads: int | None = None,
    plots: bool = True,
    **config: Any,
) -> dict[str, Any]:
    """Run the BiX-NAS search (``phase="all"``), or Phase 1 or Phase 2 alone; returns the phase's summary.

    ``config``: the budgets and choices of :class:`nas_ops.bixnas.context.SearchConfig` (``phase1_epochs``,
    ``phase2_samples``, ...). Phase 2 alone needs a finished Phase 1 in ``output_dir``. ``num_threads``: torch's
    CPU threads for this process (None: torch's default; 1 avoids oversubscription on a shared small machine).
    """
    check_run_args(phase, fold, n_folds, seed)
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                    or num_threads < 1):
        raise InputError(CONFIG_SOURCE, "num_threads", f"must be a positive integer or null, got {num_threads!r}")
    cfg = SearchConfig.from_values(spatial_size=spatial_size, **config)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    output_dir = Path(output_dir)
    identity = {"seed": seed, "fold": fold, "n_folds": n_folds}
    done = _finished_result(output_dir, phase, {**identity, **cfg.as_dict()}, {**identity, **cfg.phase1_dict()})
    if done is not None:
        return done
    data = prepare_fold(dataset_dir, 2, fold, n_folds, seed, cfg.spatial_size, cfg.slice_axis,
                        keep_empty_fraction=cfg.keep_empty_fraction)
    run = SearchRun(cfg, data, output_dir, seed, fold, n_folds, resolve_device(device), dataset_dir,
                    num_workers=num_workers, plots=plots)
    _check_resumable(run, phase)
    set_determinism(seed)
    log.info("BiX-NAS search (%s) on %s fold %d/%d: %d training and %d validation images at %s, %d classes; "
             "output in %s", phase, data.dataset.name, fold, n_folds, len(data.train), len(data.val),
             "x".join(map(str, cfg.spatial_size)), run.out_channels, output_dir)
    phase1 = phase1_state(run)
    if phase == "phase2" and not phase1.finished:
        raise InputError(phase1.path, "phase", "Phase 2 needs a finished Phase 1 in this output_dir: run with "
                         "phase 'phase1' (or 'all') first")
    output_dir.mkdir(parents=True, exist_ok=True)
    phase1_result = phase1.result if phase == "phase2" else run_phase1(run)
    if phase == "phase1":
        return _summary(output_dir, phase1_result, None)
    return _summary(output_dir, phase1_result, run_phase2(run, phase1_result))


def _finished_result(output_dir: Path, phase: str, identity: dict, phase1_identity: dict) -> dict[str, Any] | None:
    """The summary of an already finished search (or phase) with these settings; None if there is none."""
    p1 = SearchState(output_dir, "phase1_state.pt", "phase1_result.json")
    p2 = SearchState(output_dir, "phase2_state.pt", "phase2_result.json")
    wanted = p1 if phase == "phase1" else p2
    if not wanted.finished:
        return None
    result = wanted.result
    refuse_other_settings(result.get("config", {}), phase1_identity if phase == "phase1" else identity, wanted.path)
    log.info("the search in %s has already finished (%s): nothing to run", output_dir, wanted.result_path.name)
    if phase == "phase1":
        return _summary(output_dir, result, None)
    return _summary(output_dir, p1.result, result)


def _check_resumable(run: SearchRun, phase: str) -> None:
    """Refuse an output_dir holding a search started with other settings, before anything is written."""
    checks = [(phase1_state(run), run.identity(phase1_only=True))]
    if phase != "phase1":
        checks.append((phase2_state(run), run.identity()))
    for state, identity in checks:
        if state.exists():
            saved = state.result if state.finished else state.load(restore_rng=False)
            refuse_other_settings(saved.get("config", {}), identity, state.path)


def _summary(output_dir: Path, phase1: dict[str, Any], phase2: dict[str, Any] | None) -> dict[str, Any]:
    """What a search returns and logs: the Phase-1 candidates and entropy, and the selected genotype."""
    out: dict[str, Any] = {
        "output_dir": str(output_dir),
        "phase1": {"genotype": str(output_dir / "phase1_genotype.json"), "scores": phase1["scores"],
                   "entropy_init": phase1["entropy_init"], "entropy_final": phase1["entropy_final"]},
    }
    if phase2 is not None:
        out["genotype"] = str(output_dir / GENOTYPE_FILE)
        out["selected"] = phase2["selected"]
        out["pareto"] = phase2["pareto"]
        out["bionet_pp"] = phase2["bionet_pp"]
        sel = phase2["selected"]
        log.info("selected BiX-Net: val IoU %.4f, Dice %.4f, %s MACs (BiO-Net++ %s), %s params -> %s",
                 sel["val_iou"], sel["val_dice"], f"{sel['macs']:,}", f"{phase2['bionet_pp']['macs']:,}",
                 f"{sel['params']:,}", out["genotype"])
    return out

