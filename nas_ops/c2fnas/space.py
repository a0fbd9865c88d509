"""C2FNAS's macro space: a network is a path of cells over four resolution levels, and each cell's op.

After a stride-2 stem (level 0 = 1/2 of the input), cell ``i`` sits at level ``levels[i]`` in ``0..3`` (1/2, 1/4,
1/8, 1/16). A cell stays at the level of the previous one (or the stem's), goes one level down or one level up;
the path ends at level 0, where the head brings it back to full size. Every such path is a topology of the coarse
stage (the paper's "every path from the left-most to the right-most node"); an upsampling cell also takes the most
recent earlier output at the level it arrives at (the encoder-to-decoder skip).

Which set of paths the coarse stage searches is the ``topology_rule`` (the paper's set is not known to us):

- ``"all"``: every path (14,445 of 12 cells);
- ``"u_shaped"`` (default): down then up, never down again after going up (1,486): each path is one encoder and
  one decoder, the shape the paper's found network has;
- ``"u_deep"``: U-shaped and reaching 1/16 (924).

A topology's compact code is its levels as digits (``"001123221000"``); k-means groups topologies by the one-hot
encoding of their levels per cell (:func:`encode`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

from nas_ops.genotype import Genotype, SpecError, check_known_keys

NUM_CELLS = 12
NUM_LEVELS = 4
OPS = ("2d", "3d", "p3d")  # 3x3x1, 3x3x3, 3x3x1 then 1x1x3
TOPOLOGY_RULES = ("all", "u_shaped", "u_deep")
TopologyRule = Literal["all", "u_shaped", "u_deep"]
DEFAULT_SPEC = {"base_channels": 64, "stem_channels": 32}  # the paper's widths: 64/128/256/512 by level
Topology = tuple[int, ...]

# the network C2FNAS found on MSD Pancreas: its level path, and its ops (cells 6-7 as one reimplementation has them)
C2FNAS_PANC_LEVELS: Topology = (0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0)
C2FNAS_PANC_OPS = ("2d", "p3d", "3d", "3d", "3d", "3d", "2d", "3d", "p3d", "3d", "2d", "3d")


def path_problem(levels: Sequence[int], num_levels: int = NUM_LEVELS) -> str | None:
    """Why ``levels`` is not a path of the macro space (None when it is): levels in range, steps of at most one
    level from the stem's level 0, ending at level 0."""
    if not levels:
        return "needs at least one cell"
    prev = 0
    for i, level in enumerate(levels):
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level < num_levels:
            return f"levels[{i}] must be an integer in [0, {num_levels - 1}], got {level!r}"
        if abs(level - prev) > 1:
            return f"levels[{i}] jumps from level {prev} to {level}: a cell moves at most one level"
        prev = level
    if levels[-1] != 0:
        return f"the last cell is at level {levels[-1]}: the path must end at level 0, where the head is"
    return None


def is_u_shaped(levels: Sequence[int]) -> bool:
    """Down (or level) then up (or level): no cell goes down after a cell went up."""
    went_up = False
    prev = 0
    for level in levels:
        if level < prev:
            went_up = True
        elif level > prev and went_up:
            return False
        prev = level
    return True


def follows_rule(levels: Sequence[int], rule: TopologyRule, num_levels: int = NUM_LEVELS) -> bool:
    """Whether a valid path belongs to the set of ``rule``."""
    if rule == "all":
        return True
    if rule == "u_shaped":
        return is_u_shaped(levels)
    if rule == "u_deep":
        return is_u_shaped(levels) and max(levels) == num_levels - 1
    raise ValueError(f"unknown topology rule {rule!r} (known: {TOPOLOGY_RULES})")


@lru_cache(maxsize=16)
def enumerate_topologies(rule: TopologyRule = "u_shaped", num_cells: int = NUM_CELLS,
                         num_levels: int = NUM_LEVELS) -> tuple[Topology, ...]:
    """Every topology of ``rule``, in lexicographic order of the level paths."""
    out: list[Topology] = []

    def extend(path: list[int]) -> None:
        if len(path) == num_cells:
            if path[-1] == 0 and follows_rule(path, rule, num_levels):
                out.append(tuple(path))
            return
        prev = path[-1] if path else 0
        remaining = num_cells - len(path)
        for level in (prev - 1, prev, prev + 1):
            if 0 <= level < num_levels and level <= remaining - 1:  # must still be able to come back to 0
                extend([*path, level])

    extend([])
    return tuple(out)


