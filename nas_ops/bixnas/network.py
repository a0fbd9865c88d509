"""BiX-Net, the network BiX-NAS finds (method ``"bixnet"``), and the stage engine it shares with the supernet.

:class:`ExtractionNetwork` holds the stem, the searching blocks of given ``(stage, level)`` pairs, the bridge and
the head, and runs extraction stages; the Phase-1 supernet (:mod:`nas_ops.bixnas.supernet`) and BiX-Net both
derive from it. BiX-Net builds and runs only the searching blocks that reach the output; a level whose convs are
dead in every iteration has no convs at all, and the bridge exists only if some decoder level 0 reads it (unless
the spec sets ``keep_dead_bridge``, which reproduces the authors' code: it runs the bridge every iteration even
when its output is discarded). The spec format and the genotypes are in :mod:`nas_ops.bixnas.space`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas_ops.bixnas.space import (
    DEFAULT_STEM_WIDTH,
    DEFAULT_WIDTH,
    LEVELS,
    SEQUENTIAL,
    SkipSets,
    analyse,
    describe,
    normalise_skip_sets,
    spec_skip_sets,
    stage_kind,
    stage_name,
    validate,
)
from nas_ops.blocks import ConvUnit, channels_last_on_cpu, conv_type, max_pool, norm_layer
from nas_ops.genotype import Genotype
from nas_ops.registry import register_method


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


class BiXNet(ExtractionNetwork):
    """A searched BiX-Net; ``(B, C_in, *S) -> (B, K, *S)`` logits, 2D or 3D (sizes divisible by 32)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        skip_sets: Sequence[Sequence[Sequence[int]]],
        width: int = DEFAULT_WIDTH,
        stem_width: int = DEFAULT_STEM_WIDTH,
        keep_dead_bridge: bool = False,
    ) -> None:
        iterations = len(skip_sets) // 2
        sets = normalise_skip_sets(skip_sets, iterations)
        live = analyse(sets)
        super().__init__(spatial_dims, in_channels, out_channels, iterations, live.blocks(),
                         bridge=keep_dead_bridge or any(live.bridge), width=width, stem_width=stem_width,
                         keep_dead_bridge=keep_dead_bridge)
        self.skip_sets = sets
        self.liveness = live

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *S) -> (B, K, *S)`` logits."""
        return self.finish(self._run(self.begin(x), self.skip_sets, None, self.liveness.alive))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C_in, *S) ->`` logits and the last decoder stage's outputs, level 0 (``S/16``) to level 3
        (``S/2``), deepest first (``nas_ops.protocol``)."""
        state = self._run(self.begin(x), self.skip_sets, None, self.liveness.alive)
        return self.finish(state), [out for out in state.outputs if out is not None]

    def summary(self) -> str:
        """Readable table of the blocks per stage (inputs, dead ones marked) and the levels built."""
        return describe(self.skip_sets, self.keep_dead_bridge)


def build(genotype: Genotype) -> BiXNet:
    """The pruned BiX-Net of a genotype."""
    spec = genotype.spec
    return BiXNet(
        genotype.spatial_dims,
        genotype.in_channels,
        genotype.out_channels,
        spec_skip_sets(spec),
        width=spec.get("width", DEFAULT_WIDTH),
        stem_width=spec.get("stem_width", DEFAULT_STEM_WIDTH),
        keep_dead_bridge=spec.get("keep_dead_bridge", False),
    )


register_method("bixnet", validate=validate, build=build)
