"""Predict label maps for the cases of a dataset with a trained genotype, written beside the input's geometry.

2D networks on volumes predict slice by slice along ``slice_axis`` (each slice resized to the training size and
the logits resized back); 2D networks on images predict the resized image; 3D networks use MONAI's sliding-window
inference. Volumes are written as NIfTI with the input's affine, 2D images as PNG, under
``<output_dir>/predictions/<case>.nii.gz|png``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from PIL import Image
from torch import nn
from tqdm import tqdm

from nas_ops.data.loaders import load_case
from nas_ops.data.msd import MSDDataset, case_id, is_nifti
from nas_ops.data.setup import check_compatible, load_checked_dataset
from nas_ops.data.splits import fold_items
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network
from nas_ops.training.loop import resolve_device

log = logging.getLogger(__name__)
CASE_SETS = ("validation", "training", "all")


@torch.no_grad()
def predict_slices(model: nn.Module, slices: torch.Tensor, spatial_size: Sequence[int], batch_size: int = 8):
    """``(N, C, H, W)`` images -> ``(N, H, W)`` labels, each predicted at ``spatial_size`` and resized back."""
    out = []
    size = tuple(slices.shape[-2:])
    for chunk in slices.split(batch_size):
        x = F.interpolate(chunk, size=tuple(spatial_size), mode="bilinear", align_corners=False)
        logits = F.interpolate(model(x), size=size, mode="bilinear", align_corners=False)
        out.append(logits.argmax(1))
    return torch.cat(out)


@torch.no_grad()
def predict_image(
    model: nn.Module,
    image: torch.Tensor,
    spatial_dims: int,
    spatial_size: Sequence[int] = (256, 256),
    slice_axis: int = 2,
    patch_size: Sequence[int] = (64, 64, 64),
    overlap: float = 0.25,
) -> torch.Tensor:
    """``(C, *S)`` normalised image -> ``(*S)`` label map."""
    if spatial_dims == 3:
        logits = sliding_window_inference(image[None], tuple(patch_size), 1, model, overlap=overlap)
        return logits[0].argmax(0)
    if image.ndim == 3:  # a 2D image
        return predict_slices(model, image[None], spatial_size)[0]
    moved = image.movedim(1 + slice_axis, 0)  # (N, C, H, W)
    return predict_slices(model, moved, spatial_size).movedim(0, slice_axis)


def select_cases(ds: MSDDataset, cases: str, fold: int, n_folds: int, seed: int) -> list[dict[str, str]]:
    """The items to predict: the fold's validation cases (held out), its training cases, or all."""
    if cases == "all":
        return list(ds.items)
    if cases not in CASE_SETS:
        raise InputError(None, "cases", f"must be one of {list(CASE_SETS)}, got {cases!r}")
    train, val = fold_items(ds, fold, n_folds, seed)
    return val if cases == "validation" else train


def write_prediction(label: np.ndarray, like: str, affine: np.ndarray, folder: Path) -> Path:
    """Write a label map as the input was stored: NIfTI with its affine, or PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    if is_nifti(like):
        path = folder / f"{case_id(like)}.nii.gz"
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(path))
    else:  # the loaders read PNGs as stored, (H, W)
        path = folder / f"{case_id(like)}.png"
        Image.fromarray(label.astype(np.uint8)).save(path)
    return path


def load_trained(genotype_path: str | Path, model_path: str | Path, device: torch.device) -> tuple[Genotype, nn.Module]:
    """Build a genotype's network and load its trained state dict strictly."""
    genotype = Genotype.load(genotype_path)
    model = build_network(genotype)
    if not Path(model_path).is_file():
        raise InputError(model_path, "model_path", "no such file (run train.json first)")
    model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True), strict=True)
    return genotype, model.to(device).eval()


def predict(
    genotype_path: str | Path,
    model_path: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    cases: str = "validation",
    fold: int = 0,
    n_folds: int = 5,
    seed: int = 0,
    device: str = "auto",
    spatial_size: Sequence[int] = (256, 256),
    slice_axis: int = 2,
    patch_size: Sequence[int] = (64, 64, 64),
) -> list[Path]:
    """Predict ``cases`` of a dataset and write them under ``<output_dir>/predictions``; returns the paths."""
    dev = resolve_device(device)
    genotype, model = load_trained(genotype_path, model_path, dev)
    ds = load_checked_dataset(dataset_dir, deep=False)
    check_compatible(genotype, ds, genotype_path)
    folder = Path(output_dir) / "predictions"
    written = []
    for item in tqdm(select_cases(ds, cases, fold, n_folds, seed), desc="predict", dynamic_ncols=True):
        case = load_case(item, ds)
        label = predict_image(model, case.image.to(dev), genotype.spatial_dims, spatial_size, slice_axis, patch_size)
        written.append(write_prediction(label.cpu().numpy(), item["image"], case.affine, folder))
    log.info("wrote %d predictions to %s", len(written), folder)
    return written
