"""The BiO-Net++ search space: extraction stages, searching blocks, their candidate inputs, the BiX-Net spec.

Shared by the Phase-1 supernet (:mod:`nas_ops.bixnas.supernet`) and the searched BiX-Net
(:mod:`nas_ops.bixnas.bixnet`):

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
- the building blocks and the stage engine (:class:`ExtractionNetwork`) both networks run.

Spec example (T=1; the shipped genotypes have T=3)::

    {"iterations": 1, "width": 48, "stem_width": 32, "keep_dead_bridge": false,
     "stages": [{"kind": "enc", "iteration": 0, "inputs": [[0], [0], [0], [0]]},
                {"kind": "dec", "iteration": 0, "inputs": [[0, 4], [0, 3], [0, 2], [0, 1]]}]}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_ops.blocks import ConvUnit, channels_last_on_cpu, conv_type, max_pool, norm_layer
from nas_ops.genotype import SpecError

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
# building blocks and the stage engine
# ----------------------------------------------------------------------------------------------------------


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear (2D) / trilinear (3D) resize with ``align_corners=True``; a no-op when already at ``size``."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear" if x.dim() == 4 else "trilinear", align_corners=True)


class ConvPair(nn.Module):
    """The two 3x3 convs (no bias) of a level, shared by that level's blocks in every iteration."""

    def __init__(self, spatial_dims: int, width: int) -> None:
        super().__init__()
        conv = conv_type(spatial_dims)
        self.conv1 = conv(width, width, 3, padding=1, bias=False)
        self.conv2 = conv(width, width, 3, padding=1, bias=False)


class NormPair(nn.Module):
    """The two BatchNorms of one searching block (not shared across iterations)."""

    def __init__(self, spatial_dims: int, width: int) -> None:
        super().__init__()
        self.norm1 = norm_layer("batch", spatial_dims, width)
        self.norm2 = norm_layer("batch", spatial_dims, width)


@dataclass(frozen=True, eq=False)
class ExtractionState:
    """What the stages after ``next_stage`` need: the stem output and the last stage's level outputs.

    Immutable, so one head state can feed several tails (Phase 2's shared head).
    """

    stem: torch.Tensor  # (B, width, *S/2)
    outputs: tuple[torch.Tensor | None, ...]  # the LEVELS outputs of stage next_stage-1 (None: not computed)
    next_stage: int
    input_size: tuple[int, ...]


