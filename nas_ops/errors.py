"""Errors for bad user input: every message names the file and the field at fault."""

from __future__ import annotations

from pathlib import Path


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
