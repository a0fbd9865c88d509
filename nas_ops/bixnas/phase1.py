"""BiX-NAS Phase 1: train the supernet's weights and selection matrices jointly, then extract candidate sets.

One Adam optimiser over every parameter (weights and selection matrices), the Gumbel-softmax forward in
training and validation alike, ``lr / (1 + lr_decay * epoch)`` per epoch (the authors' Keras-style decay; the
paper's "decay 3e-3"). Every epoch logs the loss, validation IoU/Dice and the mean entropy of each block's
selection probabilities (softmax over the N candidate rows of every column; ``ln 5 = 1.609`` is uniform), and
checkpoints everything through :class:`~nas_ops.search_state.SearchState` (``phase1_state.pt``).

At the end the argmax of every column gives each searching block its candidate set (``k <= N-2`` inputs):

- ``phase1_genotype.json``: those candidate sets as a BiX-Net genotype (the paper's "Phase1" row);
- ``phase1_selection.json``: per block the selection probabilities, candidates and entropy (for plots);
- ``phase1_supernet.pt``: the trained supernet weights (Phase 2 may start from them);
- ``phase1_result.json``: the summary (history included); ``plots/phase1_*.png``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from nas_ops.atomic import write_json_atomic
from nas_ops.bixnas import plots
from nas_ops.bixnas.context import PhaseContext, save_state_dict
from nas_ops.bixnas.space import LEVELS, SkipSets, describe, stage_name
from nas_ops.bixnas.supernet import BiXSupernet
from nas_ops.engine.loop import RunCheckpoint, RunEngine
from nas_ops.engine.steps import SupervisedStep
from nas_ops.search_state import SearchState
from nas_ops.training.artifacts import sha256_file

log = logging.getLogger(__name__)

STATE_FILE, RESULT_FILE = "phase1_state.pt", "phase1_result.json"
GENOTYPE_FILE, SELECTION_FILE, WEIGHTS_FILE = "phase1_genotype.json", "phase1_selection.json", "phase1_supernet.pt"


def phase1_state(ctx: PhaseContext) -> SearchState:
    """The checkpoint of Phase 1 in the run's output folder."""
    return SearchState(ctx.output_dir, STATE_FILE, RESULT_FILE, identity=ctx.identity(phase1_only=True),
                       what="BiX-NAS Phase 1")


def selection_probabilities(model: BiXSupernet) -> dict[str, torch.Tensor]:
    """Per searching block ``"dec0_level2"``: softmax over the rows of its selection matrix, ``(N, N-2)``."""
    return {name: torch.softmax(m.detach().float().cpu(), dim=0) for name, m in model.selection.items()}


def block_entropies(model: BiXSupernet) -> dict[str, float]:
    """Per searching block, the mean over columns of the entropy (nats) of its selection probabilities."""
    out = {}
    for name, p in selection_probabilities(model).items():
        out[name] = float(-(p * torch.log(p.clamp_min(1e-12))).sum(dim=0).mean())
    return out


def mean_entropy(model: BiXSupernet) -> float:
    """Mean of :func:`block_entropies` over all searching blocks."""
    values = list(block_entropies(model).values())
    return sum(values) / len(values)


def make_optimiser(model: BiXSupernet, ctx: PhaseContext) -> tuple[torch.optim.Optimizer, Any]:
    """One Adam over weights and selection matrices, with the per-epoch inverse-time learning-rate decay.

    Two parameter groups: the weights (``phase1_lr``, ``phase1_weight_decay``) and the selection matrices
    (``phase1_selection_lr``, default the same lr; no weight decay, which would pull them towards uniform).
    """
    c = ctx.config
    selection_lr = c.phase1_lr if c.phase1_selection_lr is None else c.phase1_selection_lr
    groups = [{"params": model.weight_parameters(), "lr": c.phase1_lr, "weight_decay": c.phase1_weight_decay},
              {"params": list(model.selection.parameters()), "lr": selection_lr, "weight_decay": 0.0}]
    opt = torch.optim.Adam(groups)
    decay = c.phase1_lr_decay
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 / (1.0 + decay * epoch))
    return opt, sched


