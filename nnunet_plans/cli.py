"""The nnU-Net bridge's command lines: ``medseg-nas-nnunet-export`` (``python scripts/nnunet_export.py``) and
``medseg-nas-nnunet-compare`` (``python scripts/nnunet_compare.py``); bad input gives one line naming the file and
the field, and exit status 1. Each command takes its function's own options (``functools.wraps``: fire reads the
wrapped signature, so ``--help`` lists them and a mistyped option is refused)."""

from __future__ import annotations

import functools
import logging
from typing import Any

from nas_ops.entry import fire_main
from nnunet_plans.compare import compare as run_compare
from nnunet_plans.export import export_plans


@functools.wraps(export_plans)
def export(*args: Any, **kwargs: Any) -> None:
    """Write ``<source_plans>_<name>.json`` beside nnU-Net's plans and print how to train it."""
    result = export_plans(*args, **kwargs)
    print(f"wrote {result.plans_path}")
    print(f"plans {result.plans_name}, configuration {result.configuration}: patch {result.patch_size}, "
          f"strides {result.strides}, {result.params:,} parameters, {result.macs / 1e9:.2f} GMACs per patch")
    print("train (one line per fold):")
    print("\n".join(result.commands))


@functools.wraps(run_compare)
def compare(*args: Any, **kwargs: Any) -> None:
    """Run the comparison harness (the first plans are the reference) and print the report."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = run_compare(*args, **kwargs)
    if kwargs.get("mode", "collect") != "print":
        print(report.markdown.read_text())
        print(f"wrote {report.markdown}, {report.table_csv}, {report.per_case_csv}, {report.boxplot}")


def export_main(argv: list[str] | None = None) -> None:
    fire_main(export, argv)


def compare_main(argv: list[str] | None = None) -> None:
    fire_main(compare, argv)
