"""The C2FNAS network and its supernets: one grid of cells, built for the paths it has to run.

:class:`CellGrid` holds a cell at each (cell index, level) some path of it visits, with the input modules
(``down``/``up``) those paths need and, per cell, the ops it may run. The same class serves three roles:

- the searched network (:class:`C2FNASNet`, registered as method ``c2fnas``): one path, one op per cell, so its
  ``state_dict`` has nothing a supernet left behind;
- the coarse stage's supernet: the paths of one group of topologies, one op everywhere, weights shared where
  paths meet;
- the fine stage's supernet: one path, every op in every cell (single-path one-shot).

A supernet runs ``grid(x, (levels, ops))``. Its module names are those of the network of the same genotype, so a
sampled path's weights load into that network strictly (:func:`path_state_dict`) and give the same output.

Genotype (``method: "c2fnas"``, ``spatial_dims: 3``)::

    "spec": {"levels": [0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0], "ops": ["2d", "p3d", "3d", ...],
             "base_channels": 64, "stem_channels": 32}

Level ``l`` has ``base_channels * 2**l`` channels (64/128/256/512 in the paper's network).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nas_ops.c2fnas.cells import CellBody, Down, Head, Stem, Up
from nas_ops.c2fnas.space import DEFAULT_SPEC, NUM_LEVELS, OPS, cell_moves, skip_sources, validate
from nas_ops.genotype import Genotype
from nas_ops.registry import register_method

Path = tuple[tuple[int, ...], tuple[str, ...]]  # (levels, ops)


class CellGrid(nn.Module):
    """Cells on the (cell index, level) grid that ``paths`` visit, each able to run ``ops`` (see the module doc).

    ``forward(x, path)``: ``(B, C_in, D, H, W) -> (B, K, D, H, W)`` along ``path = (levels, ops)``.
    """

    def __init__(self, in_channels: int, out_channels: int, paths: Sequence[Sequence[int]],
                 ops: Sequence[str] | Sequence[Sequence[str]] = OPS, base_channels: int = 64,
                 stem_channels: int = 32, num_levels: int = NUM_LEVELS) -> None:
        super().__init__()
        paths = [tuple(p) for p in paths]
        num_cells = len(paths[0])
        if any(len(p) != num_cells for p in paths):
            raise ValueError("every path of a grid has the same number of cells")
        # ops: one tuple for every cell, or one per cell
        per_cell = [tuple(ops)] * num_cells if ops and isinstance(ops[0], str) else [tuple(o) for o in ops]
        self.num_cells, self.num_levels = num_cells, num_levels
        self.widths = [base_channels * 2**level for level in range(num_levels)]
        self.stem = Stem(in_channels, stem_channels, self.widths[0])
        self.cells = nn.ModuleDict()
        self.down = nn.ModuleDict()
        self.up = nn.ModuleDict()
        for levels in paths:
            for i, (level, move) in enumerate(zip(levels, cell_moves(levels), strict=True)):
                key = f"{i}_{level}"
                if key not in self.cells:
                    self.cells[key] = CellBody(self.widths[level], per_cell[i])
                if move == "down" and key not in self.down:
                    self.down[key] = Down(self.widths[level - 1], self.widths[level])
                if move == "up" and key not in self.up:
                    self.up[key] = Up(self.widths[level + 1], self.widths[level])
        self.head = Head(self.widths[0], stem_channels, out_channels)

    def cell_outputs(self, x: torch.Tensor, path: Path) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The output of every cell of ``path``, and what the head fuses with the last one: the latest earlier output
        at level 0 (the cell before the last in the paper's network; the stem's if no earlier cell is at 1/2)."""
        levels, ops = path
        stem = self.stem(x)
        outs: list[torch.Tensor] = []
        h = stem
        for i, (level, move, skip, op) in enumerate(zip(levels, cell_moves(levels), skip_sources(levels), ops,
                                                        strict=True)):
            key = f"{i}_{level}"
            if move == "down":
                h = self.down[key](h)
            elif move == "up":
                h = self.up[key](h) + (stem if skip == -1 else outs[skip])
            h = self.cells[key](h, op)
            outs.append(h)
        earlier = [out for level, out in zip(levels[:-1], outs[:-1], strict=True) if level == 0]
        return outs, earlier[-1] if earlier else stem

    def features(self, x: torch.Tensor, path: Path) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(logits, decoder features deepest first)``: the last output at each level from the deepest one up (the
        path's way back), then the head's full-size features."""
        outs, before = self.cell_outputs(x, path)
        full = self.head.features(outs[-1], before)
        last_at = {level: out for level, out in zip(path[0], outs, strict=True)}
        decoder = [last_at[level] for level in sorted(last_at, reverse=True)]
        return self.head.classify(full), [*decoder, full]

    def forward(self, x: torch.Tensor, path: Path) -> torch.Tensor:
        outs, before = self.cell_outputs(x, path)
        return self.head(outs[-1], before)


class C2FNASNet(CellGrid):
    """The searched network of one genotype: its path, one op per cell (``nas_ops.protocol``)."""

    def __init__(self, in_channels: int, out_channels: int, levels: Sequence[int], ops: Sequence[str],
                 base_channels: int = 64, stem_channels: int = 32) -> None:
        super().__init__(in_channels, out_channels, [tuple(levels)], [(op,) for op in ops], base_channels,
                         stem_channels)
        self.path: Path = (tuple(levels), tuple(ops))
        self.total_stride = 2 ** (1 + max(levels))

    def _check(self, x: torch.Tensor) -> None:
        if any(s % self.total_stride for s in x.shape[2:]):
            raise ValueError(f"input size {tuple(x.shape[2:])} is not divisible by {self.total_stride} "
                             "(the stem's 2 times 2 ** the deepest level of this genotype)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``(B, C_in, D, H, W) -> (B, K, D, H, W)`` logits."""
        self._check(x)
        return super().forward(x, self.path)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the decoder features, deepest first (``nas_ops.protocol``)."""
        self._check(x)
        return self.features(x, self.path)


def path_state_dict(grid: CellGrid, levels: Sequence[int], ops: Sequence[str]) -> dict[str, torch.Tensor]:
    """The weights of one path of a supernet, named as in the :class:`C2FNASNet` of that path."""
    with torch.device("meta"):  # names only: nothing is allocated
        keep = C2FNASNet(1, 1, levels, ops, base_channels=1, stem_channels=1).state_dict().keys()
    state = grid.state_dict()
    missing = [k for k in keep if k not in state]
    if missing:
        raise KeyError(f"the supernet has no {missing[0]} for this path")
    return {k: v for k, v in state.items() if k in keep}


def build(genotype: Genotype) -> C2FNASNet:
    """The network of a C2FNAS genotype."""
    spec = {**DEFAULT_SPEC, **genotype.spec}
    return C2FNASNet(genotype.in_channels, genotype.out_channels, spec["levels"], spec["ops"],
                     spec["base_channels"], spec["stem_channels"])


register_method("c2fnas", validate=validate, build=build)
