"""Pareto fronts of (score to maximise, cost to minimise) pairs: non-dominated sorting and selection.

Method-agnostic: a point is any ``(score, cost)`` pair, e.g. (validation IoU, MACs). Point ``a`` dominates ``b``
when it is at least as good in both and strictly better in one; equal points do not dominate each other, so
duplicates share a front. Every function returns indices into the input, in a fixed order (score descending,
then cost ascending, then index), so results do not depend on hash or sort instabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

Point = tuple[float, float]  # (score: higher is better, cost: lower is better)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a = (score, cost)`` dominates ``b``: no worse in both, strictly better in at least one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def _ranked(points: Sequence[Sequence[float]], indices: Sequence[int]) -> list[int]:
    """``indices`` by score descending, then cost ascending, then index."""
    return sorted(indices, key=lambda i: (-points[i][0], points[i][1], i))


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (score descending, cost ascending); empty input gives ``[]``.

    A sweep by score: within a group of equal scores only the cheapest points can survive, and they do when they
    are strictly cheaper than every point of a higher score. O(n log n).
    """
    order = _ranked(points, range(len(points)))
    front: list[int] = []
    best_higher = float("inf")  # lowest cost among points of strictly higher score
    g = 0
    while g < len(order):
        score = float(points[order[g]][0])
        end = g
        while end < len(order) and float(points[order[end]][0]) == score:
            end += 1
        group = order[g:end]
        cheapest = float(points[group[0]][1])
        if cheapest < best_higher:
            front.extend(i for i in group if float(points[i][1]) == cheapest)
        best_higher = min(best_higher, cheapest)
        g = end
    return front


def non_dominated_sort(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Successive Pareto fronts (NSGA-II's non-dominated sorting): front 0, then the front of the rest, ..."""
    remaining = list(range(len(points)))
    fronts = []
    while remaining:
        sub = [points[i] for i in remaining]
        front = [remaining[j] for j in pareto_front(sub)]
        fronts.append(front)
        taken = set(front)
        remaining = [i for i in remaining if i not in taken]
    return fronts


def select_by_score(points: Sequence[Sequence[float]], indices: Sequence[int], k: int) -> list[int]:
    """At most ``k`` of ``indices`` with the highest score (ties: lower cost, then lower index)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return _ranked(points, indices)[:k]


def select_from_front(points: Sequence[Sequence[float]], k: int) -> tuple[list[int], list[int]]:
    """``(front, kept)``: the Pareto front of ``points`` and at most ``k`` of it with the highest score."""
    front = pareto_front(points)
    return front, select_by_score(points, front, k)
