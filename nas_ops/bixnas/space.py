"""The BiO-Net++ search space: extraction stages, searching blocks, their candidate inputs, the BiX-Net spec.

Shared by the Phase-1 supernet (:mod:`nas_ops.bixnas.supernet`) and the searched BiX-Net
(:mod:`nas_ops.bixnas.network`):

- the graph: ``T`` iterations give ``2T`` extraction stages (enc, dec, enc, dec, ...) of ``LEVELS = 4``
  searching blocks each. Encoder level 0 is the finest (stem size, 1/2 of the input) and level 3 the
  coarsest; decoder level 0 is the coarsest (after the bridge) and level 3 the finest.
- candidate inputs of a searching block (``N = 5``): index 0 is the sequential input (encoder level 0: the
  stem; encoder level l: the max-pooled output of level l-1; decoder level 0: the upsampled bridge;
  decoder level l: the upsampled output of level l-1); index k in 1..4 is the output of level k-1 of the
  preceding extraction stage (an encoder reads the previous iteration's decoder, a decoder the same
  iteration's encoder), resized to the block's size. First-stage encoder blocks take index 0 only.
- the spec of a BiX-Net genotype (readable JSON, one list of input indices per block), its validation,
  and the dead-block analysis (blocks that cannot reach the output are pruned; a level whose convs are
  dead in every iteration is not built).
- the genotypes of the space: the authors' released BiX-Net, BiO-Net++ (every candidate), a searched one.

Spec example (T=1; the shipped genotypes have T=3)::

    {"iterations": 1, "width": 48, "stem_width": 32, "keep_dead_bridge": false,
     "stages": [{"kind": "enc", "iteration": 0, "inputs": [[0], [0], [0], [0]]},
                {"kind": "dec", "iteration": 0, "inputs": [[0, 4], [0, 3], [0, 2], [0, 1]]}]}
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas_ops.genotype import Genotype, SpecError

LEVELS = 4
NUM_CANDIDATES = LEVELS + 1  # N: the sequential input + the 4 outputs of the preceding stage
SEQUENTIAL = 0
ENC, DEC = "enc", "dec"
DEFAULT_WIDTH = 48
DEFAULT_STEM_WIDTH = 32
SPEC_KEYS = ("iterations", "width", "stem_width", "keep_dead_bridge", "stages")

# [stage][level] -> sorted tuple of input indices
SkipSets = tuple[tuple[tuple[int, ...], ...], ...]


# ----------------------------------------------------------------------------------------------------------
# the graph
# ----------------------------------------------------------------------------------------------------------


def stage_kind(stage: int) -> str:
    """``"enc"`` for even extraction stages, ``"dec"`` for odd ones."""
    return ENC if stage % 2 == 0 else DEC


def stage_name(stage: int) -> str:
    """Readable stage name: ``enc0, dec0, enc1, dec1, ...`` (kind and iteration)."""
    return f"{stage_kind(stage)}{stage // 2}"


def candidates(stage: int) -> tuple[int, ...]:
    """The candidate input indices of a searching block of ``stage`` (first-stage encoders: sequential only)."""
    return (SEQUENTIAL,) if stage == 0 else tuple(range(NUM_CANDIDATES))


def full_skip_sets(iterations: int) -> SkipSets:
    """Every block takes all its candidates: BiO-Net++ as a plain network (the supernet without selection)."""
    return tuple(tuple(candidates(s) for _ in range(LEVELS)) for s in range(2 * iterations))


def normalise_skip_sets(skip_sets: Sequence[Sequence[Sequence[int]]], iterations: int) -> SkipSets:
    """Validate ``[stage][level] -> input indices`` and return it as sorted tuples; raises ``ValueError``."""
    try:
        _check_stage_count(skip_sets, iterations, "skip_sets")
        for s, levels in enumerate(skip_sets):
            _check_inputs(s, levels, f"skip_sets[{s}]")
    except SpecError as err:
        raise ValueError(str(err)) from None
    return tuple(tuple(tuple(sorted(ins)) for ins in levels) for levels in skip_sets)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_stage_count(stages: Any, iterations: int, field: str) -> None:
    if not isinstance(stages, (list, tuple)):
        raise SpecError(field, f"expected a list of {2 * iterations} extraction stages, got {type(stages).__name__}")
    if len(stages) != 2 * iterations:
        raise SpecError(field, f"expected {2 * iterations} extraction stages (2 x iterations), got {len(stages)}")


def _check_inputs(stage: int, levels: Any, field: str) -> None:
    """One stage's ``[[indices of level 0], ..., [indices of level 3]]``; ``field`` names the list."""
    if not isinstance(levels, (list, tuple)) or len(levels) != LEVELS:
        raise SpecError(field, f"expected a list of {LEVELS} input lists (one per level), got {levels!r:.60}")
    for level, ins in enumerate(levels):
        where = f"{field}[{level}]"
        if not isinstance(ins, (list, tuple)):
            raise SpecError(where, f"expected a list of input indices, got {ins!r:.40}")
        if not ins:
            raise SpecError(where, "empty list: a searching block needs at least one input")
        seen: set[int] = set()
        for j, idx in enumerate(ins):
            if not _is_int(idx) or not 0 <= idx < NUM_CANDIDATES:
                problem = f"index out of range: {idx!r} (candidates are 0..{NUM_CANDIDATES - 1})"
                raise SpecError(f"{where}[{j}]", problem)
            if idx in seen:
                raise SpecError(f"{where}[{j}]", f"duplicate input index {idx}")
            seen.add(idx)
        if stage == 0 and list(ins) != [SEQUENTIAL]:
            raise SpecError(where, f"first-stage encoder blocks take the sequential input only: must be [0], got {ins}")


