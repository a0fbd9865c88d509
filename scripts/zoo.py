"""The model-zoo CLI (``medseg-nas-zoo`` after ``pip install``): see :mod:`nas_ops.zoo.cli`.

python scripts/zoo.py pack runs/bixnas_demo bixnas 0.1.0 --out_dir zoo
python scripts/zoo.py index zoo/bixnas_demomonuseg_v0.1.0.zip --index_path zoo/index.json
python scripts/zoo.py list --index_path zoo/index.json --method bixnas
python scripts/zoo.py install bixnas_demomonuseg --index_path file:///path/to/zoo/index.json --target_dir models
python scripts/zoo.py export models/bixnas_demomonuseg      # models/model.ts and models/model.onnx, checked
"""

from nas_ops.zoo.cli import main

if __name__ == "__main__":
    main()
