"""BiX-Net: the network BiX-NAS finds, built from a genotype with its dead blocks pruned (method ``"bixnet"``).

Only the searching blocks that reach the output are built and run; a level whose convs are dead in every
iteration has no convs at all, and the bridge exists only if some decoder level 0 reads it (unless the spec
sets ``keep_dead_bridge``, which reproduces the authors' code: it runs the bridge every iteration even when
its output is discarded). The spec format is in :mod:`nas_ops.bixnas.space`; a BiX-Net whose blocks take
all their candidates is BiO-Net++ as a plain network (:func:`bionet_pp_genotype`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nas_ops.bixnas.space import (
    DEFAULT_STEM_WIDTH,
    DEFAULT_WIDTH,
    ExtractionNetwork,
    SkipSets,
    analyse,
    describe,
    full_skip_sets,
    make_spec,
    normalise_skip_sets,
    spec_skip_sets,
    validate_spec,
)
from nas_ops.genotype import Genotype
from nas_ops.registry import register_method

# the authors' released genotype (bixnet_gene.txt of github.com/tiangexiang/BiX-NAS), [stage][level] -> inputs
RELEASED_SKIP_SETS: tuple[tuple[tuple[int, ...], ...], ...] = (
    ((0,), (0,), (0,), (0,)),  # enc0
    ((2,), (0, 2), (1,), (1, 0)),  # dec0
    ((3, 1), (1, 0), (2, 1, 0), (0, 2, 3)),  # enc1
    ((3, 0), (2, 0), (1, 2), (0,)),  # dec1
    ((3, 2, 4), (4,), (0,), (0, 3)),  # enc2
    ((3,), (2, 0), (0, 2), (0,)),  # dec2
)


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


def validate(genotype: Genotype) -> None:
    """Check a BiX-Net spec (raises :class:`nas_ops.genotype.SpecError` naming the field)."""
    validate_spec(genotype.spec)


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


register_method("bixnet", validate=validate, build=build)
