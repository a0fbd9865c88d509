"""The genotype: an architecture as a versioned JSON document, validated on load.

Search writes it; training, inference, export and nnU-Net read it. The envelope is the same for
every method (format, version, method, spatial_dims, channels, provenance); the method's own
``spec`` is checked by the method registered under that name (see :mod:`nas_ops.registry`).
No pickle and no eval: a genotype is plain JSON data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas_ops.atomic import write_json_atomic
from nas_ops.errors import GenotypeError, read_json

FORMAT = "medseg-nas-genotype"
VERSION = 1

_ENVELOPE: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "version": int,
    "method": str,
    "spatial_dims": int,
    "in_channels": int,
    "out_channels": int,
    "spec": dict,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {"name": str, "provenance": dict}


class SpecError(Exception):
    """Raised by a method's spec validator; the loader turns it into a :class:`GenotypeError`.

    ``field`` is relative to ``spec`` (e.g. ``"features[2]"``).
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def check_known_keys(spec: dict[str, Any], known: Any) -> None:
    """Refuse a spec key the method does not read."""
    for key in spec:
        if key not in known:
            raise SpecError(key, f"unknown key (known: {sorted(known)})")


def check_positive_ints(values: Any, field: str, length: int | None = None, min_length: int = 1) -> None:
    """Refuse anything but a list of positive integers (of ``length`` entries, or at least ``min_length``)."""
    if not isinstance(values, list) or (length is not None and len(values) != length) or len(values) < min_length:
        size = f"{length}" if length is not None else f"at least {min_length}"
        raise SpecError(field, f"must be a list of {size} positive integers, got {values!r:.60}")
    for i, v in enumerate(values):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise SpecError(f"{field}[{i}]", f"must be a positive integer, got {v!r}")


def check_choice(value: Any, field: str, choices: Any) -> None:
    """Refuse a value outside ``choices``."""
    if value not in choices:
        raise SpecError(field, f"must be one of {list(choices)}, got {value!r}")


@dataclass(frozen=True)
class Genotype:
    """One architecture: which method builds it, its I/O and the method's own ``spec``.

    ``out_channels`` counts every class, background included (MONAI convention).
    ``provenance`` records how it was found: search config, seed, dataset, scores.
    """

    method: str
    spatial_dims: int
    in_channels: int
    out_channels: int
    spec: dict[str, Any]
    name: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION
    source: str | None = field(default=None, compare=False, repr=False)  # the file it was read from (for messages)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, keys in a fixed readable order."""
        return {
            "format": FORMAT,
            "version": self.version,
            "name": self.name,
            "method": self.method,
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "spec": self.spec,
            "provenance": self.provenance,
        }

    def replace(self, **changes: Any) -> Genotype:
        """A copy with some fields changed (validated again)."""
        doc = self.to_dict()
        doc.update(changes)
        return Genotype.from_dict(doc, source=self.source)

    @classmethod
    def from_dict(cls, doc: Any, source: str | Path | None = None) -> Genotype:
        """Validate a parsed document; every problem names ``source`` and the field."""
        if not isinstance(doc, dict):
            raise GenotypeError(source, "<root>", f"expected a JSON object, got {type(doc).__name__}")
        for key, typ in _ENVELOPE.items():
            if key not in doc:
                raise GenotypeError(source, key, "missing")
            _check_type(doc[key], typ, source, key)
        for key, typ in _OPTIONAL.items():
            if key in doc:
                _check_type(doc[key], typ, source, key)
        unknown = sorted(set(doc) - set(_ENVELOPE) - set(_OPTIONAL))
        if unknown:
            raise GenotypeError(source, unknown[0], f"unknown field (known: {sorted({**_ENVELOPE, **_OPTIONAL})})")
        if doc["format"] != FORMAT:
            raise GenotypeError(source, "format", f"expected '{FORMAT}', got '{doc['format']}'")
        if doc["spatial_dims"] not in (2, 3):
            raise GenotypeError(source, "spatial_dims", f"must be 2 or 3, got {doc['spatial_dims']}")
        for key in ("in_channels", "out_channels"):
            if doc[key] < 1:
                raise GenotypeError(source, key, f"must be >= 1, got {doc[key]}")
        from nas_ops.registry import get_method  # late: the registry imports this module

        try:
            method = get_method(doc["method"])
        except KeyError as err:
            raise GenotypeError(source, "method", str(err.args[0])) from None
        if doc["version"] not in method.versions:
            known = list(method.versions)
            problem = f"method '{method.name}' reads versions {known}, got {doc['version']}"
            raise GenotypeError(source, "version", problem)
        genotype = cls(
            method=doc["method"],
            spatial_dims=doc["spatial_dims"],
            in_channels=doc["in_channels"],
            out_channels=doc["out_channels"],
            spec=doc["spec"],
            name=doc.get("name", ""),
            provenance=doc.get("provenance", {}),
            version=doc["version"],
            source=str(source) if source is not None else None,
        )
        try:
            method.validate(genotype)
        except SpecError as err:
            top = err.field in ("spatial_dims", "in_channels", "out_channels", "name")  # fields beside spec
            field = err.field if top else f"spec.{err.field}" if err.field else "spec"
            raise GenotypeError(source, field, err.problem) from None
        return genotype

    def matches_file(self, path: str | Path) -> bool:
        """Whether ``path`` already holds this genotype (a finished search reports it and leaves the file as is)."""
        try:
            return Path(path).is_file() and Genotype.load(path).to_dict() == self.to_dict()
        except GenotypeError:
            return False

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        """Read and validate a genotype file."""
        path = Path(path)
        return cls.from_dict(read_json(path, GenotypeError, what="a genotype"), source=path)

    def save(self, path: str | Path) -> Path:
        """Write the document atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_dict())
        return path


def _check_type(value: Any, typ: type | tuple[type, ...], source: str | Path | None, key: str) -> None:
    # bool is an int in Python; a genotype never means True by 1
    if isinstance(value, bool) and typ is not bool or not isinstance(value, typ):
        expected = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise GenotypeError(source, key, f"expected {expected}, got {type(value).__name__} ({value!r:.40})")
