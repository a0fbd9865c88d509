"""Errors for bad user input: every message names the file and the field at fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad input (genotype, dataset, config): raised before any training starts.

    The message reads ``<file>: <field>: <problem>`` so a user can go straight to the fix.
    """

    def __init__(self, file: str | Path | None, field: str | None, problem: str) -> None:
        self.file = str(file) if file is not None else "<in memory>"
        self.field = field or "<root>"
        self.problem = problem
        super().__init__(f"{self.file}: field '{self.field}': {problem}")


class GenotypeError(InputError):
    """A genotype document that cannot be loaded or built."""


class DatasetError(InputError):
    """A dataset (MSD layout) that fails validation."""


def read_json(path: str | Path, error: type[InputError] = InputError, field: str = "<root>",
              what: str = "this file", missing: str = "no such file") -> Any:
    """A user's JSON file parsed; a missing file, bad bytes, bad JSON or absurd nesting raise ``error`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise error(path, "<file>", missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise error(path, field, f"not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError as err:
        raise error(path, field, f"not UTF-8 text (byte {err.start}): {what} is a JSON file") from None
    except RecursionError:
        raise error(path, field, f"nested too deeply to be {what}") from None