class ExtractionNetwork(nn.Module):
    """Stem, searching blocks of the given ``(stage, level)`` pairs, bridge, head and the stage engine.

    Subclasses decide which blocks exist (the supernet: all of them; BiX-Net: the alive ones) and how a
    block fuses its inputs (fixed skip sets: the average; the supernet in Phase 1: selection matrices).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        iterations: int,
        blocks: Sequence[tuple[int, int]],
        bridge: bool,
        width: int = DEFAULT_WIDTH,
        stem_width: int = DEFAULT_STEM_WIDTH,
        keep_dead_bridge: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.iterations = iterations
        self.num_stages = 2 * iterations
        self.width = width
        self.keep_dead_bridge = keep_dead_bridge
        self.total_stride = 2 ** (LEVELS + 1)  # stem pool, three encoder pools, the bridge's pool
        self.channels_last = spatial_dims == 2  # memory layout of the activations (see ``begin``)
        self.stem = nn.Sequential(
            ConvUnit(spatial_dims, in_channels, stem_width),
            ConvUnit(spatial_dims, stem_width, stem_width),
            ConvUnit(spatial_dims, stem_width, width),
            max_pool(spatial_dims),
        )
        blocks = sorted(set(blocks))
        conv_keys = sorted({f"{stage_kind(s)}_level{lv}" for s, lv in blocks})
        self.convs = nn.ModuleDict({key: ConvPair(spatial_dims, width) for key in conv_keys})
        self.norms = nn.ModuleDict({f"{stage_name(s)}_level{lv}": NormPair(spatial_dims, width) for s, lv in blocks})
        self.bridge = None
        if bridge:
            self.bridge = nn.Sequential(ConvUnit(spatial_dims, width, width), ConvUnit(spatial_dims, width, width))
        self.pool = max_pool(spatial_dims)
        self.head = nn.Sequential(
            ConvUnit(spatial_dims, width, stem_width),
            ConvUnit(spatial_dims, stem_width, stem_width),
            conv_type(spatial_dims)(stem_width, out_channels, 1, bias=False),
        )
        # [stage][level] -> (conv-pair key, norm-pair key): names, not modules, so replicas look up their own
        self._block_keys = [[(f"{stage_kind(s)}_level{lv}", f"{stage_name(s)}_level{lv}") for lv in range(LEVELS)]
                            for s in range(self.num_stages)]

    # -- the engine ------------------------------------------------------------------------------------------

    def begin(self, x: torch.Tensor) -> ExtractionState:
        """Run the stem: ``(B, C_in, *S) -> state`` with the stem output ``(B, width, *S/2)``, before stage 0.

        2D on the CPU runs in channels-last memory layout (every later op keeps it): a training step of BiX-Net,
        BiO-Net++ or the supernet takes 20-30 % less time than in channels-first layout. 3D and the GPU (not
        measured; PyTorch's default) stay channels-first. ``channels_last = False`` turns it off.
        """
        if self.channels_last:
            x = channels_last_on_cpu(x)
        return ExtractionState(stem=self.stem(x), outputs=(), next_stage=0, input_size=tuple(x.shape[2:]))

    def finish(self, state: ExtractionState) -> torch.Tensor:
        """Run the head on the last decoder's finest output: state after stage 2T-1 -> ``(B, K, *S)`` logits."""
        if state.next_stage != self.num_stages:
            raise ValueError(f"finish needs all {self.num_stages} extraction stages run, got {state.next_stage}")
        return self.head(resize(state.outputs[LEVELS - 1], state.input_size)).contiguous()

    def _run(
        self,
        state: ExtractionState,
        skip_sets: SkipSets,
        end_stage: int | None,
        alive: tuple[tuple[bool, ...], ...] | None,
        select: bool = False,
    ) -> ExtractionState:
        end = self.num_stages if end_stage is None else end_stage
        if not state.next_stage <= end <= self.num_stages:
            raise ValueError(f"end_stage must be in [{state.next_stage}, {self.num_stages}], got {end}")
        sizes = [tuple(state.stem.shape[2:])]
        for _ in range(LEVELS - 1):
            sizes.append(tuple(d // 2 for d in sizes[-1]))
        outs = state.outputs
        for s in range(state.next_stage, end):
            alive_s = None if alive is None else alive[s]
            outs = self._run_stage(s, skip_sets[s], state.stem, outs, sizes, alive_s, select)
        return ExtractionState(stem=state.stem, outputs=outs, next_stage=end, input_size=state.input_size)

    def _run_stage(
        self,
        stage: int,
        inputs: tuple[tuple[int, ...], ...],
        stem: torch.Tensor,
        prev: tuple[torch.Tensor | None, ...],
        sizes: list[tuple[int, ...]],
        alive: tuple[bool, ...] | None,
        select: bool,
    ) -> tuple[torch.Tensor | None, ...]:
        """One extraction stage: its blocks in level order; ``prev`` are the preceding stage's outputs."""
        enc = stage % 2 == 0
        out: list[torch.Tensor | None] = [None] * LEVELS
        bridge_out = self._bridge(prev, stem) if not enc and self.keep_dead_bridge else None
        for level in range(LEVELS):
            if alive is not None and not alive[level]:
                continue
            size = sizes[level] if enc else sizes[LEVELS - 1 - level]
            tensors = []
            for idx in inputs[level]:
                if idx != SEQUENTIAL:
                    tensors.append(resize(prev[idx - 1], size))
                elif enc:
                    tensors.append(stem if level == 0 else self.pool(out[level - 1]))
                elif level == 0:
                    if bridge_out is None:
                        bridge_out = self._bridge(prev, stem)
                    tensors.append(resize(bridge_out, size))
                else:
                    tensors.append(resize(out[level - 1], size))
            x = self._fuse(stage, level, tensors, select)
            conv_key, norm_key = self._block_keys[stage][level]
            pair, norms = self.convs[conv_key], self.norms[norm_key]
            x = F.relu(norms.norm1(pair.conv1(x)), inplace=True)
            out[level] = F.relu(norms.norm2(pair.conv2(x)), inplace=True)
        return tuple(out)

    def _bridge(self, enc_outputs: tuple[torch.Tensor | None, ...], stem: torch.Tensor) -> torch.Tensor:
        """Bridge on the max-pooled encoder level-3 output: ``(B, W, *s3) -> (B, W, *s3/2)``."""
        x = enc_outputs[LEVELS - 1]
        if x is None:  # only with keep_dead_bridge: the authors' dead blocks pass their sequential input on
            level = LEVELS - 1
            while level >= 0 and enc_outputs[level] is None:
                level -= 1
            x = stem if level < 0 else enc_outputs[level]
            for _ in range(LEVELS - 1 - level - (level < 0)):
                x = self.pool(x)
        return self.bridge(self.pool(x))

    def _fuse(self, stage: int, level: int, tensors: list[torch.Tensor], select: bool) -> torch.Tensor:
        """Element-wise average of the (resized) inputs of a block; no copy for a single input."""
        if len(tensors) == 1:
            return tensors[0]
        acc = tensors[0] + tensors[1]
        for t in tensors[2:]:
            acc.add_(t)
        return acc.div_(len(tensors))
