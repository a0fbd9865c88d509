"""Helpers that the bundle configs call: where the bundle lies, and the conventions every bundle shares.

Every bundle config exposes ``bundle_root``, ``dataset_dir``, ``output_dir``, ``seed``, ``device`` and
``fold``; a ``configs/demo.json`` overlay sets a small CPU budget and the demo data.
"""

from __future__ import annotations

from pathlib import Path

from nas_ops.errors import InputError


def bundle_root(name: str) -> str:
    """The bundle's folder: ``bundles/<name>`` under the working directory (a checkout of this project), or the
    working directory itself when it is the bundle (a bundle downloaded from a model zoo)."""
    in_repo = Path("bundles") / name
    if (in_repo / "configs").is_dir():
        return str(in_repo)
    if (Path("configs") / "metadata.json").is_file():
        return "."
    raise InputError(
        None, "bundle_root", f"cannot find bundle '{name}' from {Path.cwd()}: run from the project's root or the "
        "bundle's folder, or pass --bundle_root",
    )
