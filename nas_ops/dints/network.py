"""The network DiNTS finds, built from a genotype of this project: MONAI's ``DiNTS`` over a ``TopologyInstance``.

DiNTS (He et al., CVPR 2021) searches a multi-path topology on a grid of ``num_blocks`` blocks by ``num_depths``
resolution levels: in every block each level may feed the same level, the one above and the one below (the
block's ``3 * num_depths - 2`` paths), and every active path runs one of five cell ops. MONAI's search space
decodes to three arrays, stored here as JSON lists so the genotype rebuilds the same network in any process::

    "spec": {"channel_mul": 0.5, "num_blocks": 12, "num_depths": 4, "use_downsample": true,
             "node_a": [[1, 1, 0, 0], ...],        # (num_blocks + 1) x num_depths: which feature nodes are active
             "arch_code_a": [[1, 0, ...], ...],    # num_blocks x paths: which paths are active
             "arch_code_c": [[2, 0, ...], ...]}    # num_blocks x paths: the op of each path (0..4)

:class:`DiNTSNet` is MONAI's ``DiNTS`` without what the decoded network never runs (the input stems of inactive
levels, the output stems below the deepest active level), with this project's protocol (``total_stride``,
``forward_with_features``: the output stems' features, deepest first).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch
from monai.networks.nets import DiNTS, TopologyInstance

from nas_ops.genotype import Genotype, SpecError, check_known_keys
from nas_ops.registry import register_method

NUM_CELL_OPS = 5  # MONAI's 3D cell ops: skip, 3x3x3, and the three P3D variants
DEFAULT_SPEC = {"channel_mul": 0.5, "num_blocks": 12, "num_depths": 4, "use_downsample": True}


def path_ends(num_depths: int) -> tuple[list[int], list[int]]:
    """``(input level, output level)`` of each path of a block, in MONAI's order (same, up, down per level)."""
    n = 3 * num_depths - 2
    ins = [(i + 1) // 3 - 1 + (i + 1) % 3 for i in range(n)]
    outs = [m for m in range(num_depths) for _ in range(3)][1:-1]
    return ins, outs


def quiet(fn, *args, **kwargs):
    """Call ``fn`` with MONAI's construction notice (printed to stdout by the DiNTS spaces) silenced."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


class DiNTSNet(DiNTS):
    """The decoded DiNTS network of one genotype (``nas_ops.protocol``)."""

    def __init__(self, in_channels: int, out_channels: int, node_a: Any, arch_code_a: Any, arch_code_c: Any,
                 channel_mul: float = 0.5, num_blocks: int = 12, num_depths: int = 4,
                 use_downsample: bool = True) -> None:
        node = np.asarray(node_a, dtype=np.int64)
        space = quiet(TopologyInstance, arch_code=[np.asarray(arch_code_a, dtype=np.float32),
                                                   np.asarray(arch_code_c, dtype=np.int64)],
                      channel_mul=channel_mul, num_blocks=num_blocks, num_depths=num_depths, spatial_dims=3,
                      use_downsample=use_downsample, device="cpu")
        super().__init__(dints_space=space, in_channels=in_channels, num_classes=out_channels, spatial_dims=3,
                         use_downsample=use_downsample, node_a=torch.from_numpy(node))
        self.total_stride = 2 ** (num_depths - 1 + int(use_downsample))
        self.active_inputs = [bool(node[0][d]) for d in range(num_depths)]
        self.deepest_output = max(d for d in range(num_depths) if node[num_blocks][d])
        for d in range(num_depths):  # modules the decoded network never runs
            if not self.active_inputs[d]:
                del self.stem_down[str(d)]
            if d > self.deepest_output:
                del self.stem_up[str(d)]

    def _check(self, x: torch.Tensor) -> None:
        if any(s % self.total_stride for s in x.shape[2:]):
            raise ValueError(f"input size {tuple(x.shape[2:])} is not divisible by {self.total_stride} (the stem's "
                             f"2 times 2 ** the deepest of {self.num_depths} levels)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, D, H, W) -> (B, K, D, H, W)`` logits."""
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the output stems' features, deepest first (MONAI's ``DiNTS.forward``, keeping them)."""
        self._check(x)
        inputs = []
        for d in range(self.num_depths):
            if self.active_inputs[d]:
                inputs.append(self.stem_down[str(d)](x))
            else:  # what MONAI feeds an inactive level: zeros of its shape
                size = [s // 2 ** (d + int(self.dints_space.use_downsample)) for s in x.shape[2:]]
                inputs.append(x.new_zeros(x.shape[0], self.filter_nums[d + int(self.dints_space.use_downsample)],
                                          *size))
        outputs = self.dints_space(inputs)
        features: list[torch.Tensor] = []
        temp = self.stem_up[str(self.deepest_output)](outputs[self.deepest_output])
        features.append(temp)
        for d in range(self.deepest_output - 1, -1, -1):
            temp = self.stem_up[str(d)](outputs[d] + temp)
            features.append(temp)
        return self.stem_finals(temp), features


def _binary(value: Any, field: str, rows: int, cols: int) -> np.ndarray:
    return _matrix(value, field, rows, cols, 0, 1)


def _matrix(value: Any, field: str, rows: int, cols: int, low: int, high: int) -> np.ndarray:
    """A ``rows x cols`` list of lists of ints in ``[low, high]``, or a SpecError naming the entry."""
    if not isinstance(value, list) or len(value) != rows:
        raise SpecError(field, f"must be a list of {rows} rows, got {value!r:.60}")
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != cols:
            raise SpecError(f"{field}[{i}]", f"must be a list of {cols} integers, got {row!r:.60}")
        for j, v in enumerate(row):
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise SpecError(f"{field}[{i}][{j}]", f"must be an integer in [{low}, {high}], got {v!r}")
    return np.asarray(value, dtype=np.int64)


def validate(genotype: Genotype) -> None:
    """Check a DiNTS spec: sizes, binary activations, known ops, and a consistent node/path activation."""
    spec = {**DEFAULT_SPEC, **genotype.spec}
    check_known_keys(genotype.spec, {"node_a", "arch_code_a", "arch_code_c", *DEFAULT_SPEC})
    if genotype.spatial_dims != 3:
        raise SpecError("spatial_dims", f"DiNTS networks here are 3D, got {genotype.spatial_dims}")
    for key, (low, high) in {"num_blocks": (1, 64), "num_depths": (2, 6)}.items():
        v = spec[key]
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            raise SpecError(key, f"must be an integer in [{low}, {high}], got {v!r}")
    mul = spec["channel_mul"]
    if not isinstance(mul, (int, float)) or isinstance(mul, bool) or not 1 / 32 <= mul <= 8:
        raise SpecError("channel_mul", f"must be a number in [1/32, 8], got {mul!r}")
    if not isinstance(spec["use_downsample"], bool):
        raise SpecError("use_downsample", f"must be true or false, got {spec['use_downsample']!r}")
    blocks, depths = spec["num_blocks"], spec["num_depths"]
    paths = 3 * depths - 2
    node = _binary(spec.get("node_a"), "node_a", blocks + 1, depths)
    active = _binary(spec.get("arch_code_a"), "arch_code_a", blocks, paths)
    _matrix(spec.get("arch_code_c"), "arch_code_c", blocks, paths, 0, NUM_CELL_OPS - 1)
    ins, outs = path_ends(depths)
    for b in range(blocks):
        if not active[b].any():
            raise SpecError(f"arch_code_a[{b}]", "has no active path: the network would be cut at this block")
        for p in np.flatnonzero(active[b]):
            if not node[b][ins[p]]:
                raise SpecError(f"arch_code_a[{b}][{p}]", f"path {p} reads level {ins[p]}, which node_a[{b}] "
                                "marks inactive")
        reached = [int(any(active[b][p] for p in range(paths) if outs[p] == d)) for d in range(depths)]
        if list(node[b + 1]) != reached:
            raise SpecError(f"node_a[{b + 1}]", f"must be {reached}: the levels the active paths of block {b} reach")


def build(genotype: Genotype) -> DiNTSNet:
    """The network of a DiNTS genotype."""
    spec = {**DEFAULT_SPEC, **genotype.spec}
    return DiNTSNet(genotype.in_channels, genotype.out_channels, spec["node_a"], spec["arch_code_a"],
                    spec["arch_code_c"], spec["channel_mul"], spec["num_blocks"], spec["num_depths"],
                    spec["use_downsample"])


def dints_genotype(node_a: Any, arch_code_a: Any, arch_code_c: Any, in_channels: int = 1, out_channels: int = 2,
                   name: str = "dints", provenance: dict | None = None, **spec: Any) -> Genotype:
    """A DiNTS genotype from the arrays ``TopologySearch.decode()`` gives (numpy or lists)."""
    def ints(a: Any) -> list:
        return np.asarray(a).astype(np.int64).tolist()

    return Genotype(method="dints", spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                    spec={**DEFAULT_SPEC, **spec, "node_a": ints(node_a), "arch_code_a": ints(arch_code_a),
                          "arch_code_c": ints(arch_code_c)},
                    name=name, provenance=provenance or {})


register_method("dints", validate=validate, build=build)



def random_genotype(seed: int, in_channels: int = 1, out_channels: int = 2, channel_mul: float = 0.5,
                    num_blocks: int = 12, num_depths: int = 4, name: str = "dints-random") -> Genotype:
    """A DiNTS genotype of seeded random architecture weights (N(0, 2) logits) decoded by MONAI: a random
    architecture of the space, for tests and random-search controls."""
    from monai.networks.nets import TopologySearch

    generator = torch.Generator().manual_seed(seed)
    space = quiet(TopologySearch, channel_mul=channel_mul, num_blocks=num_blocks, num_depths=num_depths,
                  spatial_dims=3)
    with torch.no_grad():
        space.log_alpha_a.copy_(2 * torch.randn(space.log_alpha_a.shape, generator=generator))
        space.log_alpha_c.copy_(2 * torch.randn(space.log_alpha_c.shape, generator=generator))
        node_a, arch_code_a, arch_code_c, _ = space.decode()
    return dints_genotype(node_a, arch_code_a, arch_code_c, in_channels, out_channels, name=name,
                          channel_mul=channel_mul, num_blocks=num_blocks, num_depths=num_depths)
