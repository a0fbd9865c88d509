"""A run's identity: the plain data that decides its result, compared when a run is resumed or reported.

Settings are JSON already; the components a bundle config builds (loss, optimiser, scheduler, transforms,
inferer) are described by :func:`component_identity`: their class and their scalar settings, so that swapping a
loss or changing an optimiser's learning rate in the config makes another run, not a resumed one.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

_SKIP = {"training", "last_epoch", "_step_count", "_last_lr", "base_lrs", "verbose", "_get_lr_called_within_step",
         "_is_initial", "R", "lr_lambdas"}


def _plain(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int, str))


def component_identity(obj: Any, depth: int = 3) -> Any:
    """``{"class": "module.Class", <scalar settings>, <child components>}`` of a config component."""
    if _plain(obj):
        return obj
    if isinstance(obj, (list, tuple)):
        return [component_identity(v, depth) for v in obj]
    if isinstance(obj, dict):
        return {str(k): component_identity(v, depth) for k, v in obj.items() if _plain(v) or isinstance(v, (
            list, tuple, dict))}
    doc: dict[str, Any] = {"class": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    if depth == 0:
        return doc
    attrs = getattr(obj, "__dict__", {})
    for key, value in sorted(attrs.items()):
        if key in _SKIP or key.startswith("__"):
            continue
        name = key.lstrip("_")
        if _plain(value) or (isinstance(value, (list, tuple)) and all(_plain(v) for v in value)):
            doc[name] = list(value) if isinstance(value, tuple) else value
        elif isinstance(value, dict) and all(_plain(v) for v in value.values()):
            doc[name] = {str(k): v for k, v in value.items()}
        elif key == "transforms" and isinstance(value, (list, tuple)):
            doc[name] = [component_identity(t, depth - 1) for t in value]
    if isinstance(obj, nn.Module):
        for name, child in obj.named_children():
            doc[name] = component_identity(child, depth - 1)
    return doc
