"""The fine stage: the op of every cell on the coarse stage's topology.

A single-path one-shot supernet (every cell holds the 2D, 3D and P3D ops) is trained with one uniformly drawn
op per cell per batch (:class:`nas_ops.engine.steps.SampledPathStep`), then an evolutionary search
(:mod:`nas_ops.c2fnas.evolution`) scores op assignments by validation Dice with the shared weights, under an
optional bound on MACs (per patch) and parameters. Both parts checkpoint; a killed stage resumes to the same ops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from nas_ops.c2fnas.config import C2FNASConfig
from nas_ops.c2fnas.evolution import Ops, evolve
from nas_ops.c2fnas.network import C2FNASNet
from nas_ops.c2fnas.one_shot import grid_of, score_paths, train_supernet
from nas_ops.c2fnas.space import OPS
from nas_ops.cost_model import count_macs, count_params
from nas_ops.data.setup import FoldData
from nas_ops.engine.seeds import seed_everything, stream_generator, stream_seed
from nas_ops.search_state import SearchState

log = logging.getLogger(__name__)
SUPERNET_STATE, SUPERNET_RESULT = "fine_supernet_state.pt", "fine_supernet_result.json"
EVOLUTION_STATE, EVOLUTION_RESULT = "evolution_state.pt", "evolution_result.json"


def path_cost(levels: Sequence[int], ops: Ops, in_channels: int, out_channels: int, cfg: C2FNASConfig
              ) -> tuple[int, int]:
    """``(parameters, MACs per patch)`` of the network of ``(levels, ops)``, counted on the meta device."""
    return _cost(tuple(levels), tuple(ops), in_channels, out_channels, cfg.base_channels, cfg.stem_channels,
                 tuple(cfg.patch_size))


@lru_cache(maxsize=4096)
def _cost(levels, ops, in_channels, out_channels, base, stem, patch) -> tuple[int, int]:
    with torch.device("meta"):
        net = C2FNASNet(in_channels, out_channels, levels, ops, base, stem)
    return count_params(net), count_macs(net, (in_channels, *patch), device="meta")


def run_fine(prepare: Callable[[], FoldData], cfg: C2FNASConfig, topology: Sequence[int], output_dir: Path,
             seed: int, device: torch.device, identity: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume, or report) the fine stage on ``topology``; ``prepare()`` gives the fold's data (called only
    when there is work to do). Returns the evolution's result with the supernet's losses (``"supernet_loss"``)."""
    levels = tuple(topology)
    supernet_state = SearchState(output_dir, SUPERNET_STATE, SUPERNET_RESULT, identity=identity,
                                 what="C2FNAS fine-stage supernet")
    evolution_state = SearchState(output_dir, EVOLUTION_STATE, EVOLUTION_RESULT, identity=identity,
                                  what="C2FNAS evolution")
    if evolution_state.inspect().finished:
        return {**evolution_state.result, "supernet_loss": supernet_state.result["loss"]}
    data = prepare()
    ds = data.dataset
    seed_everything(stream_seed(seed, 3_000))  # the supernet's initial weights
    grid = grid_of(cfg, ds.in_channels, ds.num_classes, [levels], OPS)
    n = len(levels)
    history = train_supernet(grid, lambda rng: (levels, tuple(OPS[int(i)] for i in rng.integers(len(OPS), size=n))),
                             data, cfg, cfg.fine_epochs, supernet_state, seed, 4_000, device,
                             f"fine stage supernet ({len(OPS)}^{n} op assignments)")
    if not supernet_state.finished:
        supernet_state.finish({"loss": [row["loss"] for row in history]})

    def feasible(ops: Ops) -> bool:
        if cfg.max_macs is None and cfg.max_params is None:
            return True
        params, macs = path_cost(levels, ops, ds.in_channels, ds.num_classes, cfg)
        return (cfg.max_macs is None or macs <= cfg.max_macs) and (cfg.max_params is None or params <= cfg.max_params)

    def fitness(candidates: Sequence[Ops]) -> list[float]:
        return score_paths(grid, [(levels, c) for c in candidates], data, cfg, device)

    result = evolve(fitness, feasible, n, cfg.population, cfg.generations, cfg.mutation_prob, cfg.crossover_prob,
                    stream_generator(seed, 5_000), evolution_state)
    return {**result, "supernet_loss": supernet_state.result["loss"]}