# ----------------------------------------------------------------------------------------------------------
# the spec of a BiX-Net genotype
# ----------------------------------------------------------------------------------------------------------


def make_spec(
    skip_sets: Sequence[Sequence[Sequence[int]]],
    width: int = DEFAULT_WIDTH,
    stem_width: int = DEFAULT_STEM_WIDTH,
    keep_dead_bridge: bool = False,
) -> dict[str, Any]:
    """The readable spec of a BiX-Net from its skip sets (e.g. Phase-1 candidate sets or a Phase-2 result)."""
    iterations = len(skip_sets) // 2
    sets = normalise_skip_sets(skip_sets, iterations)
    stages = [{"kind": stage_kind(s), "iteration": s // 2, "inputs": [list(ins) for ins in levels]}
              for s, levels in enumerate(sets)]
    return {"iterations": iterations, "width": width, "stem_width": stem_width,
            "keep_dead_bridge": keep_dead_bridge, "stages": stages}


def validate_spec(spec: dict[str, Any]) -> None:
    """Check a BiX-Net spec; a :class:`SpecError` names the field (e.g. ``stages[2].inputs[1][0]``)."""
    for key in spec:
        if key not in SPEC_KEYS:
            raise SpecError(key, f"unknown key (known: {list(SPEC_KEYS)})")
    for key in ("iterations", "stages"):
        if key not in spec:
            raise SpecError(key, "missing")
    iterations = spec["iterations"]
    if not _is_int(iterations) or iterations < 1:
        raise SpecError("iterations", f"must be a positive integer, got {iterations!r}")
    for key in ("width", "stem_width"):
        if key in spec and (not _is_int(spec[key]) or spec[key] < 1):
            raise SpecError(key, f"must be a positive integer, got {spec[key]!r}")
    if not isinstance(spec.get("keep_dead_bridge", False), bool):
        raise SpecError("keep_dead_bridge", f"must be true or false, got {spec['keep_dead_bridge']!r}")
    stages = spec["stages"]
    _check_stage_count(stages, iterations, "stages")
    for s, stage in enumerate(stages):
        field = f"stages[{s}]"
        if not isinstance(stage, dict):
            raise SpecError(field, f"expected an object with kind, iteration, inputs; got {stage!r:.40}")
        unknown = sorted(set(stage) - {"kind", "iteration", "inputs"})
        if unknown:
            raise SpecError(f"{field}.{unknown[0]}", "unknown key (known: ['inputs', 'iteration', 'kind'])")
        if stage.get("kind") != stage_kind(s):
            raise SpecError(f"{field}.kind", f"stage {s} must be '{stage_kind(s)}', got {stage.get('kind')!r}")
        if stage.get("iteration") != s // 2 or not _is_int(stage.get("iteration")):
            problem = f"stage {s} belongs to iteration {s // 2}, got {stage.get('iteration')!r}"
            raise SpecError(f"{field}.iteration", problem)
        if "inputs" not in stage:
            raise SpecError(f"{field}.inputs", "missing")
        _check_inputs(s, stage["inputs"], f"{field}.inputs")


def spec_skip_sets(spec: dict[str, Any]) -> SkipSets:
    """The skip sets ``[stage][level] -> sorted input indices`` of a validated spec."""
    return normalise_skip_sets([stage["inputs"] for stage in spec["stages"]], spec["iterations"])


# ----------------------------------------------------------------------------------------------------------
# dead-block analysis
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Liveness:
    """Which searching blocks reach the output, and in which iterations the bridge is read."""

    alive: tuple[tuple[bool, ...], ...]  # [stage][level]
    bridge: tuple[bool, ...]  # [iteration]: decoder level 0 of that iteration reads the bridge

    @property
    def iterations(self) -> int:
        return len(self.bridge)

    def dead(self) -> dict[str, tuple[int, ...]]:
        """Dead levels per stage name, e.g. ``{"enc0": (2, 3), ..., "dec2": ()}``."""
        return {stage_name(s): tuple(lv for lv, ok in enumerate(row) if not ok) for s, row in enumerate(self.alive)}

    def built_levels(self, kind: str) -> tuple[int, ...]:
        """Levels of ``kind`` whose (shared) convs are alive in at least one iteration."""
        first = 0 if kind == ENC else 1
        return tuple(lv for lv in range(LEVELS) if any(self.alive[s][lv] for s in range(first, len(self.alive), 2)))

    def blocks(self) -> tuple[tuple[int, int], ...]:
        """The alive ``(stage, level)`` pairs."""
        return tuple((s, lv) for s, row in enumerate(self.alive) for lv, ok in enumerate(row) if ok)


def analyse(skip_sets: SkipSets) -> Liveness:
    """Dead-block analysis: walk back from the output (last decoder, level 3) along the chosen inputs.

    A block is alive when the output depends on it. Index 0 of a block at level l > 0 needs level l-1 of
    the same stage; index 0 of decoder level 0 needs the bridge, hence encoder level 3 of the same
    iteration; index 0 of encoder level 0 is the stem; index k > 0 needs level k-1 of the preceding stage.
    """
    n = len(skip_sets)
    alive = [[False] * LEVELS for _ in range(n)]
    bridge = [False] * (n // 2)
    alive[n - 1][LEVELS - 1] = True
    for s in range(n - 1, -1, -1):
        for level in range(LEVELS - 1, -1, -1):
            if not alive[s][level]:
                continue
            for idx in skip_sets[s][level]:
                if idx != SEQUENTIAL:
                    alive[s - 1][idx - 1] = True
                elif level > 0:
                    alive[s][level - 1] = True
                elif stage_kind(s) == DEC:
                    bridge[s // 2] = True
                    alive[s - 1][LEVELS - 1] = True
    return Liveness(alive=tuple(tuple(row) for row in alive), bridge=tuple(bridge))


def describe(skip_sets: SkipSets, keep_dead_bridge: bool = False) -> str:
    """A readable table of the searching blocks: inputs per level, dead ones marked, what is built."""
    live = analyse(skip_sets)
    lines = [f"{'stage':<6}" + "".join(f"{'level ' + str(lv):<18}" for lv in range(LEVELS))]
    for s, levels in enumerate(skip_sets):
        cells = []
        for lv, ins in enumerate(levels):
            text = "[" + ",".join(map(str, ins)) + "]" + ("" if live.alive[s][lv] else " dead")
            cells.append(f"{text:<18}")
        lines.append(f"{stage_name(s):<6}" + "".join(cells))
    n_dead = sum(not ok for row in live.alive for ok in row)
    lines.append(f"dead blocks: {n_dead} of {len(skip_sets) * LEVELS}")
    for kind in (ENC, DEC):
        built = live.built_levels(kind)
        unbuilt = [lv for lv in range(LEVELS) if lv not in built]
        note = f" (not built: {', '.join(map(str, unbuilt))})" if unbuilt else ""
        lines.append(f"{kind} levels built: {', '.join(map(str, built)) or 'none'}{note}")
    used = [str(t) for t, b in enumerate(live.bridge) if b]
    bridge = f"bridge read in iterations: {', '.join(used) or 'none'}"
    if keep_dead_bridge and not all(live.bridge):
        bridge += " (kept and run in every iteration: keep_dead_bridge)"
    lines.append(bridge)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# genotypes of the space
# ----------------------------------------------------------------------------------------------------------

# the authors' released genotype (bixnet_gene.txt of github.com/tiangexiang/BiX-NAS), [stage][level] -> inputs
RELEASED_SKIP_SETS: tuple[tuple[tuple[int, ...], ...], ...] = (
    ((0,), (0,), (0,), (0,)),  # enc0
    ((2,), (0, 2), (1,), (1, 0)),  # dec0
    ((3, 1), (1, 0), (2, 1, 0), (0, 2, 3)),  # enc1
    ((3, 0), (2, 0), (1, 2), (0,)),  # dec1
    ((3, 2, 4), (4,), (0,), (0, 3)),  # enc2
    ((3,), (2, 0), (0, 2), (0,)),  # dec2
)


def validate(genotype: Genotype) -> None:
    """Check a BiX-Net spec (raises :class:`nas_ops.genotype.SpecError` naming the field)."""
    validate_spec(genotype.spec)


def bixnet_genotype(
    skip_sets: Sequence[Sequence[Sequence[int]]],
    spatial_dims: int = 2,
    in_channels: int = 3,
    out_channels: int = 2,
    name: str = "bixnet",
    provenance: dict[str, Any] | None = None,
    **spec: Any,
) -> Genotype:
    """A BiX-Net genotype from skip sets (``spec``: width, stem_width, keep_dead_bridge)."""
    return Genotype(method="bixnet", spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                    spec=make_spec(skip_sets, **spec), name=name, provenance=provenance or {})


def released_genotype(spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 2) -> Genotype:
    """The BiX-Net genotype the BiX-NAS authors released (MoNuSeg search, T=3, width 48)."""
    provenance = {
        "source": "authors' released genotype: bixnet_gene.txt of github.com/tiangexiang/BiX-NAS "
                  "(commit 133ffb1, first line '0.183_17234509824.000000' = their IoU_MACs)",
        "paper": "Wang et al., BiX-NAS: Searching Efficient Bi-directional Architecture for Medical Image "
                 "Segmentation, MICCAI 2021",
        "search": "Phase 1 + Phase 2 on MoNuSeg",
        "index_convention": "input 0 = sequential input; k in 1..4 = level k-1 of the preceding extraction stage",
        "reference_cost_at_3x512x512_1_class": "authors' code: 381,984 params used in the forward, 27,719,499,776 "
                                               "conv MACs (both with the dead bridge: keep_dead_bridge=true)",
    }
    return bixnet_genotype(RELEASED_SKIP_SETS, spatial_dims, in_channels, out_channels, name="bixnet_released",
                           provenance=provenance)


def bionet_pp_genotype(
    iterations: int = 3, spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 2
) -> Genotype:
    """BiO-Net++ as a plain network: every searching block averages all its candidate inputs."""
    provenance = {
        "paper": "Wang et al., BiX-NAS, MICCAI 2021: BiO-Net++, the Phase-1 supernet without selection matrices",
        "note": "every block takes all N=5 candidates (first-stage encoders: the sequential input only)",
    }
    sets: SkipSets = full_skip_sets(iterations)
    return bixnet_genotype(sets, spatial_dims, in_channels, out_channels, name="bionet_pp", provenance=provenance)


def random_skip_sets(rng: np.random.Generator, iterations: int, keep_sequential_last: bool = True) -> SkipSets:
    """A BiX-Net's skip sets drawn uniformly from the space the search reaches: every searching block takes a
    non-empty subset of at most ``N - 2`` of its candidates (Phase 1's argmax over the ``N - 2`` columns of a
    selection matrix picks at most that many), each such subset equally likely; with ``keep_sequential_last`` (the
    authors' sampler) the last decoder's blocks always take the sequential input."""
    sets = []
    for stage in range(2 * iterations):
        last = stage == 2 * iterations - 1
        options = [combo for k in range(1, NUM_CANDIDATES - 1) for combo in itertools.combinations(candidates(stage), k)
                   if not (keep_sequential_last and last) or SEQUENTIAL in combo]
        sets.append(tuple(options[int(rng.integers(len(options)))] for _ in range(LEVELS)))
    return tuple(sets)
