"""A run's identity: the plain data that decides its result, compared when a run is resumed or reported.

Settings are JSON already; the components a bundle config builds (loss, optimiser, scheduler, transforms,
inferer) are described by :func:`component_identity`: their class and their scalar settings, so that swapping a
loss or changing an optimiser's learning rate in the config makes another run, not a resumed one.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

# run-time state, not settings (private attributes are skipped too)
_SKIP = {"training", "last_epoch", "base_lrs", "verbose", "R", "lr_lambdas", "do_transform"}


_SENTINEL = object()


def _plain(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int, str))


def _data(value: Any) -> Any:
    """``value`` as JSON data when it is plain (scalars, and lists and dicts of them), else a sentinel."""
    if _plain(value):
        return value
    if isinstance(value, (list, tuple)):
        items = [_data(v) for v in value]
        return _SENTINEL if any(v is _SENTINEL for v in items) else items
    if isinstance(value, dict):
        return {str(k): d for k, v in value.items() if (d := _data(v)) is not _SENTINEL}
    return _SENTINEL


def component_identity(obj: Any, depth: int = 3) -> Any:
    """``{"class": "module.Class", <plain settings>, <child components>}`` of a config component."""
    data = _data(obj)
    if data is not _SENTINEL:
        return data
    if isinstance(obj, (list, tuple)):
        return [component_identity(v, depth) for v in obj]
    doc: dict[str, Any] = {"class": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    if depth == 0:
        return doc
    for key, value in sorted(getattr(obj, "__dict__", {}).items()):
        if key in _SKIP or key.startswith("_"):
            continue
        data = _data(value)
        if data is not _SENTINEL:
            doc[key] = data
        elif key == "transforms" and isinstance(value, (list, tuple)):
            doc[key] = [component_identity(t, depth - 1) for t in value]
    if isinstance(obj, nn.Module):
        for name, child in obj.named_children():
            doc[name] = component_identity(child, depth - 1)
    return doc
