"""The BiX-NAS search on the harness (:mod:`nas_ops.search_run`): Phase 1 then Phase 2 on one output folder,
resumable, each phase also alone (the run option ``phase``).

The harness opens the search (the ``search`` block checked as :class:`~nas_ops.bixnas.config.BiXNASConfig`, the
dataset validated once, the supernet's training step checked against ``memory_limit_gb``). 2D images are used
whole, 3D volumes are sliced along ``slice_axis``; ``out_channels`` is the number of classes with background, IoU
the mean foreground IoU. A killed search resumes from its last checkpoint when run again and ends with the same
genotype as an uninterrupted one; a finished one is reported, and one of another identity (settings, seed, fold,
the dataset's fingerprint) refused. Progress: tqdm bars, log lines, and ``search_log.jsonl``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nas_ops.bixnas import plots as figures
from nas_ops.bixnas.config import BiXNASConfig
from nas_ops.bixnas.context import LOG_FILENAME, PhaseContext, phase_identity
from nas_ops.bixnas.phase1 import RESULT_FILE as PHASE1_RESULT
from nas_ops.bixnas.phase1 import STATE_FILE as PHASE1_STATE
from nas_ops.bixnas.phase1 import run_phase1
from nas_ops.bixnas.phase2 import RESULT_FILE as PHASE2_RESULT
from nas_ops.bixnas.phase2 import STATE_FILE as PHASE2_STATE
from nas_ops.bixnas.phase2 import pruned_form, run_phase2
from nas_ops.bixnas.space import bixnet_genotype, random_skip_sets, spec_skip_sets
from nas_ops.bixnas.supernet import BiXSupernet
from nas_ops.data.geometry import DataGeometry
from nas_ops.data.msd import MSDDataset
from nas_ops.data.setup import prepare_fold
from nas_ops.engine.seeds import seed_everything
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.search_run import MemoryProbe, Progress, Searcher, SearchOutcome, SearchRun
from nas_ops.search_run import search as harness_search
from nas_ops.search_state import SearchState

log = logging.getLogger(__name__)


class BiXNAS(Searcher):
    """BiX-NAS for the harness: its config block, the supernet as memory probe, Phase 1 then Phase 2."""

    name = "BiX-NAS"
    config_class = BiXNASConfig
    bundle = "bixnas"

    def memory_probe(self, c: BiXNASConfig, ds: MSDDataset, prefix: str) -> MemoryProbe:
        """Phase 1's supernet training step (Phase 2 keeps one tail's graph at a time: it needs no more)."""
        return MemoryProbe(lambda: BiXSupernet(2, ds.in_channels, ds.num_classes, c.iterations, c.width,
                                               c.stem_width), (ds.in_channels, *c.spatial_size), c.batch_size,
                           "search#spatial_size", "the supernet's training")

    def run(self, run: SearchRun, phase: Literal["all", "phase1", "phase2"] = "all") -> SearchOutcome:
        """Run (or resume, or report) ``phase``: both phases, or one of them (Phase 2 alone needs a finished
        Phase 1 in the folder)."""
        if phase not in ("all", "phase1", "phase2"):
            raise InputError(run.source, "phase", f"must be one of 'all', 'phase1', 'phase2', got {phase!r}")
        out = run.output_dir
        phase1 = SearchState(out, PHASE1_STATE, PHASE1_RESULT, what="BiX-NAS Phase 1",
                             identity=phase_identity(run, phase1_only=True))
        phase2 = SearchState(out, PHASE2_STATE, PHASE2_RESULT, what="BiX-NAS Phase 2", identity=phase_identity(run))
        wanted = phase1 if phase == "phase1" else phase2
        for state in (phase1,) if phase == "phase1" else (phase1, phase2):
            state.inspect()  # refuses another identity before the data is prepared
        if wanted.finished:
            log.info("the search in %s has already finished (%s): nothing to run", out, wanted.result_path.name)
            return self._outcome(run, phase1.result, None if phase == "phase1" else wanted.result)
        if phase == "phase2" and not phase1.finished:
            raise InputError(phase1.path, "phase", "Phase 2 needs a finished Phase 1 in this output_dir: run with "
                             "phase 'phase1' (or 'all') first")
        c: BiXNASConfig = run.config  # type: ignore[assignment]
        geometry = DataGeometry(spatial_size=c.spatial_size, slice_axis=c.slice_axis,
                                keep_empty_fraction=c.keep_empty_fraction)
        data = prepare_fold(run.dataset_dir, 2, geometry, run.fold, run.n_folds, run.seed,
                            trusted=run.dataset.fingerprint)
        ctx = PhaseContext(run, data)
        seed_everything(run.seed)
        log.info("BiX-NAS search (%s) on %s fold %d/%d: %d training and %d validation images at %s, %d classes; "
                 "output in %s", phase, data.dataset.name, run.fold, run.n_folds, len(data.train), len(data.val),
                 "x".join(map(str, c.spatial_size)), ctx.out_channels, out)
        run.begin()
        phase1_result = phase1.result if phase == "phase2" else run_phase1(ctx, phase1)
        return self._outcome(run, phase1_result, None if phase == "phase1" else run_phase2(ctx, phase1_result,
                                                                                           phase2))

    def sample(self, c: BiXNASConfig, ds: MSDDataset, rng: np.random.Generator) -> tuple[Any, Genotype]:
        """A BiX-Net of the space (:func:`~nas_ops.bixnas.space.random_skip_sets`); networks that differ only in
        dead blocks are one network."""
        sets = random_skip_sets(rng, c.iterations, keep_sequential_last=c.phase2_sampler == "authors")
        genotype = bixnet_genotype(sets, 2, ds.in_channels, ds.num_classes, name="random", width=c.width,
                                   stem_width=c.stem_width, keep_dead_bridge=c.keep_dead_bridge)
        return pruned_form(sets), genotype

    def progress(self, output_dir: Path) -> Progress | None:
        """Phase 1's validation IoU per epoch, then the best IoU of each Phase-2 stage's networks per epoch."""
        path = output_dir / LOG_FILENAME
        if not path.is_file():
            return None
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ious = [max(r["val_iou"]) if isinstance(r["val_iou"], list) else r["val_iou"] for r in rows if "val_iou" in r]
        return Progress("epoch (Phase 1, then Phase 2's stages)", "validation IoU (Phase 2: best sample)",
                        list(range(1, len(ious) + 1)), ious)

    @staticmethod
    def _outcome(run: SearchRun, phase1: dict[str, Any], phase2: dict[str, Any] | None) -> SearchOutcome:
        """The summary (Phase-1 candidates and entropy; the selected network and the Pareto front) and, after
        Phase 2, the selected genotype: the first of the final Pareto front."""
        out = run.output_dir
        summary: dict[str, Any] = {
            "output_dir": str(out),
            "phase1": {"genotype": str(out / "phase1_genotype.json"), "scores": phase1["scores"],
                       "entropy_init": phase1["entropy_init"], "entropy_final": phase1["entropy_final"]},
        }
        if phase2 is None:
            return SearchOutcome(summary)
        sel = phase2["selected"]
        summary.update(selected=sel, pareto=phase2["pareto"], bionet_pp=phase2["bionet_pp"])
        log.info("selected BiX-Net: val IoU %.4f, Dice %.4f, %s MACs (BiO-Net++ %s), %s params", sel["val_iou"],
                 sel["val_dice"], f"{sel['macs']:,}", f"{phase2['bionet_pp']['macs']:,}", f"{sel['params']:,}")
        genotype = Genotype.load(out / sel["file"]).replace(name="bixnas_selected")
        c: BiXNASConfig = run.config  # type: ignore[assignment]

        def draw(folder: Path) -> None:
            figures.plot_architecture(spec_skip_sets(genotype.spec), folder / "architecture.png",
                                      title=f"selected BiX-Net: IoU {sel['val_iou']:.4f}, {sel['macs'] / 1e9:.3f} "
                                            f"GMACs, {sel['params']:,} params at "
                                            f"{'x'.join(map(str, sel['input_shape']))}",
                                      keep_dead_bridge=c.keep_dead_bridge)

        return SearchOutcome(summary, genotype, draw)


SEARCHER = BiXNAS()



def search(dataset_dir: str | Path, output_dir: str | Path, phase: Literal["all", "phase1", "phase2"] = "all",
           **kwargs: Any) -> dict[str, Any]:
    """The BiX-NAS search from Python: :func:`nas_ops.search_run.search` with ``phase`` as its run option."""
    return harness_search("bixnas", dataset_dir, output_dir, options={"phase": phase}, **kwargs)
