"""DiNTS's space as genotypes: the topology on a grid of ``num_blocks`` blocks by ``num_depths`` resolution levels,
each active path with one of five cell ops (He et al., CVPR 2021, as MONAI's ``TopologySearch`` holds it).

In every block each level may feed the same level, the one above and the one below (the block's
``3 * num_depths - 2`` paths). MONAI's search space decodes to three arrays, stored as JSON lists so the genotype
rebuilds the same network in any process::

    "spec": {"channel_mul": 0.5, "num_blocks": 12, "num_depths": 4, "use_downsample": true,
             "node_a": [[1, 1, 0, 0], ...],        # (num_blocks + 1) x num_depths: which feature nodes are active
             "arch_code_a": [[1, 0, ...], ...],    # num_blocks x paths: which paths are active
             "arch_code_c": [[2, 0, ...], ...]}    # num_blocks x paths: the op of each path (0..4)
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch

from nas_ops.genotype import Genotype, SpecError, check_known_keys

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


def dints_genotype(node_a: Any, arch_code_a: Any, arch_code_c: Any, in_channels: int = 1, out_channels: int = 2,
                   name: str = "dints", provenance: dict | None = None, **spec: Any) -> Genotype:
    """A DiNTS genotype from the arrays ``TopologySearch.decode()`` gives (numpy or lists)."""
    def ints(a: Any) -> list:
        return np.asarray(a).astype(np.int64).tolist()

    return Genotype(method="dints", spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                    spec={**DEFAULT_SPEC, **spec, "node_a": ints(node_a), "arch_code_a": ints(arch_code_a),
                          "arch_code_c": ints(arch_code_c)},
                    name=name, provenance=provenance or {})


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
