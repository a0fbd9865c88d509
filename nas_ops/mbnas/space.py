"""The MB-NAS search space: nodes, validity rules, canonical form, the U-Net point and the size of the space.

A network is a fixed **stem** (a VGG block, ``in_channels -> base_channels``, 3x3, at the input resolution), a
chain of ``num_nodes`` searched **cells** (10 in the paper) and a 1x1 **head**. Node ``i`` has four variables:

- ``channels`` (a_l) in ``double | equal | half`` of the previous node: a downscaling cell (max pooling, the
  resolution halves), a non-scaling cell, or an upscaling cell (2x transposed conv, the resolution doubles).
  The *level* after a node counts the halvings (stem: 0); its width is ``base_channels * 2**level``.
- ``block`` (b_l) in ``vgg | residual | dense | inception`` (:mod:`nas_ops.mbnas.blocks`).
- ``kernel`` (c_l) in ``{3, 5, 7}``: the kernel size of the block's spatial convolutions.
- ``skip`` (d_l): ``null`` (the cell takes the preceding node's output alone) or the index of an earlier node
  (``-1`` = the stem) whose output is concatenated with the cell's resampled input.

Validity rules (our reading of the paper, which leaves them open):

1. the level stays in ``[0, max_depth]``: never above the input resolution, at most ``max_depth`` halvings
   (``max_depth = 5`` by default: with 10 nodes a path that returns to level 0 reaches at most level 5, so the
   default only bounds smaller spaces; 128 px slices are 4 px at level 5);
2. the last node ends at level 0: the output returns to the input resolution;
3. a skip joins equal sizes: the source's level equals the cell's output level (the skip is concatenated after
   the resampling, as in the U-Net decoder). A skip from the preceding node is no skip (see the canonical form).

Canonical form: a skip from the preceding node (``i - 1``; the stem for node 0) is the cell's input already, so it
adds nothing; it is normalised to ``null``. Two encodings of one network therefore have one canonical form and one
cache key (:func:`arch_key`); every other choice gives a different network.

The standard U-Net is a point of the space: with ``N`` nodes, ``N/2`` downscaling then ``N/2`` upscaling VGG 3x3
cells, each upscaling cell taking the skip from the encoder node of its size (:meth:`SearchSpace.unet`). With 10
nodes it has 5 poolings and widths ``base * (1, 2, ..., 32)``.

Size of the space: cells and topology are independent, so ``|S| = (|blocks| * |kernels|)**N * T`` with
``T = sum over valid level paths of prod_i (1 + s_i)``, ``s_i`` the number of skip sources of node ``i`` (the stem
and nodes ``0 .. i-2`` at its output level). ``T`` is computed exactly by a recursion over (node, level, sources
per level) (:meth:`SearchSpace.count_topologies`). Full space: ``T = 28,897,869`` and ``|S| = 12**10 * T =
1.789e18`` (the paper reports 1.14e18; see the bundle's docs for the comparison).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np

from nas_ops.blocks import NORMS
from nas_ops.genotype import Genotype, SpecError
from nas_ops.mbnas.blocks import BLOCKS

CHANNELS = ("double", "equal", "half")  # downscaling, non-scaling, upscaling cell
LEVEL_STEP = {"double": 1, "equal": 0, "half": -1}
CHANNELS_OF_STEP = {step: name for name, step in LEVEL_STEP.items()}
KERNEL_SIZES = (3, 5, 7)
NUM_NODES = 10
MAX_DEPTH = 5
DEFAULT_BASE_CHANNELS = 32
STEM = -1  # the skip value naming the stem
SPEC_KEYS = ("base_channels", "max_depth", "norm", "nodes")
NODE_KEYS = ("channels", "block", "kernel", "skip")
VARIABLE_KINDS = ("level", "skip", "block", "kernel")  # the Local Search variables (see SearchSpace.variables)
_TOKEN = {"double": "D", "equal": "E", "half": "U"}


@dataclass(frozen=True)
class Node:
    """One cell of the chain: its channel change, block type, kernel size and skip source (None, -1 stem, index)."""

    channels: str
    block: str = "vgg"
    kernel: int = 3
    skip: int | None = None

    def token(self) -> str:
        """Short readable form, e.g. ``Ur5+n2`` (upscaling residual 5x5 with the skip from node 2)."""
        skip = "" if self.skip is None else ("+stem" if self.skip == STEM else f"+n{self.skip}")
        return f"{_TOKEN[self.channels]}{self.block[0]}{self.kernel}{skip}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Nodes = tuple[Node, ...]


# ------------------------------------------------------------------------------------------------ levels and rules


def node_levels(nodes: Sequence[Node]) -> list[int]:
    """The level after each node (number of halvings of the input resolution; the stem is level 0)."""
    levels, level = [], 0
    for node in nodes:
        level += LEVEL_STEP[node.channels]
        levels.append(level)
    return levels


def source_level(levels: Sequence[int], source: int) -> int:
    """Level of a skip source: the stem (-1) is level 0."""
    return 0 if source == STEM else levels[source]


def canonical(nodes: Sequence[Node]) -> Nodes:
    """The canonical encoding: a skip from the preceding node (the cell's input already) becomes ``None``."""
    return tuple(replace(n, skip=None) if n.skip is not None and n.skip == i - 1 else n for i, n in enumerate(nodes))


def arch_key(nodes: Sequence[Node]) -> str:
    """The cache key of a network: its canonical nodes as tokens, e.g. ``Dv3 Dv3 Uv3+n0 Uv3+stem``."""
    return " ".join(n.token() for n in canonical(nodes))


def check_topology(nodes: Sequence[Node], max_depth: int) -> None:
    """Apply the three validity rules; raise :class:`SpecError` naming ``nodes[i].<variable>``."""
    levels = node_levels(nodes)
    for i, level in enumerate(levels):
        if level < 0:
            raise SpecError(f"nodes[{i}].channels", "goes above the input resolution (level -1): nothing to upscale")
        if level > max_depth:
            raise SpecError(f"nodes[{i}].channels", f"reaches level {level}, deeper than max_depth {max_depth}")
    if levels and levels[-1] != 0:
        raise SpecError(f"nodes[{len(nodes) - 1}].channels",
                        f"the network ends at level {levels[-1]}: the output must return to the input resolution "
                        "(level 0)")
    for i, node in enumerate(nodes):
        if node.skip is None or node.skip == i - 1:  # none, or the predecessor: normalised away (canonical)
            continue
        if not STEM <= node.skip < i:
            raise SpecError(f"nodes[{i}].skip", f"must be null, -1 (the stem) or an earlier node 0..{i - 1}, "
                            f"got {node.skip}")
        if source_level(levels, node.skip) != levels[i]:
            raise SpecError(f"nodes[{i}].skip", f"joins level {source_level(levels, node.skip)} (node {node.skip}) "
                            f"to level {levels[i]}: skips join equal sizes only")


# ---------------------------------------------------------------------------------------------------- genotype spec


def spec_of(nodes: Sequence[Node], base_channels: int = DEFAULT_BASE_CHANNELS, max_depth: int = MAX_DEPTH,
            norm: str = "batch") -> dict[str, Any]:
    """The genotype ``spec`` of a chain of nodes (canonical)."""
    return {"base_channels": base_channels, "max_depth": max_depth, "norm": norm,
            "nodes": [n.to_dict() for n in canonical(nodes)]}


@dataclass(frozen=True)
class ParsedSpec:
    """A validated MB-NAS spec."""

    nodes: Nodes
    base_channels: int = DEFAULT_BASE_CHANNELS
    max_depth: int = MAX_DEPTH
    norm: str = "batch"


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_spec(spec: dict[str, Any]) -> ParsedSpec:
    """Check an MB-NAS spec field by field; raise :class:`SpecError` naming the field."""
    for key in spec:
        if key not in SPEC_KEYS:
            raise SpecError(key, f"unknown key (known: {list(SPEC_KEYS)})")
    base = spec.get("base_channels", DEFAULT_BASE_CHANNELS)
    if not _int(base) or base < 4:
        raise SpecError("base_channels", f"must be an integer >= 4 (inception blocks split 4 ways), got {base!r}")
    depth = spec.get("max_depth", MAX_DEPTH)
    if not _int(depth) or depth < 1:
        raise SpecError("max_depth", f"must be a positive integer, got {depth!r}")
    norm = spec.get("norm", "batch")
    if norm not in NORMS:
        raise SpecError("norm", f"must be one of {list(NORMS)}, got {norm!r}")
    raw = spec.get("nodes")
    if not isinstance(raw, list) or not raw:
        raise SpecError("nodes", f"must be a non-empty list of nodes, got {type(raw).__name__}")
    nodes = []
    for i, entry in enumerate(raw):
        where = f"nodes[{i}]"
        if not isinstance(entry, dict):
            raise SpecError(where, f"must be an object with keys {list(NODE_KEYS)}, got {type(entry).__name__}")
        for key in entry:
            if key not in NODE_KEYS:
                raise SpecError(f"{where}.{key}", f"unknown key (known: {list(NODE_KEYS)})")
        for key in ("channels", "block", "kernel"):
            if key not in entry:
                raise SpecError(f"{where}.{key}", "missing")
        if entry["channels"] not in CHANNELS:
            raise SpecError(f"{where}.channels", f"must be one of {list(CHANNELS)}, got {entry['channels']!r}")
        if entry["block"] not in BLOCKS:
            raise SpecError(f"{where}.block", f"must be one of {list(BLOCKS)}, got {entry['block']!r}")
        if not _int(entry["kernel"]) or entry["kernel"] not in KERNEL_SIZES:
            raise SpecError(f"{where}.kernel", f"must be one of {list(KERNEL_SIZES)}, got {entry['kernel']!r}")
        skip = entry.get("skip")
        if skip is not None and not _int(skip):
            raise SpecError(f"{where}.skip", f"must be null or an integer node index (-1: the stem), got {skip!r}")
        nodes.append(Node(entry["channels"], entry["block"], entry["kernel"], skip))
    check_topology(nodes, depth)
    return ParsedSpec(tuple(nodes), base, depth, norm)


def validate(genotype: Genotype) -> None:
    """The ``mbnas`` method's spec check (registered in :mod:`nas_ops.mbnas.network`)."""
    parse_spec(genotype.spec)


# ------------------------------------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class SearchSpace:
    """The MB-NAS space for ``num_nodes`` cells, levels ``0..max_depth`` and the given block and kernel choices.

    The Local Search variables (see :meth:`variables`) are, per node: ``level[i]`` (the level after node ``i``, for
    ``i < N - 1``; the last is pinned to 0 by rule 2), ``skip[i]``, ``block[i]`` and ``kernel[i]``. The level view
    of the topology is a one-to-one recoding of the channel changes under rule 2: changing the channels of one node
    alone always moves the network's end off level 0, while changing one level changes the channels of node ``i``
    and ``i + 1`` together and keeps every other level, so neighbourhood 1 can move the topology.
    """

    num_nodes: int = NUM_NODES
    max_depth: int = MAX_DEPTH
    blocks: tuple[str, ...] = BLOCKS
    kernel_sizes: tuple[int, ...] = KERNEL_SIZES
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_nodes < 2 or self.max_depth < 1:
            raise ValueError(f"need num_nodes >= 2 and max_depth >= 1, got {self.num_nodes}, {self.max_depth}")
        for b in self.blocks:
            if b not in BLOCKS:
                raise ValueError(f"unknown block '{b}' (known: {list(BLOCKS)})")
        for k in self.kernel_sizes:
            if k not in KERNEL_SIZES:
                raise ValueError(f"kernel size {k} is not in {list(KERNEL_SIZES)}")

    # ---------------------------------------------------------------------------------------------- membership

    def check(self, nodes: Sequence[Node]) -> None:
        """Raise :class:`SpecError` unless ``nodes`` is a network of this space."""
        if len(nodes) != self.num_nodes:
            raise SpecError("nodes", f"has {len(nodes)} nodes, this space has {self.num_nodes}")
        for i, n in enumerate(nodes):
            if n.block not in self.blocks:
                raise SpecError(f"nodes[{i}].block", f"'{n.block}' is not searched here ({list(self.blocks)})")
            if n.kernel not in self.kernel_sizes:
                raise SpecError(f"nodes[{i}].kernel", f"{n.kernel} is not searched here ({list(self.kernel_sizes)})")
        check_topology(nodes, self.max_depth)

    def is_valid(self, nodes: Sequence[Node]) -> bool:
        try:
            self.check(nodes)
        except SpecError:
            return False
        return True

    # ----------------------------------------------------------------------------------------------------- size

    def count_topologies(self) -> int:
        """Number of distinct (level path, skip choice) pairs: ``sum over valid paths of prod_l (1 + s_l)``."""
        n, depth = self.num_nodes, self.max_depth

        @cache
        def completions(i: int, prev: int, sources: tuple[int, ...]) -> int:
            # prev: level of node i-1 (the stem for i = 0); sources[h]: skip sources at level h before node i-1
            if i == n:
                return 1 if prev == 0 else 0
            after = list(sources)
            after[prev] += 1  # the predecessor becomes a skip source for the nodes after i
            total = 0
            for step in (1, 0, -1):
                level = prev + step
                if 0 <= level <= depth:
                    total += (1 + sources[level]) * completions(i + 1, level, tuple(after))
            return total

        return completions(0, 0, (0,) * (depth + 1))

    def size(self) -> int:
        """Number of distinct networks: ``(|blocks| * |kernels|)**N * count_topologies()``."""
        return (len(self.blocks) * len(self.kernel_sizes)) ** self.num_nodes * self.count_topologies()

    # ---------------------------------------------------------------------------------------------- named points

    def unet(self, block: str = "vgg", kernel: int = 3) -> Nodes:
        """The U-Net: ``N/2`` downscaling then ``N/2`` upscaling VGG cells, each upscaling one with its size's skip."""
        half = self.num_nodes // 2
        if self.num_nodes % 2 or half > self.max_depth:
            raise ValueError(f"a U-Net needs an even node count and max_depth >= N/2, got N={self.num_nodes}, "
                             f"max_depth={self.max_depth}")
        down = [Node("double", block, kernel) for _ in range(half)]
        # the upscaling cell to level L takes the encoder node that reached L (node L-1; the stem for L = 0)
        up = [Node("half", block, kernel, skip=half - 2 - m if half - 1 - m > 0 else STEM) for m in range(half)]
        return tuple(down + up)

    def with_topology(self, topology: Sequence[Node], cells: Sequence[Node]) -> Nodes:
        """Channels and skips from ``topology``, blocks and kernels from ``cells``."""
        return tuple(replace(t, block=c.block, kernel=c.kernel) for t, c in zip(topology, cells, strict=True))

    def with_cells(self, nodes: Sequence[Node], block: str = "vgg", kernel: int = 3) -> Nodes:
        """The same topology with every cell set to one block type and kernel size."""
        return tuple(replace(n, block=block, kernel=kernel) for n in nodes)

    def random(self, rng: np.random.Generator, topology: bool = True, cells: bool = True,
               base: Sequence[Node] | None = None) -> Nodes:
        """A random valid network: the level path uniform over valid paths, then each skip uniform over its sources,
        blocks and kernels uniform. Parts not drawn (``topology``/``cells`` False) come from ``base``."""
        base = tuple(base) if base is not None else self.unet()
        if topology:
            levels, prev = [], 0
            for i in range(self.num_nodes):
                options = [prev + s for s in (1, 0, -1) if 0 <= prev + s <= self.max_depth]
                weights = np.array([self._paths_from(i + 1, h) for h in options], dtype=float)
                prev = options[int(rng.choice(len(options), p=weights / weights.sum()))]
                levels.append(prev)
            nodes = []
            for i, level in enumerate(levels):
                prev = 0 if i == 0 else levels[i - 1]
                sources = [j for j in range(STEM, i - 1) if source_level(levels, j) == level]
                pick = int(rng.integers(len(sources) + 1))
                nodes.append(Node(CHANNELS_OF_STEP[level - prev], skip=None if pick == 0 else sources[pick - 1]))
        else:
            nodes = list(base)
        if cells:
            nodes = [replace(n, block=self.blocks[int(rng.integers(len(self.blocks)))],
                             kernel=self.kernel_sizes[int(rng.integers(len(self.kernel_sizes)))]) for n in nodes]
        else:
            nodes = [replace(n, block=b.block, kernel=b.kernel) for n, b in zip(nodes, base, strict=True)]
        out = canonical(nodes)
        self.check(out)
        return out

    def _paths_from(self, i: int, level: int) -> int:
        """Number of valid level suffixes for nodes ``i..N-1`` when node ``i-1`` is at ``level``."""
        key = ("paths", i, level)
        if key not in self._cache:
            if i == self.num_nodes:
                self._cache[key] = int(level == 0)
            else:
                self._cache[key] = sum(self._paths_from(i + 1, level + s) for s in (1, 0, -1)
                                       if 0 <= level + s <= self.max_depth)
        return self._cache[key]

    # --------------------------------------------------------------------------------- Local Search variables

    def variables(self, kinds: Sequence[str] = VARIABLE_KINDS) -> list[str]:
        """Variable names of the given kinds: ``level[i]`` (i < N-1), ``skip[i]``, ``block[i]``, ``kernel[i]``."""
        out = []
        for kind in kinds:
            if kind not in VARIABLE_KINDS:
                raise ValueError(f"unknown variable kind '{kind}' (known: {list(VARIABLE_KINDS)})")
            count = self.num_nodes - 1 if kind == "level" else self.num_nodes
            out += [f"{kind}[{i}]" for i in range(count)]
        return out

    def value(self, nodes: Sequence[Node], variable: str) -> Any:
        """The current value of a variable."""
        kind, i = _split(variable)
        if kind == "level":
            return node_levels(nodes)[i]
        return getattr(nodes[i], kind)

    def domain(self, nodes: Sequence[Node], variable: str) -> list[Any]:
        """Every value of a variable (valid or not in ``nodes``)."""
        kind, i = _split(variable)
        if kind == "level":
            return list(range(self.max_depth + 1))
        if kind == "skip":
            return [None, *range(STEM, i - 1)]
        return list(self.blocks if kind == "block" else self.kernel_sizes)

    def move(self, nodes: Sequence[Node], variable: str, value: Any, cut_broken_skips: bool = True) -> Nodes | None:
        """``nodes`` with one variable set to ``value``, canonical; ``None`` when the result is not valid.

        A level move changes the channels of node ``i`` and ``i + 1``; skips it leaves joining different sizes are
        cut (set to null) when ``cut_broken_skips``, else the move is invalid.
        """
        kind, i = _split(variable)
        nodes = list(nodes)
        if kind == "level":
            levels = node_levels(nodes)
            levels[i] = value
            prev = 0
            for j, level in enumerate(levels):
                step = level - prev
                if step not in CHANNELS_OF_STEP:
                    return None
                nodes[j] = replace(nodes[j], channels=CHANNELS_OF_STEP[step])
                prev = level
            if cut_broken_skips:
                for j, n in enumerate(nodes):
                    if n.skip is not None and STEM <= n.skip < j and source_level(levels, n.skip) != levels[j]:
                        nodes[j] = replace(n, skip=None)
        else:
            nodes[i] = replace(nodes[i], **{kind: value})
        out = canonical(nodes)
        return out if self.is_valid(out) else None

    def neighbours(self, nodes: Sequence[Node], variable: str,
                   cut_broken_skips: bool = True) -> list[tuple[Any, Nodes]]:
        """The valid networks one change of ``variable`` away, as ``(value, nodes)``, one per distinct network."""
        here = arch_key(nodes)
        seen, out = {here}, []
        for value in self.domain(nodes, variable):
            cand = self.move(nodes, variable, value, cut_broken_skips)
            if cand is None:
                continue
            key = arch_key(cand)
            if key not in seen:
                seen.add(key)
                out.append((value, cand))
        return out


def _split(variable: str) -> tuple[str, int]:
    """``"skip[3]" -> ("skip", 3)``."""
    kind, _, rest = variable.partition("[")
    if kind not in VARIABLE_KINDS or not rest.endswith("]"):
        raise ValueError(f"bad variable name {variable!r}; expected e.g. 'level[2]' with a kind in {VARIABLE_KINDS}")
    return kind, int(rest[:-1])


def nodes_of(genotype: Genotype) -> Nodes:
    """The (canonical) nodes of an MB-NAS genotype."""
    return canonical(parse_spec(genotype.spec).nodes)


def make_genotype(nodes: Sequence[Node], in_channels: int, out_channels: int, spatial_dims: int = 2,
                  base_channels: int = DEFAULT_BASE_CHANNELS, max_depth: int = MAX_DEPTH, norm: str = "batch",
                  name: str = "", provenance: dict[str, Any] | None = None) -> Genotype:
    """An ``mbnas`` genotype document for a chain of nodes (validated)."""
    doc = Genotype(method="mbnas", spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                   spec=spec_of(nodes, base_channels, max_depth, norm), name=name, provenance=provenance or {})
    return Genotype.from_dict(doc.to_dict())