def run_phase1(ctx: PhaseContext, state: SearchState | None = None) -> dict[str, Any]:
    """Run (or resume, or return the result of) Phase 1 in ``ctx.output_dir`` on the run engine; ``state``: the
    checkpoint's handle (default :func:`phase1_state`)."""
    c = ctx.config
    state = state or phase1_state(ctx)
    model = ctx.new_supernet()
    opt, sched = make_optimiser(model, ctx)

    def validate(epoch: int) -> dict[str, Any]:
        model.eval()
        (iou, dice), = ctx.validate(lambda x: [model(x)], 1)
        entropies = block_entropies(model)
        return {"val_iou": iou, "val_dice": dice, "mean_entropy": sum(entropies.values()) / len(entropies),
                "block_entropy": entropies}

    engine = RunEngine(SupervisedStep(model, ctx.loss_fn, opt), ctx.train_batches, ctx.device, scheduler=sched,
                       validate=validate, checkpoint=RunCheckpoint(state, {"model": model, "optimiser": opt,
                                                                           "scheduler": sched},
                                                                   {"loader": ctx.loader_rng}),
                       desc="Phase 1", num_batches=ctx.num_train_batches())
    resumed = engine.resume()
    if resumed.finished:
        log.info("Phase 1 in %s already finished: candidate sets in %s", ctx.output_dir, GENOTYPE_FILE)
        return resumed.result
    entropy_init = resumed.state["entropy_init"] if resumed.state else mean_entropy(model)
    if resumed.fresh:
        log.info("Phase 1: %d epochs, %d training batches each, supernet of %d searching blocks",
                 c.phase1_epochs, ctx.num_train_batches(), len(model.selection))

    def on_epoch(row: dict[str, Any]) -> dict[str, Any]:
        ctx.write_log(engine.history)
        return {"entropy_init": entropy_init}

    history = engine.fit(c.phase1_epochs, on_epoch, state=resumed.state, tags={"phase": 1})
    return _finish(ctx, state, model, history, ctx.identity(phase1_only=True), entropy_init)


def _finish(
    ctx: PhaseContext, state: SearchState, model: BiXSupernet, history: list[dict], identity: dict, entropy_init: float
) -> dict:
    """Extract the candidate sets and write the Phase-1 outputs; marks Phase 1 finished."""
    sets: SkipSets = model.candidate_sets()
    params, macs = ctx.cost(sets)
    scores = {"val_iou": history[-1]["val_iou"], "val_dice": history[-1]["val_dice"], "params": params,
              "macs": macs, "input_shape": list(ctx.input_shape)}
    provenance = ctx.run.provenance(method="BiX-NAS Phase 1 (selection matrices; candidate sets = argmax per column)",
                                    scores=scores)
    genotype = ctx.genotype(sets, "bixnas_phase1", provenance)
    genotype.save(ctx.output_dir / GENOTYPE_FILE)
    probs = selection_probabilities(model)
    entropies = block_entropies(model)
    selection = {"candidates_order": "row i = candidate input i (0: sequential; k: level k-1 of the preceding "
                                     "extraction stage); columns: the N-2 picks",
                 "ln_n": math.log(probs[next(iter(probs))].shape[0]),
                 "blocks": {name: {"stage": s, "level": lv, "probabilities": probs[name].tolist(),
                                   "candidates": list(sets[s][lv]), "entropy": entropies[name]}
                            for s in range(1, len(sets)) for lv in range(LEVELS)
                            for name in [f"{stage_name(s)}_level{lv}"]},
                 "entropy_init": entropy_init, "entropy_history": [row["mean_entropy"] for row in history]}
    write_json_atomic(ctx.output_dir / SELECTION_FILE, selection)
    save_state_dict(model, ctx.output_dir / WEIGHTS_FILE)
    supernet_sha256 = sha256_file(ctx.output_dir / WEIGHTS_FILE)  # Phase 2 verifies it before starting from it
    if ctx.plots:
        plots.plot_selection(selection, ctx.output_dir / "plots" / "phase1_selection.png")
        plots.plot_phase1_history(history, ctx.output_dir / "plots" / "phase1_history.png", entropy_init)
    last = history[-1]["mean_entropy"]
    result = {"config": identity, "candidate_sets": [[list(ins) for ins in stage] for stage in sets],
              "scores": scores, "entropy_init": entropy_init, "entropy_final": last, "history": history,
              "supernet_sha256": supernet_sha256}
    state.finish(result)
    log.info("Phase 1 done: mean selection entropy %.4f -> %.4f; candidate sets (%s MACs at %s):\n%s",
             entropy_init, last, f"{macs:,}", "x".join(map(str, ctx.input_shape)), describe(sets))
    return result


