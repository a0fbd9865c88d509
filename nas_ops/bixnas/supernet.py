"""The BiO-Net++ supernet of BiX-NAS Phase 1 (selection matrices) with the shared-head forward of Phase 2.

Every searching block of stages 1..2T-1 owns a selection matrix ``M`` in ``R^{N x (N-2)}`` (rows: candidate
inputs in the order of :mod:`nas_ops.bixnas.space`, index 0 the sequential input; the authors' code orders
the rows levels first and the sequential input last). Each forward draws ``gumbel_softmax`` over the rows of
every column (a soft one-hot per column, the same in training and inference) and fuses the candidates as
the authors' code does::

    picks_j = argmax_i M[i, j]                         # column j's pick (hard, no gradient)
    w_j     = 1 / #{j' : picks_j' == picks_j}          # columns with the same pick share one vote
    y       = (sum_j w_j * sum_i g[i, j] * c_i + x) / (#unique(picks) + 1)

with ``g = gumbel_softmax(M, dim=0)``, ``c_i`` the resized candidates and ``x = c_0`` the sequential input.
It is computed as one weighted sum ``sum_i a_i c_i`` with ``a = g @ w`` (no stacked candidate tensor).
Phase 1's result is ``argmax`` per column: ``k <= N-2`` unique inputs per block (:meth:`candidate_sets`).

Forward APIs (``skip_sets``: ``[stage][level] -> input indices``, see :mod:`nas_ops.bixnas.space`):

- ``forward(x)``: Phase 1, every block fuses all its candidates through its selection matrix.
- ``forward_fixed(x, skip_sets)``: a fixed skip set per block, blocks that cannot reach the output skipped
  (BiO-Net++ as a plain net with ``full_skip_sets``; a Phase-2 sample).
- Phase 2's shared head: ``head = net.run_stages(net.begin(x), skip_sets, end_stage=s)`` once, then per
  sample ``net.finish(net.run_stages(head, sample_skip_sets, prune=True))`` (stages ``s..2T-1`` and the head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_ops.bixnas.network import ExtractionNetwork, ExtractionState
from nas_ops.bixnas.space import (
    DEFAULT_STEM_WIDTH,
    DEFAULT_WIDTH,
    LEVELS,
    NUM_CANDIDATES,
    SEQUENTIAL,
    SkipSets,
    analyse,
    candidates,
    full_skip_sets,
    normalise_skip_sets,
    stage_name,
)


class BiXSupernet(ExtractionNetwork):
    """BiO-Net++ with a selection matrix per searching block; ``(B, C_in, *S) -> (B, K, *S)``.

    2D or 3D from the same code (``spatial_dims``); every spatial size should be divisible by 32.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        iterations: int = 3,
        width: int = DEFAULT_WIDTH,
        stem_width: int = DEFAULT_STEM_WIDTH,
    ) -> None:
        blocks = [(s, lv) for s in range(2 * iterations) for lv in range(LEVELS)]
        super().__init__(spatial_dims, in_channels, out_channels, iterations, blocks, bridge=True,
                         width=width, stem_width=stem_width)
        self.selection = nn.ParameterDict()
        for s in range(1, self.num_stages):
            for lv in range(LEVELS):
                m = nn.Parameter(torch.empty(NUM_CANDIDATES, NUM_CANDIDATES - 2))
                nn.init.xavier_uniform_(m)
                self.selection[f"{stage_name(s)}_level{lv}"] = m
        self._full = full_skip_sets(iterations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Phase-1 forward through the selection matrices: ``(B, C_in, *S) -> (B, K, *S)`` logits."""
        return self.finish(self._run(self.begin(x), self._full, None, None, select=True))

    def forward_fixed(self, x: torch.Tensor, skip_sets: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
        """A fixed skip set per block, dead blocks skipped: ``(B, C_in, *S) -> (B, K, *S)`` logits."""
        return self.finish(self.run_stages(self.begin(x), skip_sets, prune=True))

    def run_stages(
        self,
        state: ExtractionState,
        skip_sets: Sequence[Sequence[Sequence[int]]] | None = None,
        end_stage: int | None = None,
        prune: bool = False,
        keep: Sequence[Sequence[bool]] | None = None,
    ) -> ExtractionState:
        """Run stages ``state.next_stage .. end_stage-1`` (default: to the last) and return the new state.

        ``skip_sets=None``: Phase-1 selection; otherwise every block averages its fixed inputs (the full
        ``[stage][level]`` table is passed; only the entries of the stages run are read). ``prune=True``
        skips blocks that cannot reach the output under ``skip_sets``: right for a tail that is finished
        with these skip sets, wrong for a head shared by tails with other skip sets (keep it False there, or
        pass ``keep``: a ``[stage][level]`` table of the blocks to run, e.g. the union of what the tails need).
        State tensors: stem ``(B, W, *S/2)``, stage outputs ``(B, W, *S/2^(l+1))`` at encoder level l.
        """
        if skip_sets is None:
            if prune or keep is not None:
                raise ValueError("prune and keep need fixed skip_sets")
            return self._run(state, self._full, end_stage, None, select=True)
        if prune and keep is not None:
            raise ValueError("pass prune or keep, not both")
        sets = normalise_skip_sets(skip_sets, self.iterations)
        alive = analyse(sets).alive if prune else None
        if keep is not None:
            alive = tuple(tuple(bool(b) for b in row) for row in keep)
        return self._run(state, sets, end_stage, alive)

    def candidate_sets(self) -> SkipSets:
        """Phase-1 result: per block the unique ``argmax`` of the selection-matrix columns (first stage: ``(0,)``)."""
        sets = [tuple(candidates(0) for _ in range(LEVELS))]
        for s in range(1, self.num_stages):
            sets.append(tuple(
                tuple(sorted({int(i) for i in self.selection[f"{stage_name(s)}_level{lv}"].argmax(dim=0).tolist()}))
                for lv in range(LEVELS)
            ))
        return tuple(sets)

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the selection matrices (e.g. for separate optimiser settings or logging)."""
        chosen = {id(p) for p in self.selection.parameters()}
        return [p for p in self.parameters() if id(p) not in chosen]

    def _fuse(self, stage: int, level: int, tensors: list[torch.Tensor], select: bool) -> torch.Tensor:
        if not select or stage == 0:
            return super()._fuse(stage, level, tensors, select)
        return selection_fuse(self.selection[f"{stage_name(stage)}_level{level}"], tensors)


def selection_fuse(matrix: torch.Tensor, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fuse ``N`` same-shaped candidates ``(B, C, *S)`` through a selection matrix ``(N, N-2)`` -> ``(B, C, *S)``.

    ``tensors[0]`` is the sequential input ``x``; see the module docstring for the formula (authors' fusion).
    """
    soft = F.gumbel_softmax(matrix, tau=1.0, hard=False, dim=0)  # (N, N-2), columns sum to 1
    picks = matrix.argmax(dim=0)  # (N-2,)
    votes = (picks[:, None] == picks[None, :]).sum(dim=1).to(matrix.dtype).reciprocal()  # w_j = 1 / count
    coef = soft @ votes  # (N,)
    n_unique = votes.sum()  # sum_j 1/count_j = number of unique picks
    acc = tensors[SEQUENTIAL] * (coef[SEQUENTIAL] + 1)  # x is candidate 0 and is added once more
    for i in range(1, len(tensors)):
        acc = torch.addcmul(acc, tensors[i], coef[i])
    return acc / (n_unique + 1)
