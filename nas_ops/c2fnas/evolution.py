"""The fine stage's evolutionary search over the op of every cell (2D, 3D, P3D) on a fixed topology.

A population of op assignments; each generation the better half are parents, children come from uniform crossover
of two parents (probability ``crossover_prob``, else a copy of one) then a per-cell mutation (``mutation_prob``)
to another op; the next population is the best ``population`` of parents and children (elitist, so the best
fitness never falls). Fitness is the supernet's validation Dice of the assignment, computed once per assignment;
an assignment outside the bound (MACs, parameters) is never scored and is drawn again. The loop checkpoints after
every generation (population, cache, history and the generator), so a killed search continues to the same result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nas_ops.c2fnas.space import OPS
from nas_ops.search_state import SearchState

log = logging.getLogger(__name__)
Ops = tuple[str, ...]
MAX_DRAWS = 1000  # draws per child before a generation gives up on finding a new feasible assignment


def random_ops(rng: np.random.Generator, num_cells: int) -> Ops:
    """One op per cell, uniformly."""
    return tuple(OPS[int(i)] for i in rng.integers(len(OPS), size=num_cells))


def mutate(rng: np.random.Generator, ops: Ops, prob: float) -> Ops:
    """Each cell, with probability ``prob``, takes one of the other ops."""
    out = list(ops)
    for i, op in enumerate(ops):
        if rng.random() < prob:
            others = [o for o in OPS if o != op]
            out[i] = others[int(rng.integers(len(others)))]
    return tuple(out)


def crossover(rng: np.random.Generator, a: Ops, b: Ops) -> Ops:
    """Uniform crossover: each cell's op from ``a`` or ``b`` with equal chance."""
    return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b, strict=True))


def evolve(
    fitness: Callable[[Sequence[Ops]], list[float]],
    feasible: Callable[[Ops], bool],
    num_cells: int,
    population: int,
    generations: int,
    mutation_prob: float,
    crossover_prob: float,
    rng: np.random.Generator,
    state: SearchState,
) -> dict[str, Any]:
    """Run (or resume) the evolution; ``fitness`` scores a list of assignments at once (one pass over the data).

    Returns ``{"best": ops, "best_fitness", "history": [{"generation", "best", "mean", "evaluated"}], "cache"}``.
    """
    resumed = state.resume(generators={"evolution": rng})
    if resumed.finished:
        return resumed.result
    loop = resumed.state
    cache: dict[str, float] = dict(loop.get("cache", {}))
    history: list[dict[str, Any]] = list(loop.get("history", []))
    pop: list[Ops] = [tuple(p) for p in loop.get("population", [])]
    if history:
        log.info("evolution: resuming at generation %d/%d from %s", len(history), generations, state.path)

    def score(candidates: list[Ops]) -> None:
        new = [c for c in dict.fromkeys(candidates) if ",".join(c) not in cache]
        if new:
            for c, f in zip(new, fitness(new), strict=True):
                cache[",".join(c)] = float(f)

    def draw(make: Callable[[], Ops], taken: set[Ops]) -> Ops | None:
        for _ in range(MAX_DRAWS):
            c = make()
            if c not in taken and feasible(c):
                return c
        return None

    def rank(candidates: Sequence[Ops]) -> list[Ops]:
        return sorted(dict.fromkeys(candidates), key=lambda c: -cache[",".join(c)])  # stable: ties keep order

    def checkpoint(generation: int) -> None:
        state.save({"generation": generation, "population": [list(p) for p in pop], "cache": cache,
                    "history": history}, generators={"evolution": rng})

    if not pop:  # generation 0: a random feasible population
        taken: set[Ops] = set()
        while len(pop) < population:
            c = draw(lambda: random_ops(rng, num_cells), taken)
            if c is None:
                break
            pop.append(c)
            taken.add(c)
        if not pop:
            raise ValueError("no op assignment satisfies the bound: raise max_macs / max_params")
        score(pop)
        pop = rank(pop)
        history.append(_row(0, pop, cache, len(cache)))
        checkpoint(0)
        log.info("evolution generation 0: best %.4f, mean %.4f", history[-1]["best"], history[-1]["mean"])
    for generation in range(len(history), generations + 1):
        parents = pop[: max(2, len(pop) // 2)]
        taken = set(pop)
        children: list[Ops] = []

        while len(children) < population:
            c = draw(lambda parents=parents: _child(rng, parents, crossover_prob, mutation_prob), taken)
            if c is None:
                break
            children.append(c)
            taken.add(c)
        score(children)
        pop = rank([*pop, *children])[:population]
        history.append(_row(generation, pop, cache, len(cache)))
        checkpoint(generation)
        log.info("evolution generation %d: best %.4f, mean %.4f (%d assignments scored)", generation,
                 history[-1]["best"], history[-1]["mean"], len(cache))
    best = pop[0]
    result = {"best": list(best), "best_fitness": cache[",".join(best)], "history": history,
              "population": [list(p) for p in pop], "cache": cache}
    state.finish(result)
    return result


def _child(rng: np.random.Generator, parents: Sequence[Ops], crossover_prob: float, mutation_prob: float) -> Ops:
    """A parent, crossed with another with probability ``crossover_prob``, then mutated."""
    a = parents[int(rng.integers(len(parents)))]
    if rng.random() < crossover_prob:
        a = crossover(rng, a, parents[int(rng.integers(len(parents)))])
    return mutate(rng, a, mutation_prob)


def _row(generation: int, pop: Sequence[Ops], cache: dict[str, float], evaluated: int) -> dict[str, Any]:
    values = [cache[",".join(p)] for p in pop]
    return {"generation": generation, "best": max(values), "mean": float(np.mean(values)), "evaluated": evaluated}
