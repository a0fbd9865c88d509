"""The BiX-NAS search end to end: Phase 1 then Phase 2 on one output folder, resumable, each phase also alone.

``search(...)`` is what ``bundles/bixnas/configs/search.json`` runs (into ``<output_dir>/search``). Everything is
checked before anything is written: the run's keys and the ``search`` block (:class:`SearchConfig`, by the shared
config checker, naming the key), the dataset (MSD layout, via :func:`nas_ops.data.setup.prepare_fold`: 2D images
are used whole, 3D volumes are sliced along ``slice_axis``; ``out_channels`` is the number of classes with
background, IoU the mean foreground IoU), and that a search already in ``output_dir`` has the same identity
(settings, seed, fold and the dataset's fingerprint). A killed search resumes from its last checkpoint when run
again and ends with the same genotype as an uninterrupted one; a finished one is not run again, its result is
reported. Progress: tqdm bars, log lines, and ``<output_dir>/search_log.jsonl`` (one JSON object per epoch).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from nas_ops.bixnas.context import SearchConfig, SearchRun, search_identity
from nas_ops.bixnas.phase1 import RESULT_FILE as PHASE1_RESULT
from nas_ops.bixnas.phase1 import STATE_FILE as PHASE1_STATE
from nas_ops.bixnas.phase1 import run_phase1
from nas_ops.bixnas.phase2 import GENOTYPE_FILE, run_phase2
from nas_ops.bixnas.phase2 import RESULT_FILE as PHASE2_RESULT
from nas_ops.bixnas.phase2 import STATE_FILE as PHASE2_STATE
from nas_ops.bixnas.supernet import BiXSupernet
from nas_ops.bundle import entry, prepare_process
from nas_ops.config import NFolds, NonNegativeInt, PositiveFloat, PositiveInt, check_output_dir
from nas_ops.data.setup import dataset_identity, prepare_fold
from nas_ops.engine.seeds import seed_everything
from nas_ops.errors import InputError
from nas_ops.resources import check_network_memory
from nas_ops.search_state import SearchState

log = logging.getLogger(__name__)
CONFIG_SOURCE = "search config"


@entry
def search(
    dataset_dir: str | Path,
    output_dir: str | Path,
    config: dict[str, Any] | None = None,
    seed: NonNegativeInt = 0,
    device: str = "auto",
    fold: NonNegativeInt = 0,
    n_folds: NFolds = 5,
    phase: Literal["all", "phase1", "phase2"] = "all",
    num_workers: NonNegativeInt = 0,
    num_threads: PositiveInt | None = None,
    plots: bool = True,
    memory_limit_gb: PositiveFloat | None = None,
    config_source: str = CONFIG_SOURCE,
    **more: Any,
) -> dict[str, Any]:
    """Run the BiX-NAS search (``phase="all"``), or Phase 1 or Phase 2 alone; returns the phase's summary.

    ``config``: the ``search`` block (:class:`nas_ops.bixnas.context.SearchConfig`: ``phase1_epochs``,
    ``phase2_samples``, ...); its keys may also come as keyword arguments. Phase 2 alone needs a finished Phase 1
    in ``output_dir``. ``num_threads``: torch's CPU threads (None: torch's default; 1 on a shared small machine).
    A supernet whose training step would not fit in ``memory_limit_gb`` (default: 80 % of the device's) is refused
    before anything is written (Phase 2 keeps one tail's graph at a time, so it needs what Phase 1 needs).
    """
    source = config_source
    if fold >= n_folds:
        raise InputError(source, "fold", f"must be < n_folds = {n_folds}, got {fold}")
    cfg = SearchConfig.from_block(config, source, more)
    dev = prepare_process(device, num_threads, source)
    output_dir = check_output_dir(output_dir, source=source)
    dataset = dataset_identity(dataset_dir)
    phase1 = SearchState(output_dir, PHASE1_STATE, PHASE1_RESULT, what="BiX-NAS Phase 1",
                         identity=search_identity(cfg, seed, fold, n_folds, dataset, phase1_only=True))
    phase2 = SearchState(output_dir, PHASE2_STATE, PHASE2_RESULT, what="BiX-NAS Phase 2",
                         identity=search_identity(cfg, seed, fold, n_folds, dataset))
    done = _finished_result(output_dir, phase, phase1, phase2)
    if done is not None:
        return done
    if phase == "phase2" and not phase1.finished:
        raise InputError(phase1.path, "phase", "Phase 2 needs a finished Phase 1 in this output_dir: run with "
                         "phase 'phase1' (or 'all') first")
    data = prepare_fold(dataset_dir, 2, fold, n_folds, seed, cfg.spatial_size, cfg.slice_axis,
                        keep_empty_fraction=cfg.keep_empty_fraction)
    run = SearchRun(cfg, data, output_dir, seed, fold, n_folds, dev, dataset_dir, num_workers=num_workers,
                    plots=plots)
    check_network_memory(lambda: BiXSupernet(2, run.in_channels, run.out_channels, cfg.iterations, cfg.width,
                                             cfg.stem_width), (run.in_channels, *cfg.spatial_size), cfg.batch_size,
                         dev, memory_limit_gb, "search#spatial_size", source, what="the supernet's training",
                         batch_key="search#batch_size")
    seed_everything(seed)
    log.info("BiX-NAS search (%s) on %s fold %d/%d: %d training and %d validation images at %s, %d classes; "
             "output in %s", phase, data.dataset.name, fold, n_folds, len(data.train), len(data.val),
             "x".join(map(str, cfg.spatial_size)), run.out_channels, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    phase1_result = phase1.result if phase == "phase2" else run_phase1(run, phase1)
    if phase == "phase1":
        return _summary(output_dir, phase1_result, None)
    return _summary(output_dir, phase1_result, run_phase2(run, phase1_result, phase2))


def _finished_result(output_dir: Path, phase: str, phase1: SearchState, phase2: SearchState) -> dict | None:
    """The summary of an already finished search (or phase) of this identity; None if there is none. A checkpoint
    of another identity is refused here, before the dataset is prepared, naming what changed."""
    states = [phase1] if phase == "phase1" else [phase1, phase2]
    for state in states:
        state.inspect()  # refuses another identity
    wanted = states[-1]
    if not wanted.finished:
        return None
    log.info("the search in %s has already finished (%s): nothing to run", output_dir, wanted.result_path.name)
    if phase == "phase1":
        return _summary(output_dir, wanted.result, None)
    return _summary(output_dir, phase1.result, wanted.result)


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
