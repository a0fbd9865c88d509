"""The model-zoo CLI: pack a trained run into a versioned bundle zip, index it, list an index, install from it.

python scripts/zoo.py pack runs/bixnas_demo bixnas 0.1.0 --out_dir zoo
python scripts/zoo.py index zoo/bixnas_demomonuseg_v0.1.0.zip --index_path zoo/index.json
python scripts/zoo.py list --index_path zoo/index.json --method bixnas
python scripts/zoo.py install bixnas_demomonuseg --index_path file:///path/to/zoo/index.json --target_dir models
python scripts/zoo.py export models/bixnas_demomonuseg      # models/model.ts and models/model.onnx, checked
"""

from __future__ import annotations

from nas_ops.entry import fire_main
from nas_ops.zoo.export import export
from nas_ops.zoo.index import index, listing
from nas_ops.zoo.install import install
from nas_ops.zoo.pack import pack

if __name__ == "__main__":
    fire_main({"pack": pack, "index": index, "list": listing, "install": install, "export": export})
