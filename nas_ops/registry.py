"""Registry of methods: a genotype's ``method`` name resolves to one validator and one builder.

The core knows no method. A method registers itself when its module is imported (:func:`register_method`), and
declares that module under the entry-point group ``medseg_nas.methods`` of its distribution's metadata, so the
first lookup of its name imports it in any process (nnU-Net workers, Ray tasks, bundle runs) with no set-up call::

    [project.entry-points."medseg_nas.methods"]
    unet = "nas_ops.baselines.unet"

A plug-in package outside this project does the same in its own ``pyproject.toml``. A network a method builds
follows :class:`nas_ops.protocol.SegmentationNetwork`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from torch import nn

from nas_ops.genotype import Genotype

ENTRY_POINT_GROUP = "medseg_nas.methods"


@dataclass(frozen=True)
class Method:
    """How to check and build the genotypes of one method."""

    name: str
    validate: Callable[[Genotype], None]  # raises nas_ops.genotype.SpecError
    build: Callable[[Genotype], nn.Module]
    versions: tuple[int, ...] = (1,)


_METHODS: dict[str, Method] = {}


def register_method(
    name: str,
    *,
    validate: Callable[[Genotype], None],
    build: Callable[[Genotype], nn.Module],
    versions: tuple[int, ...] = (1,),
) -> Method:
    """Register a method; a name resolves to exactly one thing, so a second registration fails."""
    if name in _METHODS:
        raise ValueError(f"method '{name}' is already registered")
    _METHODS[name] = Method(name=name, validate=validate, build=build, versions=versions)
    return _METHODS[name]


def declared_methods() -> dict[str, str]:
    """Method name -> the module that registers it, from the installed distributions' entry points."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_method(name: str) -> Method:
    """The registered method, importing its declared module on first use."""
    if name not in _METHODS:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                ep.load()
                break
    if name not in _METHODS:
        known = sorted(set(_METHODS) | set(declared_methods()))
        raise KeyError(f"unknown method '{name}' (known: {known})")
    return _METHODS[name]


def build_network(genotype: Genotype | str | Path) -> nn.Module:
    """Build the network of a genotype (a :class:`Genotype` or the path of its JSON file)."""
    if not isinstance(genotype, Genotype):
        genotype = Genotype.load(genotype)
    return get_method(genotype.method).build(genotype)
