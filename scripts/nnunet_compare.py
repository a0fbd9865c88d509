"""Compare nnU-Net's default with searched networks on one dataset: train or print commands, collect, test, tabulate.

python scripts/nnunet_compare.py DATASET --plans nnUNetPlans,nnUNetPlans_mbnas --folds 0,1,2,3,4 \
    --configuration 3d_fullres --mode local|print|collect [--trainer nnUNetTrainer] [--device cuda] \
    [--out_dir DIR] [--timeout_s 86400] [--jobs 1] [--costs False]

Options are those of :func:`nnunet_plans.compare.compare`. Writes comparison.md, comparison.csv, per_case.csv and
dice_boxplot.png (docs/nnunet.md).
"""

from __future__ import annotations

import logging

from nas_ops.entry import fire_main
from nnunet_plans.compare import compare


def main(dataset: str, **options) -> None:
    """Run the comparison harness (the first plans are the reference) and print the report."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = compare(dataset, **options)
    if options.get("mode", "collect") != "print":
        print(report.markdown.read_text())
        print(f"wrote {report.markdown}, {report.table_csv}, {report.per_case_csv}, {report.boxplot}")


if __name__ == "__main__":
    fire_main(main)  # bad input: one line naming the file and field, exit status 1
