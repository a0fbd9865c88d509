"""The model-zoo command line (``medseg-nas-zoo``, or ``python scripts/zoo.py``): pack a trained run into a versioned
bundle zip, index it, list an index, install from it, export an installed bundle to TorchScript and ONNX.

medseg-nas-zoo pack runs/bixnas_demo bixnas 0.1.0 --out_dir zoo
medseg-nas-zoo index zoo/bixnas_demonuclei_v0.1.0.zip --index_path zoo/index.json
medseg-nas-zoo list --index_path zoo/index.json --method bixnas
medseg-nas-zoo install bixnas_demonuclei --index_path file:///path/to/zoo/index.json --target_dir models
medseg-nas-zoo export models/bixnas_demonuclei      # models/model.ts and models/model.onnx, checked
"""

from __future__ import annotations

from nas_ops.entry import fire_main
from nas_ops.zoo.export import export
from nas_ops.zoo.index import index, listing
from nas_ops.zoo.install import install
from nas_ops.zoo.pack import pack


def main(argv: list[str] | None = None) -> None:
    """Run one zoo command (bad input: one line naming the file and field, exit status 1)."""
    fire_main({"pack": pack, "index": index, "list": listing, "install": install, "export": export}, argv)
