"""TorchScript (MONAI's ckpt_export) and ONNX export of every method's network, 2D and 3D: the exported files give
the eager network's output, and run on the CPU from the file alone (no medseg-nas import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_ops.baselines.unet import unet_genotype
from nas_ops.bixnas.space import RELEASED_SKIP_SETS, bixnet_genotype
from nas_ops.c2fnas.space import C2FNAS_PANC_LEVELS, C2FNAS_PANC_OPS, c2fnas_genotype
from nas_ops.dints.space import random_genotype
from nas_ops.errors import InputError
from nas_ops.mbnas.space import SearchSpace, make_genotype
from nas_ops.registry import build_network
from nas_ops.training.artifacts import Geometry, save_model
from nas_ops.zoo.export import check_export, export, export_onnx, export_torchscript

pytest.importorskip("onnxruntime", reason="the optional extra 'export' (onnx, onnxscript, onnxruntime)")
torch.set_num_threads(1)
REPO_ROOT = Path(__file__).resolve().parents[1]


def _mbnas(spatial_dims: int):
    space = SearchSpace(4, 2)
    return make_genotype(space.random(np.random.default_rng(0)), 1, 3, spatial_dims=spatial_dims, base_channels=4,
                         max_depth=2)


CASES = {  # bundle whose network_def builds it, genotype, trained input size
    "unet2d": ("mbnas", unet_genotype(2, 1, 3, features=[4, 8, 16]), [32, 32]),
    "unet3d": ("c2fnas", unet_genotype(3, 1, 3, features=[4, 8, 16]), [16, 16, 16]),
    "bixnet2d": ("bixnas", bixnet_genotype(RELEASED_SKIP_SETS, 2, 3, 2, width=4, stem_width=4), [64, 64]),
    "bixnet3d": ("bixnas", bixnet_genotype(RELEASED_SKIP_SETS, 3, 1, 2, width=2, stem_width=2), [32, 32, 32]),
    "mbnas2d": ("mbnas", _mbnas(2), [32, 32]),
    "mbnas3d": ("mbnas", _mbnas(3), [16, 16, 16]),
    "c2fnas3d": ("c2fnas", c2fnas_genotype(C2FNAS_PANC_LEVELS, C2FNAS_PANC_OPS, 1, 3, base_channels=2,
                                           stem_channels=2), [32, 32, 32]),
    "dints3d": ("c2fnas", random_genotype(0, 1, 3, channel_mul=0.125, num_blocks=4), [32, 32, 32]),
}


def _model_dir(tmp_path: Path, case: str) -> tuple[str, Path]:
    bundle, genotype, size = CASES[case]
    torch.manual_seed(0)
    net = build_network(genotype)
    if len(size) == 2:
        geometry = Geometry(2, spatial_size=size)
    else:
        geometry = Geometry(3, patch_size=size)
    return bundle, save_model(tmp_path / "models", net, genotype, geometry)


@pytest.mark.parametrize("case", sorted(CASES))
def test_exported_torchscript_and_onnx_equal_the_eager_network(tmp_path, case):
    bundle, models = _model_dir(tmp_path, case)
    ts = export_torchscript(REPO_ROOT / "bundles" / bundle, models, tmp_path / "out" / "model.ts")
    onnx_file = export_onnx(models, tmp_path / "out" / "model.onnx")
    diffs = check_export(models, ts, onnx_file)  # raises unless allclose
    assert diffs["torchscript"] <= 1e-5 and diffs["onnx"] <= 1e-3, diffs
    # the files alone: a fresh interpreter that never imports medseg-nas
    size = CASES[case][2]
    code = (
        "import sys, numpy as np, torch, onnxruntime\n"
        f"x = torch.randn(1, {CASES[case][1].in_channels}, *{size})\n"
        f"a = torch.jit.load({str(ts)!r})(x).detach().numpy()\n"
        f"s = onnxruntime.InferenceSession({str(onnx_file)!r}, providers=['CPUExecutionProvider'])\n"
        "b = s.run(None, {'image': x.numpy()})[0]\n"
        "assert a.shape == b.shape == (1, 3 if a.shape[1] == 3 else a.shape[1], *x.shape[2:]), a.shape\n"
        "np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)\n"
        "assert not any(m.startswith('nas_ops') for m in sys.modules), 'medseg-nas was imported'\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_export_of_a_bundle_folder_and_an_unknown_format(tmp_path):
    bundle, models = _model_dir(tmp_path, "unet2d")
    with pytest.raises(InputError, match=r"field 'formats': unknown format 'tflite'"):
        export(str(REPO_ROOT / "bundles" / bundle), formats=("tflite",), model_dir=str(models))
    result = export(str(REPO_ROOT / "bundles" / bundle), model_dir=str(models), out_dir=str(tmp_path / "x"))
    assert Path(result["torchscript"]).is_file() and Path(result["onnx"]).is_file()
    extra = {"metadata.json": ""}  # MONAI's save_net_with_metadata keeps the bundle's metadata in the file
    torch.jit.load(result["torchscript"], _extra_files=extra)
    assert json.loads(extra["metadata.json"])["network_data_format"]["inputs"]["image"]["type"] == "image"
