"""The coarse stage: which topology (level path) the network has.

The topologies of the ``topology_rule`` are grouped by k-means on their codes (:func:`nas_ops.c2fnas.space.
group_topologies`); each group trains one weight-sharing supernet (its members' cells, every cell running
``coarse_op``) for ``coarse_epochs`` with one uniformly drawn member per batch, at the deployment patch; then its
members are scored by validation Dice with the shared weights. The best topology of all groups is the stage's
result. Groups are independent jobs of the execution layer (``backend``: local, Ray, subprocesses); each keeps its
own checkpoint under ``coarse/group_<k>/``, so a killed stage resumes every unfinished group where it stopped and
reports the finished ones.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from nas_ops.c2fnas.config import C2FNASConfig
from nas_ops.c2fnas.one_shot import fold_data, grid_of, score_paths, train_supernet
from nas_ops.c2fnas.space import Topology, enumerate_topologies, group_topologies, topology_code
from nas_ops.engine.execution import Job, executor
from nas_ops.engine.seeds import seed_everything, stream_generator, stream_seed
from nas_ops.process import resolve_device
from nas_ops.search_run import SearchRun
from nas_ops.search_state import SearchState

log = logging.getLogger(__name__)
STATE_FILE, RESULT_FILE = "coarse_state.pt", "coarse_result.json"
GROUPS_DIR = "coarse"


def coarse_groups(cfg: C2FNASConfig, seed: int) -> list[list[Topology]]:
    """The groups of topologies the stage trains (a function of the rule, the group count and the seed)."""
    return group_topologies(enumerate_topologies(cfg.topology_rule, cfg.num_cells), cfg.coarse_groups, seed)


def scored_members(members: list[Topology], cfg: C2FNASConfig, seed: int, group: int) -> list[Topology]:
    """The members of a group scored after its training: all, or a seeded sample of ``coarse_scored``."""
    if cfg.coarse_scored is None or cfg.coarse_scored >= len(members):
        return list(members)
    pick = stream_generator(seed, 10_000 + group).choice(len(members), size=cfg.coarse_scored, replace=False)
    return [members[i] for i in sorted(pick.tolist())]


def train_group(dataset_dir: str, output_dir: str, group: int, members: list[list[int]], config: dict,
                seed: int, fold: int, n_folds: int, device: str, identity: dict,
                fingerprint: str | None = None) -> dict[str, Any]:
    """Job: train the supernet of one group and score its members; returns (and keeps in the group's folder)
    ``{"group", "scores": {code: dice}, "best", "best_dice", "loss"}``. JSON arguments only."""
    cfg = C2FNASConfig.from_values(config)
    topologies = [tuple(m) for m in members]
    folder = Path(output_dir) / GROUPS_DIR / f"group_{group:02d}"
    state = SearchState(folder, "state.pt", "result.json", what=f"C2FNAS coarse group {group}",
                        identity={**identity, "group": group, "members": [topology_code(t) for t in topologies]})
    done = state.inspect()
    if done.finished:
        return done.result
    dev = resolve_device(device)
    data = fold_data(dataset_dir, cfg, seed, fold, n_folds, trusted=fingerprint)
    ops = (cfg.coarse_op,) * cfg.num_cells
    seed_everything(stream_seed(seed, 1_000 + group))  # the group's initial weights
    grid = grid_of(cfg, data.dataset.in_channels, data.dataset.num_classes, topologies, (cfg.coarse_op,))
    folder.mkdir(parents=True, exist_ok=True)
    history = train_supernet(grid, lambda rng: (topologies[int(rng.integers(len(topologies)))], ops), data, cfg,
                             cfg.coarse_epochs, state, seed, 2_000 + group, dev,
                             f"coarse group {group} ({len(topologies)} topologies)")
    scored = scored_members(topologies, cfg, seed, group)
    dice = score_paths(grid, [(t, ops) for t in scored], data, cfg, dev)
    scores = {topology_code(t): d for t, d in zip(scored, dice, strict=True)}
    best = max(scores, key=lambda code: scores[code])  # first of equals, in enumeration order
    result = {"group": group, "size": len(topologies), "scores": scores, "best": best, "best_dice": scores[best],
              "loss": [row["loss"] for row in history]}
    state.finish(result)
    log.info("coarse group %d: best topology %s, Dice %.4f of %d scored", group, best, scores[best], len(scored))
    return result


def run_coarse(run: SearchRun, identity: dict) -> dict[str, Any]:
    """Run (or resume, or report) the coarse stage of an opened search; its groups are jobs of the run's execution
    layer. Returns ``{"topology", "code", "dice", "groups"}``."""
    cfg: C2FNASConfig = run.config  # type: ignore[assignment]
    output_dir = run.output_dir
    state = SearchState(output_dir, STATE_FILE, RESULT_FILE, identity=identity, what="C2FNAS coarse stage")
    done = state.inspect()
    if done.finished:
        log.info("the coarse stage in %s has finished: topology %s", output_dir, done.result["code"])
        return done.result
    groups = coarse_groups(cfg, run.seed)
    log.info("coarse stage: %d topologies (%s) in %d groups of %s", sum(map(len, groups)), cfg.topology_rule,
             len(groups), [len(g) for g in groups])
    common = {"dataset_dir": str(run.dataset_dir), "output_dir": str(output_dir), "config": cfg.as_dict(),
              "seed": run.seed, "fold": run.fold, "n_folds": run.n_folds, "device": str(run.device),
              "identity": identity, "fingerprint": run.dataset.fingerprint}
    jobs = [Job("nas_ops.c2fnas.coarse.train_group", tag=k, log=str(output_dir / GROUPS_DIR / f"group_{k:02d}.log"),
                kwargs={**common, "group": k, "members": [list(t) for t in members]})
            for k, members in enumerate(groups)]
    run.begin()
    (output_dir / GROUPS_DIR).mkdir(parents=True, exist_ok=True)
    results: dict[int, dict] = {}
    e = run.execution
    with executor(e.backend, e.parallel_jobs, e.ray_address) as run_jobs:
        for job, res in run_jobs(jobs):
            results[job.tag] = res
    ordered = [results[k] for k in range(len(groups))]
    best = max(ordered, key=lambda r: r["best_dice"])  # first of equals: the lowest group
    result = {"topology": [int(c) for c in best["best"]], "code": best["best"], "dice": best["best_dice"],
              "group": best["group"], "groups": ordered}
    state.finish(result)
    return result
