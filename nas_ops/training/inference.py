"""Predict label maps for the cases of a dataset with a trained model, written with the input's geometry.

``predict(...)`` is what every bundle's ``inference.json`` runs. The trained model's folder (``models/`` of a
train run) gives the network, its weights (checksum verified) and the geometry it was trained at; the config's
``inferer`` (default: :class:`~nas_ops.training.inferers.SliceResizeInferer` for 2D networks, MONAI's
``SlidingWindowInferer`` for 3D ones), ``postprocessing`` (default: argmax) and ``saver`` are MONAI components a
user can swap. Predictions are written by MONAI's ``SaveImage`` (:class:`PredictionWriter`): NIfTI with the input's
affine for NIfTI inputs, PNG for PNG inputs, as ``<output_dir>/<case>.nii.gz|png``.

``<output_dir>/.prediction_run.json`` keeps what the predictions are of (the dataset's fingerprint, the model's
checksums, the cases): predicting another dataset, model or case selection into the same folder is refused naming
what changed, so one folder never mixes two runs' predictions; ``evaluate.json`` checks it against its dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import AsDiscrete, Compose, SaveImage
from torch import nn
from tqdm import tqdm

from nas_ops.atomic import write_json_atomic
from nas_ops.config import Cases, NFolds, NonNegativeInt, check_output_dir
from nas_ops.data.loaders import load_case
from nas_ops.data.msd import MSDDataset, case_id, is_nifti
from nas_ops.data.setup import check_compatible, load_checked_dataset
from nas_ops.data.splits import fold_items
from nas_ops.entry import entry
from nas_ops.errors import InputError, read_json
from nas_ops.genotype import Genotype
from nas_ops.process import resolve_device
from nas_ops.search_state import refuse_other_settings
from nas_ops.training.artifacts import (
    GENOTYPE_FILE,
    Geometry,
    load_model,
    load_weights,
    read_info,
    verify_checksums,
)
from nas_ops.training.inferers import default_inferer

log = logging.getLogger(__name__)
RUN_FILE = ".prediction_run.json"


def select_cases(ds: MSDDataset, cases: str, fold: int, n_folds: int, seed: int) -> list[dict[str, str]]:
    """The items to predict: the fold's validation cases (held out), its training cases, or all."""
    if cases == "all":
        return list(ds.items)
    train, val = fold_items(ds, fold, n_folds, seed)
    return val if cases == "validation" else train


class PredictionWriter:
    """Writes label maps through MONAI's ``SaveImage``, as their input was stored: NIfTI with its affine, or PNG
    (``(H, W)``, as the loaders read PNGs); ``<output_dir>/<case>.<ext>``."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self._savers: dict[str, SaveImage] = {}

    def _saver(self, ext: str) -> SaveImage:
        if ext not in self._savers:
            saver = SaveImage(output_dir=str(self.output_dir), output_postfix="", output_ext=ext,
                              separate_folder=False, resample=False, output_dtype=np.uint8, print_log=False,
                              scale=None)
            if ext == ".png":
                saver.set_options(write_kwargs={"reverse_indexing": False})
            self._savers[ext] = saver
        return self._savers[ext]

    def __call__(self, label: torch.Tensor, meta: dict) -> Path:
        """``(1, *S)`` label map of the image described by ``meta`` -> the written file."""
        source = str(meta["filename_or_obj"])
        ext = ".nii.gz" if is_nifti(source) else ".png"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._saver(ext)(MetaTensor(label.to(torch.uint8).cpu(), meta=meta))
        return self.output_dir / f"{case_id(source)}{ext}"


@entry
def predict(
    model_dir: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    network: nn.Module | None = None,
    inferer: Inferer | None = None,
    postprocessing: Callable | None = None,
    saver: Callable | None = None,
    cases: Cases = "validation",
    fold: NonNegativeInt = 0,
    n_folds: NFolds = 5,
    seed: NonNegativeInt = 0,
    device: str = "auto",
    allow_outside_dataset_dir: bool = False,
    config_source: str | None = None,
) -> list[Path]:
    """Predict ``cases`` of a dataset with the model in ``model_dir`` into ``output_dir``; returns the paths.

    ``network``: the config's ``network_def`` (built from ``models/genotype.json``); its weights are loaded here.
    ``fold``/``n_folds``/``seed`` pick the held-out cases of the training's split.
    """
    if fold >= n_folds:
        raise InputError(config_source, "fold", f"must be < n_folds = {n_folds}, got {fold}")
    dev = resolve_device(device, config_source)
    check_output_dir(output_dir, source=config_source)
    model_dir = Path(model_dir)
    if network is None:
        trained = load_model(model_dir, dev)
        genotype, geometry, network, info = trained.genotype, trained.geometry, trained.network, trained.info
    else:
        info = read_info(model_dir)
        verify_checksums(model_dir, info)
        genotype, geometry = Genotype.load(model_dir / GENOTYPE_FILE), Geometry(**info["geometry"])
        network = load_weights(network, model_dir, info).to(dev).eval()
    ds = load_checked_dataset(dataset_dir, deep=False, allow_outside=allow_outside_dataset_dir)
    check_compatible(genotype, ds, model_dir / GENOTYPE_FILE)
    identity = {"dataset": {"name": ds.name, "fingerprint": ds.fingerprint}, "model": info["sha256"],
                "cases": cases, **({} if cases == "all" else {"fold": fold, "n_folds": n_folds, "seed": seed})}
    marker = Path(output_dir) / RUN_FILE
    if marker.is_file():
        refuse_other_settings(read_json(marker).get("identity", {}), identity, marker, "prediction")
    if inferer is None:
        inferer = default_inferer(geometry.spatial_dims, geometry.spatial_size, geometry.slice_axis,
                                  geometry.patch_size)
    postprocessing = postprocessing if postprocessing is not None else Compose([AsDiscrete(argmax=True)])
    saver = saver if saver is not None else PredictionWriter(output_dir)
    items = select_cases(ds, cases, fold, n_folds, seed)  # may still refuse: before the marker is written
    write_json_atomic(marker, {"identity": identity})
    written = []
    with torch.no_grad():
        for item in tqdm(items, desc="predict", dynamic_ncols=True):
            case = load_case(item, ds)
            logits = inferer(case.image[None].to(dev), network)[0]
            written.append(saver(postprocessing(logits), case.meta))
    log.info("wrote %d predictions to %s", len(written), output_dir)
    return written
