"""Export a genotype as an nnU-Net plans variant and print the nnUNetv2_train commands that train it.

python scripts/nnunet_export.py GENOTYPE.json DATASET --configuration 3d_fullres [--name NAME] [--trainer T]
    [--patch_size "[32,160,160]"] [--rounding nearest|up|down] [--adapt_io] [--device cuda] [--folds "[0]"]

Options are those of :func:`nnunet_plans.export.export_plans` (``medseg-nas-nnunet-export`` after ``pip install``).
Needs nnUNet_raw / nnUNet_preprocessed set and
nnUNetv2_plan_and_preprocess run for DATASET (docs/nnunet.md).
"""

from nnunet_plans.cli import export, export_main

main = export  # the command's function (tests call it)

if __name__ == "__main__":
    export_main()  # bad input: one line naming the file and field, exit status 1
