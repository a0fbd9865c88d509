"""Test-wide settings and shared fixtures: one torch thread per process (2-core machines); nnU-Net folders with a
planned fake dataset."""

import json

import pytest
import torch

torch.set_num_threads(1)


def _configuration(dims: int, patch: list[int]) -> dict:
    conv = "torch.nn.modules.conv.Conv3d" if dims == 3 else "torch.nn.modules.conv.Conv2d"
    strides = [[1] * dims] + [[2] * dims] * 2
    return {
        "data_identifier": f"nnUNetPlans_{dims}d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": patch, "median_image_size_in_voxels": patch, "spacing": [1.0] * dims,
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False], "batch_dice": False,
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": conv,
                            "kernel_sizes": [[3] * dims] * 3, "strides": strides, "n_conv_per_stage": [2, 2, 2],
                            "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
                            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
                            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
    }


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch):
    """nnU-Net folders with a planned fake Dataset990 (1 channel, background + 2 labels)."""
    dirs = {k: tmp_path / k for k in ("raw", "preprocessed", "results")}
    for key, path in dirs.items():
        path.mkdir()
        monkeypatch.setenv(f"nnUNet_{key}", str(path))
    folder = dirs["preprocessed"] / "Dataset990_Fake"
    folder.mkdir()
    plans = {"dataset_name": "Dataset990_Fake", "plans_name": "nnUNetPlans", "label_manager": "LabelManager",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "configurations": {"2d": _configuration(2, [40, 36]), "3d_fullres": _configuration(3, [20, 40, 36])}}
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    dataset = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "inner": 1, "outer": 2},
               "numTraining": 6, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    return dirs
