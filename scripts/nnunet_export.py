"""Export a genotype as an nnU-Net plans variant and print the nnUNetv2_train commands that train it.

python scripts/nnunet_export.py GENOTYPE.json DATASET --configuration 3d_fullres [--name NAME] [--trainer T]
    [--patch_size "[32,160,160]"] [--rounding nearest|up|down] [--adapt_io] [--device cuda] [--folds "[0]"]

Options are those of :func:`nnunet_plans.export.export_plans`. Needs nnUNet_raw / nnUNet_preprocessed set and
nnUNetv2_plan_and_preprocess run for DATASET (docs/nnunet.md).
"""

from __future__ import annotations

from nas_ops.entry import fire_main
from nnunet_plans.export import export_plans


def main(genotype: str, dataset: str, **options) -> None:
    """Write ``<source_plans>_<name>.json`` beside nnU-Net's plans and print how to train it."""
    result = export_plans(genotype, dataset, **options)
    print(f"wrote {result.plans_path}")
    print(f"plans {result.plans_name}, configuration {result.configuration}: patch {result.patch_size}, "
          f"strides {result.strides}, {result.params:,} parameters, {result.macs / 1e9:.2f} GMACs per patch")
    print("train (one line per fold):")
    print("\n".join(result.commands))


if __name__ == "__main__":
    fire_main(main)  # bad input: one line naming the file and field, exit status 1
