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


def check_config_key(config: dict[str, Any], key: str, source: str, field: str, where: str) -> None:
    """Refuse an override ``key`` (``a#b#c``, MONAI's nesting) that names nothing in a bundle's merged ``config``, in
    one line with the nearest key of the level where it goes astray (MONAI itself stops on such a key with two
    tracebacks, or adds a key nothing reads)."""
    from nas_ops.config import nearest

    node: Any = config
    walked: list[str] = []
    parts = key.split("#")
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            at = "#".join(walked)
            options = list(node) if isinstance(node, dict) else []
            joined = "_".join(parts[i:])  # search#coarse#epochs meant search#coarse_epochs
            if i + 1 < len(parts) and joined in options:
                hint = f" (did you mean '{'#'.join([*walked, joined])}'?)"
            else:
                hint = nearest(part, options)
            inside = f" in {at!r}" if at else ""
            raise InputError(source, field, f"{where} has no key {part!r}{inside}{hint}")
        walked.append(part)
