"""Registry of methods: a genotype's ``method`` name resolves to one validator and one builder.

Methods register themselves when their module is imported; the built-in ones are imported on
first lookup, so ``build_network`` works in any process (nnU-Net workers, bundle runs) with no
set-up call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from nas_ops.genotype import Genotype

# method name -> module that registers it
BUILTIN_METHODS: dict[str, str] = {
    "unet": "nas_ops.baselines.unet",
    "bionet": "nas_ops.bixnas.bionet",
    "bixnet": "nas_ops.bixnas.bixnet",
    "mbnas": "nas_ops.mbnas.network",
    "resunet": "nas_ops.baselines.resunet",
}


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


def get_method(name: str) -> Method:
    """The registered method, importing a built-in one on first use."""
    if name not in _METHODS and name in BUILTIN_METHODS:
        importlib.import_module(BUILTIN_METHODS[name])
    if name not in _METHODS:
        known = sorted(set(_METHODS) | set(BUILTIN_METHODS))
        raise KeyError(f"unknown method '{name}' (known: {known})")
    return _METHODS[name]


def build_network(genotype: Genotype | str | Path) -> nn.Module:
    """Build the network of a genotype (a :class:`Genotype` or the path of its JSON file)."""
    if not isinstance(genotype, Genotype):
        genotype = Genotype.load(genotype)
    return get_method(genotype.method).build(genotype)
