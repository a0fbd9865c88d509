"""Compare nnU-Net's default with searched networks on one dataset: train or print commands, collect, test, tabulate.

python scripts/nnunet_compare.py DATASET --plans nnUNetPlans,nnUNetPlans_mbnas --folds 0,1,2,3,4 \
    --configuration 3d_fullres --mode local|print|collect [--trainer nnUNetTrainer] [--device cuda] \
    [--out_dir DIR] [--timeout_s 86400] [--jobs 1] [--costs False]

Options are those of :func:`nnunet_plans.compare.compare`. Writes comparison.md, comparison.csv, per_case.csv and
dice_boxplot.png (docs/nnunet.md).
"""

from nnunet_plans.cli import compare, compare_main

main = compare  # the command's function (tests call it)

if __name__ == "__main__":
    compare_main()  # bad input: one line naming the file and field, exit status 1
