"""The one config checker: every value a bundle or a CLI passes is checked here, before anything is written.

Checks come from type hints, so a setting is declared once, where it is read:

- a method's nested config block (``search`` in ``search.json``) is a frozen dataclass deriving
  :class:`ConfigBlock`; its fields' types and :class:`Rule` metadata are the checks, and
  :meth:`ConfigBlock.from_values` refuses an unknown key with the nearest known one;
- an entry function (``train``, ``predict``, ``evaluate``, a search) is decorated with :func:`checked`; its
  parameters' types (``Annotated[int, Rule(min=1)]`` for a range) are the checks.

A bad value raises :class:`~nas_ops.errors.InputError` naming the source (the config file), the key and the
problem. Supported types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``list[int]``/``tuple[int, ...]``
(and of float, str), ``X | None``; anything else (a network, a path, a component) is passed through unchecked.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import os
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from nas_ops.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])
_MISSING = object()


@dataclass(frozen=True)
class Rule:
    """Bounds of a value (numbers, or every element of a list): ``min``/``max`` inclusive, ``length`` of a list,
    ``multiple_of`` (sizes a network's stride divides)."""

    min: float | None = None
    max: float | None = None
    length: int | tuple[int, ...] | None = None
    multiple_of: int | None = None
    why: str = ""


PositiveInt = Annotated[int, Rule(min=1)]
NonNegativeInt = Annotated[int, Rule(min=0)]
PositiveFloat = Annotated[float, Rule(min=1e-300)]
Fraction = Annotated[float, Rule(min=0.0, max=1.0)]
NFolds = Annotated[int, Rule(min=2)]
Size2D = Annotated[list[int], Rule(min=1, length=2)]
Size3D = Annotated[list[int], Rule(min=1, length=3)]
SliceAxis = Literal[0, 1, 2]
Backend = Literal["local", "ray", "subprocess"]
Cases = Literal["validation", "training", "all"]

# The keys every bundle shares, and their types: a bundle's `initialize` checks those its config holds before any
# component is built; the entry functions take the same types.
CONVENTIONS: dict[str, Any] = {
    "seed": NonNegativeInt, "fold": NonNegativeInt, "n_folds": NFolds, "device": str,
    "num_workers": NonNegativeInt, "num_threads": PositiveInt | None, "epochs": PositiveInt,
    "batch_size": PositiveInt, "val_interval": PositiveInt, "lr": PositiveFloat, "spatial_size": Size2D,
    "slice_axis": SliceAxis, "patch_size": Size3D, "samples_per_volume": PositiveInt, "keep_empty_fraction": Fraction,
    "fit_channels": bool, "plots": bool, "cases": Cases, "tolerance_mm": PositiveFloat, "backend": Backend,
    "parallel_jobs": PositiveInt, "ray_address": str | None, "max_params": PositiveInt,
    "memory_limit_gb": PositiveFloat | None, "allow_outside_dataset_dir": bool,
}


def nearest(key: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known key, or ``""``."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe(hint: Any) -> str:
    hint = _split(hint)[0]
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(hint))
    if origin in (list, tuple):
        element = get_args(hint)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(element, str(element))
    if hint is type(None):
        return "null"
    if hint is bool:
        return "true or false"
    return {int: "an integer", float: "a number", str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


def _scalar_ok(value: Any, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is type(None):
        return value is None
    return False


def _checkable(hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Annotated:
        return _checkable(get_args(hint)[0])
    if origin is Literal:
        return True
    if origin in (Union, types.UnionType):
        return all(_checkable(a) for a in get_args(hint))
    if origin in (list, tuple):
        args = [a for a in get_args(hint) if a is not Ellipsis]
        return len(set(args)) == 1 and args[0] in (int, float, str)
    return hint in (bool, int, float, str, type(None))


def _split(hint: Any) -> tuple[Any, Rule | None]:
    """``(type, rule)`` of a hint, ``Annotated[int, Rule(...)]`` or plain."""
    if get_origin(hint) is Annotated:
        base, *meta = get_args(hint)
        return base, next((m for m in meta if isinstance(m, Rule)), None)
    return hint, None


def check_value(key: str, value: Any, hint: Any, source: str | None = None) -> Any:
    """``value`` if it is of type ``hint`` and within its :class:`Rule`; lists come back as lists."""
    hint, rule = _split(hint)
    if not _checkable(hint):
        return value
    origin = get_origin(hint)
    options = get_args(hint) if origin in (Union, types.UnionType) else (hint,)
    for option in options:
        option, own_rule = _split(option)
        option_rule = own_rule or rule
        o = get_origin(option)
        if option is type(None):
            if value is None:
                return None
        elif o is Literal:
            if value in get_args(option) and not isinstance(value, bool) or (
                    isinstance(value, bool) and any(a is value for a in get_args(option))):
                return value
        elif o in (list, tuple):
            element = get_args(option)[0]
            if isinstance(value, (list, tuple)) and all(_scalar_ok(v, element) for v in value):
                _check_rule(key, list(value), option_rule, source)
                return [float(v) for v in value] if element is float else list(value)
        elif option is bool and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"  # the command line (fire) passes JSON's true/false as strings
        elif _scalar_ok(value, option):
            _check_rule(key, value, option_rule, source)
            return float(value) if option is float else value
    raise InputError(source, key, f"must be {_describe(hint)}, got {value!r:.60}")


def _check_rule(key: str, value: Any, rule: Rule | None, source: str | None) -> None:
    if rule is None:
        return
    why = f" ({rule.why})" if rule.why else ""
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and rule.length is not None:
        lengths = rule.length if isinstance(rule.length, tuple) else (rule.length,)
        if len(value) not in lengths:
            raise InputError(source, key, f"must have {' or '.join(map(str, lengths))} entries, got {value!r:.60}"
                             f"{why}")
    for v in values:
        if isinstance(v, str):
            continue
        if rule.min is not None and v < rule.min:
            bound = "a positive number" if 0 < rule.min < 1e-100 else f">= {rule.min:g}"
            raise InputError(source, key, f"must be {bound}, got {value!r:.60}{why}")
        if rule.max is not None and v > rule.max:
            raise InputError(source, key, f"must be <= {rule.max:g}, got {value!r:.60}{why}")
        if rule.multiple_of and v % rule.multiple_of:
            raise InputError(source, key, f"every size must be divisible by {rule.multiple_of}, got {value!r:.60}"
                             f"{why}")


class ConfigBlock:
    """Base of a method's nested config block (a frozen dataclass); see the module docstring."""

    @classmethod
    def from_values(cls, values: dict[str, Any] | None = None, source: str | None = None, prefix: str = "",
                    **more: Any):
        """Check ``values`` (a bundle's block, merged with ``more``) and build the block; unknown keys refused."""
        if values is not None and not isinstance(values, dict):
            raise InputError(source, prefix.rstrip("#") or "<root>", f"must be an object of settings, got "
                             f"{values!r:.60}")
        values = {**(values or {}), **more}
        hints = get_type_hints(cls, include_extras=True)
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                raise InputError(source, f"{prefix}{key}", f"unknown key{nearest(key, known)}; known: {known}")
        checked_values = {k: check_value(f"{prefix}{k}", v, hints[k], source) for k, v in values.items()}
        for key, value in checked_values.items():
            if isinstance(value, list) and get_origin(_strip(hints[key])) is tuple:
                checked_values[key] = tuple(value)
        block = cls(**checked_values)
        block.check(source, prefix)
        return block

    @classmethod
    def from_block(cls, block: dict[str, Any] | None, source: str | None, more: dict[str, Any]):
        """The block of a bundle config (its keys named ``search#<key>``), or keyword arguments of a Python call
        (``more``, named plainly); not both."""
        if block is not None and more:
            key = sorted(more)[0]
            raise InputError(source, key, "unknown argument of the search: its settings go in the search block "
                             f"(--search#{key})")
        return cls.from_values(block, source, prefix="search#" if block is not None else "", **more)

    def check(self, source: str | None, prefix: str = "") -> None:
        """Checks across fields (override); single fields are checked from their types."""

    def checked(self, source: str | None = None, prefix: str = ""):
        """This block, checked as :meth:`from_values` checks a bundle's (for a block built by its constructor, e.g.
        a config component)."""
        return type(self).from_values(dataclasses.asdict(self), source, prefix)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return json_ready(dataclasses.asdict(self))


def _strip(hint: Any) -> Any:
    hint = _split(hint)[0]
    if get_origin(hint) in (Union, types.UnionType):
        non_none = [a for a in get_args(hint) if a is not type(None)]
        return _strip(non_none[0]) if len(non_none) == 1 else hint
    return hint


def check_output_dir(path: str | Path, key: str = "output_dir", source: str | None = None) -> Path:
    """``path`` as a folder a run may write into: refused when it (or a parent) is an existing file."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise InputError(source, key, f"{path} cannot be a folder: {p} is a file")
            if not os.access(p, os.W_OK | os.X_OK):  # a read-only mount or no permission: found before any work
                raise InputError(source, key, f"{path} cannot be written: {p} is read-only or not yours to write "
                                 f"(pass another {key})")
            break
    return path


def json_ready(value: Any) -> Any:
    """Tuples as lists, recursively (what JSON round-trips to)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def checked(fn: F) -> F:
    """Check an entry function's arguments against its type hints at every call (see the module docstring).

    The source named in a refusal is the argument ``config_source`` (a bundle passes its config file's name; a
    function may declare the parameter to use it too), else the function's name.
    """
    signature = inspect.signature(fn)
    hints = get_type_hints(fn, include_extras=True)
    own = "config_source" in signature.parameters

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        source = (kwargs.get("config_source") if own else kwargs.pop("config_source", None)) or f"{fn.__name__}()"
        bound = signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            param = signature.parameters[name]
            if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL) or name not in hints:
                continue
            bound.arguments[name] = check_value(name, value, hints[name], source)
        return fn(*bound.args, **bound.kwargs)

    return typing.cast(F, wrapper)
