"""A bundle's workflows (``search.json``, ``train.json``, ...) run in this process as ``python -m monai.bundle run``
runs them: the same configs, the same code path, overrides as its ``--key value``. Bad input leaves as the
library's :class:`~nas_ops.errors.InputError` rather than MONAI's wrapped ``RuntimeError``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas_ops.entry import input_error_in
from nas_ops.errors import InputError


def config_files(bundle_dir: str | Path, names: Sequence[str]) -> list[str]:
    """The paths of a bundle's configs (``["train.json", "demo.json"]`` -> ``[<bundle>/configs/train.json, ...]``)."""
    return [str(Path(bundle_dir) / "configs" / name) for name in names]


def run_workflow(bundle_dir: str | Path, names: Sequence[str], **overrides: Any) -> None:
    """Run the ``run`` of a bundle's configs ``names`` (merged in order) with ``overrides``; ``bundle_root`` is the
    bundle's folder."""
    from monai.bundle.scripts import run

    try:
        run(config_file=config_files(bundle_dir, names), bundle_root=str(bundle_dir), **overrides)
    except Exception as exc:
        err = input_error_in(exc)
        if err is None:
            raise
        raise InputError(err.file, err.field, err.problem) from None


def config_value(bundle_dir: str | Path, names: Sequence[str], key: str, **overrides: Any) -> Any:
    """The parsed value of ``key`` in a bundle's merged configs (``search``: the effective search block)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(ConfigParser.load_config_files(config_files(bundle_dir, names)))
    parser.update({"bundle_root": str(bundle_dir), **overrides})
    return parser.get_parsed_content(key)
