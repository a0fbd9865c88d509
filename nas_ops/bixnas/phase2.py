"""BiX-NAS Phase 2: progressive evolutionary search of the skip sets, from the last extraction stage back.

The population starts as the Phase-1 architecture (every block takes its Phase-1 candidates). For each searched
stage ``s = 2T-1, ..., 1`` (first-stage encoders have no skips):

1. **sample**: ``phase2_samples`` distinct skip sets for stage ``s``, each combined with every retained
   architecture (architectures that differ only in dead blocks are the same network: kept once). Each block
   draws a random non-empty subset of its Phase-1 candidates (a size uniform in ``1..k``, then that many
   candidates, as the authors' sampler draws). ``phase2_sampler = "authors"`` (the default) adds the authors'
   special case for the last decoder: its blocks always take the sequential input 0, plus a random, possibly
   empty, subset of their other candidates. The paper's text has no such case (``"paper"``); without it a
   last-decoder level 3 that reads only a skip kills levels 0-2 of the last decoder and, stage by stage, most
   of the network, so Phase 2 has little left to search (seen on the demo data). The released BiX-Net has this
   form too (three of its four last-decoder blocks read input 0).
2. **train** the supernet ``phase2_epochs`` epochs (Adam, lr x ``phase2_lr_gamma`` every ``phase2_lr_step``
   epochs; weights at the stage start by ``phase2_init``: fresh as in the authors' code, the Phase-1 supernet's
   or the previous stage's) with the **shared head**: stages ``< s`` are the same for every sample, so per
   batch they run once (only the blocks some sample needs), and each sample runs only its tail (stages
   ``s..2T-1``, dead blocks pruned) and the output head. The sample losses are averaged; the tails are
   back-propagated one at a time into the head's outputs and the head once, which gives exactly the gradient
   of the averaged loss while holding one tail's activations at a time (:func:`shared_head_step`;
   :func:`naive_step` is the reference).
3. **score** every sample by (validation IoU, MACs of its pruned BiX-Net at the search's input size), keep the
   Pareto front and at most ``phase2_keep`` of it with the highest IoU; move to stage ``s-1``.

The checkpoint (``phase2_state.pt``) is written after every epoch and every stage. Outputs: ``pareto/*.json``
(the final Pareto front as genotypes, best IoU first: the first is the selected one, highest IoU on the final
front, ties to fewer MACs, which the search writes as ``genotype.json``), ``phase2_result.json`` and
``plots/phase2_pareto.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nas_ops.bixnas import plots
from nas_ops.bixnas.context import PhaseContext
from nas_ops.bixnas.network import ExtractionState
from nas_ops.bixnas.phase1 import WEIGHTS_FILE
from nas_ops.bixnas.space import (
    LEVELS,
    SEQUENTIAL,
    SkipSets,
    analyse,
    describe,
    full_skip_sets,
    normalise_skip_sets,
    stage_name,
)
from nas_ops.bixnas.supernet import BiXSupernet
from nas_ops.engine.loop import RunCheckpoint, RunEngine
from nas_ops.engine.seeds import seed_everything, stage_epoch_key, stream_generator, stream_seed
from nas_ops.errors import InputError
from nas_ops.pareto import select_from_front
from nas_ops.search_state import SearchState
from nas_ops.training.artifacts import verify_sha256

log = logging.getLogger(__name__)

STATE_FILE, RESULT_FILE = "phase2_state.pt", "phase2_result.json"
GENOTYPE_FILE, PARETO_DIR = "genotype.json", "pareto"  # the selected network: the search's genotype.json
PHASE2_SEED_OFFSET = 1_000_003  # names Phase 2's seed stream (nas_ops.engine.seeds.stream_seed)
SAMPLER_STREAM = 2  # names the sampler's generator (nas_ops.engine.seeds.stream_generator)
MAX_DRAWS_PER_SAMPLE = 500  # the authors' sampler gives up on a sample after 500 duplicate draws


# ----------------------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------------------


def searched_stages(iterations: int) -> list[int]:
    """The stages Phase 2 searches, in order: the last extraction stage back to stage 1."""
    return list(range(2 * iterations - 1, 0, -1))


def _keeps_sequential(stage: int, num_stages: int, sampler: str) -> bool:
    return sampler == "authors" and stage == num_stages - 1


def sample_block(rng: np.random.Generator, candidates: Sequence[int], keep_sequential: bool = False) -> tuple[int, ...]:
    """A random non-empty subset of a block's Phase-1 ``candidates``: its size uniform in ``1..k``, then the subset.

    ``keep_sequential``: the sequential input 0 plus a subset (size uniform in ``0..k'``) of the other candidates.
    """
    if keep_sequential:
        others = [c for c in candidates if c != SEQUENTIAL]
        k = int(rng.integers(0, len(others) + 1))
        picked = rng.choice(others, k, replace=False).tolist() if k else []
        return tuple(sorted({SEQUENTIAL, *picked}))
    k = int(rng.integers(1, len(candidates) + 1))
    return tuple(sorted(int(c) for c in rng.choice(list(candidates), k, replace=False)))


def stage_space_size(phase1_sets: SkipSets, stage: int, sampler: str) -> int:
    """How many distinct skip sets the sampler can draw for ``stage``."""
    size = 1
    for cands in phase1_sets[stage]:
        if _keeps_sequential(stage, len(phase1_sets), sampler):
            size *= 2 ** len([c for c in cands if c != SEQUENTIAL])
        else:
            size *= 2 ** len(cands) - 1
    return size


def draw_stage_samples(
    rng: np.random.Generator, phase1_sets: SkipSets, stage: int, n: int, sampler: str = "paper"
) -> list[tuple[tuple[int, ...], ...]]:
    """Up to ``n`` distinct skip sets for ``stage`` (fewer when the stage's space is smaller)."""
    keep_seq = _keeps_sequential(stage, len(phase1_sets), sampler)
    target = min(n, stage_space_size(phase1_sets, stage, sampler))
    drawn: list[tuple[tuple[int, ...], ...]] = []
    tries = 0
    while len(drawn) < target and tries < MAX_DRAWS_PER_SAMPLE * n:
        tries += 1
        sample = tuple(sample_block(rng, cands, keep_seq) for cands in phase1_sets[stage])
        if sample not in drawn:
            drawn.append(sample)
    return drawn


def pruned_form(sets: SkipSets) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """The skip sets with dead blocks emptied: two architectures with the same pruned form compute the same."""
    alive = analyse(sets).alive
    return tuple(tuple(ins if alive[s][lv] else () for lv, ins in enumerate(stage)) for s, stage in enumerate(sets))


def combine(population: Sequence[SkipSets], stage: int, samples: Sequence[tuple]) -> list[SkipSets]:
    """Every sample of ``stage`` in every retained architecture (sample-major, as the authors' loop), dropping
    those whose pruned form repeats an earlier one (they differ only in dead blocks: the same network)."""
    out, seen = [], set()
    for sample in samples:
        for net in population:
            sets = tuple(net[:stage]) + (sample,) + tuple(net[stage + 1:])
            key = pruned_form(sets)
            if key not in seen:
                seen.add(key)
                out.append(sets)
    return out


# ----------------------------------------------------------------------------------------------------------
# the shared head
# ----------------------------------------------------------------------------------------------------------


def head_blocks(networks: Sequence[SkipSets], stage: int) -> tuple[tuple[bool, ...], ...]:
    """``[stage][level]``: the head blocks (stages ``< stage``) that at least one of ``networks`` needs."""
    keep = [[False] * LEVELS for _ in networks[0]]
    for sets in networks:
        alive = analyse(sets).alive
        for s in range(stage):
            for lv in range(LEVELS):
                keep[s][lv] = keep[s][lv] or alive[s][lv]
    return tuple(tuple(row) for row in keep)


def run_head(model: BiXSupernet, image: torch.Tensor, networks: Sequence[SkipSets], stage: int) -> ExtractionState:
    """Stem and stages ``< stage``, shared by every network (their skip sets agree there): ctx once."""
    head_sets = networks[0]
    if any(tuple(net[:stage]) != tuple(head_sets[:stage]) for net in networks):
        raise ValueError(f"the networks differ before stage {stage}: no shared head")
    return model.run_stages(model.begin(image), head_sets, end_stage=stage, keep=head_blocks(networks, stage))


def run_tail(model: BiXSupernet, head: ExtractionState, sets: SkipSets) -> torch.Tensor:
    """One network's stages from ``head.next_stage`` on (dead blocks pruned) and the output head -> logits."""
    return model.finish(model.run_stages(head, sets, prune=True))


def tails_forward(
    model: BiXSupernet, image: torch.Tensor, networks: Sequence[SkipSets], stage: int
) -> list[torch.Tensor]:
    """``(B, C, *S)`` -> the ``(B, K, *S)`` logits of every network, the shared head ctx once."""
    head = run_head(model, image, networks, stage)
    return [run_tail(model, head, sets) for sets in networks]


def shared_head_step(
    model: BiXSupernet,
    image: torch.Tensor,
    label: torch.Tensor,
    networks: Sequence[SkipSets],
    stage: int,
    loss_fn: nn.Module,
) -> list[float]:
    """Forward and backward of the averaged loss of ``networks`` with the shared head; returns each loss.

    The head runs once; its output tensors are cut from the graph, each tail is back-propagated (loss / n) into
    them in turn, and the accumulated gradients are back-propagated through the head once. The parameter
    gradients equal those of ``mean(losses).backward()`` with one tail graph alive at a time.
    """
    head = run_head(model, image, networks, stage)
    roots = [head.stem, *head.outputs]
    leaves = [None if t is None else t.detach().requires_grad_(t.requires_grad) for t in roots]
    cut = ExtractionState(stem=leaves[0], outputs=tuple(leaves[1:]), next_stage=head.next_stage,
                          input_size=head.input_size)
    losses = []
    for sets in networks:
        loss = loss_fn(run_tail(model, cut, sets), label)
        (loss / len(networks)).backward()
        losses.append(float(loss.detach()))
    pairs = [(t, leaf.grad) for t, leaf in zip(roots, leaves, strict=True) if getattr(leaf, 'grad', None) is not None]
    if pairs:
        torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
    return losses


class SharedHeadStep:
    """The ctx engine's step for one Phase-2 stage: every network of ``networks`` trained on each batch with the
    shared head (:func:`shared_head_step`); returns their mean loss."""

    def __init__(self, model: BiXSupernet, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 networks: Sequence[SkipSets], stage: int) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.networks = networks
        self.stage = stage

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        losses = shared_head_step(self.model, image, label, self.networks, self.stage, self.loss_fn)
        self.optimizer.step()
        return sum(losses) / len(losses)


def naive_step(
    model: BiXSupernet, image: torch.Tensor, label: torch.Tensor, networks: Sequence[SkipSets], loss_fn: nn.Module
) -> list[float]:
    """The reference computation: every network runs whole; ``mean(losses).backward()``; returns each loss."""
    losses = [loss_fn(model.forward_fixed(image, sets), label) for sets in networks]
    torch.stack(losses).mean().backward()
    return [float(v.detach()) for v in losses]


# ----------------------------------------------------------------------------------------------------------
# the search
# ----------------------------------------------------------------------------------------------------------


def phase2_state(ctx: PhaseContext) -> SearchState:
    """The checkpoint of Phase 2 in the run's output folder."""
    return SearchState(ctx.output_dir, STATE_FILE, RESULT_FILE, identity=ctx.identity(), what="BiX-NAS Phase 2")


def _stage_optimiser(model: BiXSupernet, ctx: PhaseContext) -> tuple[torch.optim.Optimizer, Any]:
    c = ctx.config
    opt = torch.optim.Adam(model.weight_parameters(), lr=c.phase2_lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=c.phase2_lr_step, gamma=c.phase2_lr_gamma)
    return opt, sched


def _init_weights(model: BiXSupernet, ctx: PhaseContext, first_stage: bool, supernet_sha256: str | None) -> None:
    """Stage start, by ``phase2_init``: fresh weights (from torch's global RNG, which is checkpointed), the
    Phase-1 supernet's, or (``"continue"``) the previous stage's as they are (Phase 1's for the first stage)."""
    init = ctx.config.phase2_init
    if init == "continue" and not first_stage:
        return
    if init in ("phase1", "continue"):
        path = ctx.output_dir / WEIGHTS_FILE
        if not path.is_file():
            raise InputError(path, "phase2_init", f"{init!r} starts Phase 2 from Phase 1's supernet, which is not "
                             "in this output_dir: ctx Phase 1 here first, or use phase2_init 'fresh'")
        if supernet_sha256 is not None:
            verify_sha256(path, supernet_sha256, "supernet_sha256", "rerun Phase 1 in a new output_dir, or use "
                          "phase2_init 'fresh'")
        state = torch.load(path, map_location=ctx.device, weights_only=True)
    else:
        state = ctx.new_supernet().state_dict()
    model.load_state_dict(state)


def _as_sets(nested: Any, iterations: int) -> SkipSets:
    return normalise_skip_sets(nested, iterations)


def _as_lists(sets: SkipSets) -> list[list[list[int]]]:
    return [[list(ins) for ins in stage] for stage in sets]


def run_phase2(ctx: PhaseContext, phase1_result: dict[str, Any], state: SearchState | None = None) -> dict[str, Any]:
    """Run (or resume, or return the result of) Phase 2 in ``ctx.output_dir`` from Phase 1's candidate sets, each
    stage's epochs on the run engine with the shared-head step; ``state``: the checkpoint's handle.

    The checkpoint's loop state: the stage reached, its population, networks and best scores so far, the closed
    stages, the phase's log, and (owned by the engine) the current stage's epoch rows.
    """
    c = ctx.config
    state = state or phase2_state(ctx)
    # Phase 2 starts from its own seeds, so it does not depend on what Phase 1 left in the RNGs (whether it ran in
    # this process, was resumed, or ran in another one); a checkpoint then restores its own RNG states.
    phase2_seed = stream_seed(ctx.seed, PHASE2_SEED_OFFSET)
    seed_everything(phase2_seed)
    ctx.loader_rng.manual_seed(phase2_seed)
    model = ctx.new_supernet()
    opt, sched = _stage_optimiser(model, ctx)
    objects: dict[str, Any] = {"model": model, "optimiser": opt, "scheduler": sched}
    sampler_rng = stream_generator(ctx.seed, SAMPLER_STREAM)
    checkpoint = RunCheckpoint(state, objects, {"loader": ctx.loader_rng, "sampler": sampler_rng})
    resumed = checkpoint.resume()
    if resumed.finished:
        log.info("Phase 2 in %s already finished: selected genotype in %s", ctx.output_dir, GENOTYPE_FILE)
        return resumed.result
    phase1_sets = _as_sets(phase1_result["candidate_sets"], c.iterations)
    pos: dict[str, Any] = dict(resumed.state) if not resumed.fresh else {
        "stage_index": 0, "population": [_as_lists(phase1_sets)], "networks": None, "best": None, "stages": [],
        "log": [], "history": []}
    stages = searched_stages(c.iterations)
    phase1_history = phase1_result.get("history", [])
    if pos["stage_index"] or pos["history"]:
        log.info("Phase 2: resuming at stage %s (%d of %d), epoch %d/%d from %s",
                 stage_name(stages[min(pos["stage_index"], len(stages) - 1)]), pos["stage_index"] + 1, len(stages),
                 len(pos["history"]) + 1, c.phase2_epochs, state.path)
    for k in range(pos["stage_index"], len(stages)):
        stage = stages[k]
        population = [_as_sets(net, c.iterations) for net in pos["population"]]
        if pos["networks"] is None:  # stage start: sample, fresh optimiser
            samples = draw_stage_samples(sampler_rng, phase1_sets, stage, c.phase2_samples, c.phase2_sampler)
            pos["networks"] = [_as_lists(net) for net in combine(population, stage, samples)]
            pos["best"] = [{"val_iou": -1.0, "val_dice": 0.0, "epoch": 0} for _ in pos["networks"]]
            pos["history"] = []
            _init_weights(model, ctx, first_stage=k == 0, supernet_sha256=phase1_result.get("supernet_sha256"))
            opt, sched = _stage_optimiser(model, ctx)
            objects.update(optimiser=opt, scheduler=sched)
            log.info("Phase 2 stage %s (%d of %d): %d samples x %d retained = %d distinct architectures, %d epochs",
                     stage_name(stage), k + 1, len(stages), len(samples), len(population), len(pos["networks"]),
                     c.phase2_epochs)
        networks = [_as_sets(net, c.iterations) for net in pos["networks"]]
        engine = RunEngine(
            SharedHeadStep(model, ctx.loss_fn, opt, networks, stage),
            lambda epoch, stage=stage: ctx.train_batches(stage_epoch_key(stage, epoch)), ctx.device,
            scheduler=sched,
            validate=lambda epoch, networks=networks, stage=stage: _scores(ctx, model, networks, stage),
            checkpoint=checkpoint, desc=f"Phase 2 {stage_name(stage)}", num_batches=ctx.num_train_batches(),
        )

        def on_epoch(row: dict[str, Any]) -> dict[str, Any]:
            for i, (iou, dice) in enumerate(zip(row["val_iou"], row["val_dice"], strict=True)):
                if c.phase2_score == "last" or iou > pos["best"][i]["val_iou"]:
                    pos["best"][i] = {"val_iou": iou, "val_dice": dice, "epoch": row["epoch"]}
            pos["log"].append(row)
            ctx.write_log(phase1_history + pos["log"])
            return {k: v for k, v in pos.items() if k != "history"}

        tags = {"phase": 2, "stage": stage, "stage_name": stage_name(stage)}
        engine.fit(c.phase2_epochs, on_epoch, state=pos, tags=tags)
        record = _close_stage(ctx, stage, networks, pos["best"])
        pos["stages"].append(record)
        pos["log"].append({"phase": 2, "event": "stage_done", "stage": stage, "stage_name": stage_name(stage),
                           "front": record["front"], "kept": record["kept"],
                           "kept_scores": [[record["val_iou"][i], record["macs"][i]] for i in record["kept"]]})
        pos.update(stage_index=k + 1, networks=None, best=None, history=[],
                   population=[record["networks"][i] for i in record["kept"]])
        checkpoint.save(pos)
        ctx.write_log(phase1_history + pos["log"])
        if ctx.plots:
            plots.plot_pareto(pos["stages"], ctx.output_dir / "plots" / "phase2_pareto.png",
                              reference_macs=ctx.cost(full_skip_sets(c.iterations))[1])
    return _finish(ctx, state, pos, ctx.identity())


def _scores(ctx: PhaseContext, model: BiXSupernet, networks: list[SkipSets], stage: int) -> dict[str, Any]:
    """Validation IoU and Dice of every network of the stage (the shared head ctx once per batch)."""
    model.eval()
    scores = ctx.validate(lambda x: tails_forward(model, x, networks, stage), len(networks))
    return {"val_iou": [s[0] for s in scores], "val_dice": [s[1] for s in scores]}


def _close_stage(ctx: PhaseContext, stage: int, networks: list[SkipSets], best: list[dict[str, Any]]) -> dict[str, Any]:
    """Score the stage's architectures by (IoU, MACs), take the Pareto front and keep at most phase2_keep of it."""
    costs = [ctx.cost(net) for net in networks]
    ious = [b["val_iou"] for b in best]
    front, kept = select_from_front([(iou, macs) for iou, (_, macs) in zip(ious, costs, strict=True)],
                                    ctx.config.phase2_keep)
    log.info("Phase 2 stage %s: Pareto front of %d of %d architectures; kept %s", stage_name(stage), len(front),
             len(networks), ", ".join(f"#{i} (IoU {ious[i]:.4f}, {costs[i][1] / 1e9:.3f} GMACs)" for i in kept))
    return {"stage": stage, "stage_name": stage_name(stage), "networks": [_as_lists(n) for n in networks],
            "val_iou": ious, "val_dice": [b["val_dice"] for b in best], "best_epoch": [b["epoch"] for b in best],
            "params": [p for p, _ in costs], "macs": [m for _, m in costs], "front": front, "kept": kept}


def _finish(ctx: PhaseContext, state: SearchState, pos: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
    """Write the final Pareto set (``pareto/``, the selected network first); marks Phase 2 finished."""
    c = ctx.config
    last = pos["stages"][-1]
    front = last["front"]  # IoU descending, ties: fewer MACs first
    pareto_dir = ctx.output_dir / PARETO_DIR
    written: list[str] = []
    pareto = []
    for rank, i in enumerate(front):
        sets = _as_sets(last["networks"][i], c.iterations)
        scores = {"val_iou": last["val_iou"][i], "val_dice": last["val_dice"][i], "macs": last["macs"][i],
                  "params": last["params"][i], "input_shape": list(ctx.input_shape),
                  "iou_rule": f"{c.phase2_score} validation IoU over the stage's {c.phase2_epochs} epochs"}
        provenance = ctx.run.provenance(
            method="BiX-NAS: Phase 1 selection matrices, Phase 2 progressive evolution",
            paper="Wang et al., BiX-NAS: Searching Efficient Bi-directional Architecture for Medical Image "
                  "Segmentation, MICCAI 2021",
            scores=scores, pareto_rank=rank, pareto_size=len(front), kept=i in last["kept"])
        genotype = ctx.genotype(sets, f"bixnas_pareto{rank}", provenance)
        path = genotype.save(pareto_dir / f"pareto_{rank:02d}.json")
        written.append(path.name)
        pareto.append({"file": f"{PARETO_DIR}/{path.name}", **scores, "kept": i in last["kept"]})
        if rank == 0:
            selected_sets = sets
    for stale in pareto_dir.glob("pareto_*.json"):
        if stale.name not in written:
            stale.unlink()
    reference = ctx.cost(full_skip_sets(c.iterations))
    result = {"config": identity, "genotype": GENOTYPE_FILE, "selected": pareto[0], "pareto": pareto,
              "skip_sets": _as_lists(selected_sets),
              "bionet_pp": {"params": reference[0], "macs": reference[1]},
              "stages": pos["stages"], "history": pos["log"]}
    state.finish(result)
    log.info("Phase 2 done: %d architectures on the final Pareto front; selected (IoU %.4f, %s MACs vs BiO-Net++ "
             "%s):\n%s", len(front), pareto[0]["val_iou"], f"{pareto[0]['macs']:,}", f"{reference[1]:,}",
             describe(selected_sets, c.keep_dead_bridge))
    return result