def topology_code(levels: Sequence[int]) -> str:
    """The compact code of a topology: its levels as digits, e.g. ``"001123221000"``."""
    return "".join(str(level) for level in levels)


def encode(topologies: Sequence[Sequence[int]], num_levels: int = NUM_LEVELS) -> np.ndarray:
    """``(n, cells * num_levels)`` one-hot levels per cell: the vectors k-means groups topologies by."""
    levels = np.asarray(topologies, dtype=np.int64)
    return np.eye(num_levels, dtype=np.float64)[levels].reshape(len(levels), -1)


def cell_moves(levels: Sequence[int]) -> list[Literal["same", "down", "up"]]:
    """How each cell reaches its level from the previous cell (or the stem, at level 0)."""
    moves, prev = [], 0
    for level in levels:
        moves.append("same" if level == prev else "down" if level > prev else "up")
        prev = level
    return moves


def skip_sources(levels: Sequence[int]) -> list[int | None]:
    """Per cell, the index of the earlier output an upsampling cell adds (-1: the stem); None for other cells.

    The source is the most recent output at the level the cell arrives at: on the way down that level was passed
    (every path starts at level 0), so it always exists.
    """
    out: list[int | None] = []
    last_at = {0: -1}
    prev = 0
    for i, level in enumerate(levels):
        out.append(last_at[level] if level < prev else None)
        last_at[level] = i
        prev = level
    return out


def group_topologies(topologies: Sequence[Topology], n_groups: int, seed: int = 0) -> list[list[Topology]]:
    """k-means (scikit-learn) of the topologies' codes into ``n_groups`` groups of similar paths; groups are
    ordered by their first member, members in enumeration order, so the grouping is a function of its arguments."""
    from sklearn.cluster import KMeans

    if not 1 <= n_groups <= len(topologies):
        raise ValueError(f"n_groups must lie in [1, {len(topologies)}], got {n_groups}")
    labels = KMeans(n_clusters=n_groups, n_init=10, random_state=seed).fit_predict(encode(topologies))
    groups: dict[int, list[Topology]] = {}
    for topology, label in zip(topologies, labels, strict=True):
        groups.setdefault(int(label), []).append(tuple(topology))
    return sorted(groups.values(), key=lambda g: g[0])


# ----------------------------------------------------------------------------------------------------------
# genotypes of the space
# ----------------------------------------------------------------------------------------------------------


def validate(genotype: Genotype) -> None:
    """Check a C2FNAS spec: a valid level path, one known op per cell, positive widths, 3D."""
    spec = genotype.spec
    check_known_keys(spec, {"levels", "ops", *DEFAULT_SPEC})
    if genotype.spatial_dims != 3:
        raise SpecError("spatial_dims", f"C2FNAS networks are 3D, got {genotype.spatial_dims}")
    levels, ops = spec.get("levels"), spec.get("ops")
    if not isinstance(levels, list):
        raise SpecError("levels", f"must be a list of levels in [0, {NUM_LEVELS - 1}], got {levels!r:.60}")
    problem = path_problem(levels)
    if problem is not None:
        field = problem.split(" ", 1)[0] if problem.startswith("levels[") else "levels"
        raise SpecError(field, problem)
    if not isinstance(ops, list) or len(ops) != len(levels):
        raise SpecError("ops", f"must be a list of one op per cell ({len(levels)}), got {ops!r:.60}")
    for i, op in enumerate(ops):
        if op not in OPS:
            raise SpecError(f"ops[{i}]", f"must be one of {list(OPS)}, got {op!r}")
    for key in DEFAULT_SPEC:
        value = spec.get(key, DEFAULT_SPEC[key])
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(key, f"must be a positive integer, got {value!r}")


def c2fnas_genotype(levels: Sequence[int], ops: Sequence[str], in_channels: int = 1, out_channels: int = 2,
                    name: str = "c2fnas", provenance: dict | None = None, **spec) -> Genotype:
    """A C2FNAS genotype (defaults: the paper's widths)."""
    return Genotype(method="c2fnas", spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                    spec={"levels": list(levels), "ops": list(ops), **DEFAULT_SPEC, **spec}, name=name,
                    provenance=provenance or {})
