"""Medical Segmentation Decathlon layout: read, check and write ``dataset.json`` and the files it names.

Every problem is a :class:`~nas_ops.errors.DatasetError` naming the file and the field, raised before training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import load_decathlon_datalist
from PIL import Image

from nas_ops.errors import DatasetError, read_json

DATASET_JSON = "dataset.json"
NIFTI_SUFFIXES = (".nii", ".nii.gz")
AFFINE_TOLERANCE = 1e-3


@dataclass
class MSDDataset:
    """A parsed MSD dataset: class names, channel names and the training cases with absolute paths.

    ``items`` are dicts ``{"image": str, "label": str, "patient": str}``: the form MONAI dictionary transforms take.
    """

    root: Path
    name: str
    labels: dict[int, str]
    channel_names: list[str]
    items: list[dict[str, str]] = field(default_factory=list)
    fingerprint: str | None = None  # set once validated (nas_ops.data.setup.load_checked_dataset)
    outside: list[tuple[str, str]] = field(default_factory=list)  # (field, path as listed) escaping ``root``

    @property
    def json_path(self) -> Path:
        """The ``dataset.json`` this dataset was read from (named in error messages)."""
        return self.root / DATASET_JSON

    @property
    def num_classes(self) -> int:
        """Number of classes including background: the output channels of a network."""
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        """Number of image channels (modalities): the input channels of a network."""
        return len(self.channel_names)

    @property
    def is_3d(self) -> bool:
        """Whether the cases are volumes (3D) rather than images (2D), judged from the first label's shape."""
        if not self.items:
            raise DatasetError(self.json_path, "training", "is empty")
        return len(spatial_shape(self.items[0]["label"])) == 3


def is_nifti(path: str | Path) -> bool:
    """Whether a path names a NIfTI file (read with nibabel); anything else is read with PIL."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def case_id(path: str | Path) -> str:
    """File name without its image suffix (``prostate_00.nii.gz`` -> ``prostate_00``): the default patient id."""
    name = Path(path).name
    for suffix in (*NIFTI_SUFFIXES, ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def spatial_shape(label_path: str | Path) -> tuple[int, ...]:
    """Spatial shape of a label file from its header alone; a trailing axis of size 1 (2D NIfTI) is dropped."""
    if is_nifti(label_path):
        shape = tuple(int(s) for s in nib.load(str(label_path)).shape)
    else:
        with Image.open(label_path) as img:
            shape = (img.height, img.width)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def read_array(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a file as stored (channels last) with its affine; PNG and other 2D formats have no affine (``None``).

    Only reads: used by deep validation and tests, where the raw layout matters.
    """
    if is_nifti(path):
        img = nib.load(str(path))
        return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)
    with Image.open(path) as img:
        return np.asarray(img), None


def write_dataset_json(
    dataset_dir: str | Path,
    name: str,
    labels: dict[int, str],
    channel_names: list[str],
    training: list[dict[str, str]],
    description: str = "",
) -> Path:
    """Write an MSD ``dataset.json`` (paths relative to ``dataset_dir``, e.g. ``./imagesTr/x.nii.gz``)."""
    root = Path(dataset_dir)
    doc = {
        "name": name,
        "description": description,
        "tensorImageSize": "4D" if any(is_nifti(t["image"]) for t in training) else "2D",
        "modality": {str(i): n for i, n in enumerate(channel_names)},
        "labels": {str(k): v for k, v in sorted(labels.items())},
        "numTraining": len(training),
        "numTest": 0,
        "training": [{k: _relative(v, root) if k in ("image", "label") else v for k, v in t.items()} for t in training],
        "test": [],
    }
    path = root / DATASET_JSON
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_msd_dataset(dataset_dir: str | Path) -> MSDDataset:
    """Parse ``<dataset_dir>/dataset.json`` and check its structure (keys, types, labels); files are not opened."""
    root = Path(dataset_dir).resolve()
    path = root / DATASET_JSON
    doc = read_json(path, DatasetError, field="<file>", what="dataset.json", missing="dataset.json not found")
    if not isinstance(doc, dict):
        raise DatasetError(path, "<root>", f"expected a JSON object, got {type(doc).__name__}")
    name = doc.get("name", root.name)
    if not isinstance(name, str):
        raise DatasetError(path, "name", f"expected a string, got {type(name).__name__}")
    labels = _parse_labels(path, doc)
    channel_names = _parse_channels(path, doc)
    items = _parse_training(path, root, doc)
    return MSDDataset(root=root, name=name, labels=labels, channel_names=channel_names, items=items,
                      outside=_outside_entries(root, doc["training"]))


def _outside_entries(root: Path, training: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(field, path)`` of every case path that leaves ``root`` as written (absolute elsewhere, or through ``..``).

    Judged on the path's text, not by following symlinks: a dataset folder whose files are links stays inside.
    """
    out = []
    for i, entry in enumerate(training):
        for key in ("image", "label"):
            listed = os.path.normpath(os.path.join(root, entry[key]))
            if os.path.commonpath([listed, str(root)]) != str(root):
                out.append((f"training[{i}].{key}", entry[key]))
    return out


def validate_dataset(ds: MSDDataset, deep: bool = True) -> None:
    """Check that every case exists and, when ``deep``, that its arrays are usable; reads files, never writes.

    Deep checks per case: image/label shapes agree (image may carry a trailing channel axis of ``in_channels``),
    affines agree within 1e-3, label values are declared in ``labels``, image voxels are finite.
    """
    if not ds.items:
        raise DatasetError(ds.json_path, "training", "is empty: at least one case is needed")
    for i, item in enumerate(ds.items):
        for key in ("image", "label"):
            if not Path(item[key]).is_file():
                raise DatasetError(ds.json_path, f"training[{i}].{key}", f"file does not exist: {item[key]}")
    if deep:
        for i, item in enumerate(ds.items):
            _validate_case(ds, i, item)


def _validate_case(ds: MSDDataset, i: int, item: dict[str, str]) -> None:
    """Load one case and check shape, affine, label values and finiteness."""
    image, image_affine = _read_or_raise(item["image"], f"training[{i}].image")
    label, label_affine = _read_or_raise(item["label"], f"training[{i}].label")
    channels = ds.in_channels
    if not is_nifti(item["label"]) and label.ndim != 2:
        raise DatasetError(item["label"], f"training[{i}].label", f"expected a single-channel image, got {label.shape}")
    expected = label.shape if channels == 1 else (*label.shape, channels)
    if image.shape not in (expected, (*label.shape, channels)):  # a single channel may also be stored as (..., 1)
        raise DatasetError(
            item["image"],
            f"training[{i}].image",
            f"shape {tuple(image.shape)} does not match label shape {tuple(label.shape)} "
            f"(expected {tuple(expected)} for {channels} channel(s), channels last)",
        )
    if image_affine is not None and label_affine is not None:
        if not np.allclose(image_affine, label_affine, atol=AFFINE_TOLERANCE):
            raise DatasetError(
                item["label"],
                f"training[{i}].label",
                f"affine differs from the image's ({item['image']}) by more than {AFFINE_TOLERANCE}",
            )
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise DatasetError(item["image"], f"training[{i}].image", "contains NaN or infinite voxels")
    values = np.unique(label)
    if not np.issubdtype(values.dtype, np.integer) and not np.all(np.mod(values, 1) == 0):
        raise DatasetError(item["label"], f"training[{i}].label", "holds non-integer values; expected class indices")
    unknown = sorted(set(values.astype(np.int64).tolist()) - set(ds.labels))
    if unknown:
        raise DatasetError(
            item["label"],
            f"training[{i}].label",
            f"values {unknown} are not declared in 'labels' ({sorted(ds.labels)})",
        )


def _read_or_raise(path: str, field_name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a file, turning a reader failure into a DatasetError."""
    try:
        return read_array(path)
    except Exception as err:  # noqa: BLE001 - any reader failure means an unusable file
        raise DatasetError(path, field_name, f"cannot be read ({type(err).__name__}: {err})") from err


def _relative(path: str, root: Path) -> str:
    """Path as written in dataset.json: ``./sub/file`` when under ``root``, else unchanged."""
    p = Path(path)
    if p.is_absolute():
        try:
            return "./" + p.relative_to(root).as_posix()
        except ValueError:
            return str(p)
    return path if path.startswith("./") else "./" + p.as_posix()


def _index_map(path: Path, field_name: str, value: Any) -> dict[int, str]:
    """A ``{"0": name, "1": name, ...}`` mapping checked to hold every index 0..n-1 once."""
    if not isinstance(value, dict) or not value:
        raise DatasetError(path, field_name, f"expected a non-empty object of index -> name, got {value!r:.60}")
    out: dict[int, str] = {}
    for key, name in value.items():
        try:
            index = int(key)
        except (TypeError, ValueError) as err:
            raise DatasetError(path, f"{field_name}.{key}", "key is not an integer index") from err
        if not isinstance(name, str):
            raise DatasetError(path, f"{field_name}.{key}", f"expected a string name, got {type(name).__name__}")
        out[index] = name
    if sorted(out) != list(range(len(out))):
        raise DatasetError(path, field_name, f"indices must be consecutive integers from 0, got {sorted(out)}")
    return dict(sorted(out.items()))


def _parse_labels(path: Path, doc: dict[str, Any]) -> dict[int, str]:
    """``labels`` in MSD style (``{"0": "background"}``) or nnU-Net v2 style (``{"background": 0}``)."""
    if "labels" not in doc:
        raise DatasetError(path, "labels", "missing key")
    raw = doc["labels"]
    if isinstance(raw, dict) and raw and all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        raw = {str(v): k for k, v in raw.items()}  # nnU-Net v2: name -> index
    labels = _index_map(path, "labels", raw)  # consecutive from 0: background is 0
    if len(labels) < 2:
        raise DatasetError(path, "labels", "needs at least one foreground class besides 0")
    return labels


def _parse_channels(path: Path, doc: dict[str, Any]) -> list[str]:
    """Channel names from ``modality`` (MSD) or ``channel_names`` (nnU-Net v2); ``"RGB"`` stands for R, G, B."""
    key = "modality" if "modality" in doc else "channel_names" if "channel_names" in doc else None
    if key is None:
        raise DatasetError(path, "modality", "missing key (or 'channel_names')")
    names: list[str] = []
    for name in _index_map(path, key, doc[key]).values():
        names.extend(["R", "G", "B"] if name.upper() == "RGB" else [name])
    return names


def _parse_training(path: Path, root: Path, doc: dict[str, Any]) -> list[dict[str, str]]:
    """``training`` entries as absolute paths with a patient id (``patient`` key, else the image's case id)."""
    if "training" not in doc:
        raise DatasetError(path, "training", "missing key")
    training = doc["training"]
    if not isinstance(training, list):
        raise DatasetError(path, "training", f"expected a list, got {type(training).__name__}")
    if not training:
        raise DatasetError(path, "training", "is empty: at least one case is needed")
    if "numTraining" in doc:
        num = doc["numTraining"]
        if not isinstance(num, int) or isinstance(num, bool):
            raise DatasetError(path, "numTraining", f"expected an integer, got {type(num).__name__}")
        if num != len(training):
            raise DatasetError(path, "numTraining", f"is {num} but 'training' lists {len(training)} cases")
    for i, entry in enumerate(training):
        if not isinstance(entry, dict):
            raise DatasetError(path, f"training[{i}]", f"expected an object, got {type(entry).__name__}")
        for key in ("image", "label"):
            if key not in entry:
                raise DatasetError(path, f"training[{i}].{key}", "missing key")
            if not isinstance(entry[key], str) or not entry[key]:
                raise DatasetError(path, f"training[{i}].{key}", f"expected a path string, got {entry[key]!r:.60}")
        patient = entry.get("patient", case_id(entry["image"]))
        if isinstance(patient, bool) or not isinstance(patient, str | int):
            raise DatasetError(path, f"training[{i}].patient", f"expected a string, got {type(patient).__name__}")
    # checked: MONAI's reader joins the paths to the dataset folder
    datalist = load_decathlon_datalist(path, is_segmentation=True, data_list_key="training", base_dir=root)
    items = []
    for entry, listed in zip(training, datalist, strict=True):
        items.append({"image": str(Path(listed["image"]).resolve()), "label": str(Path(listed["label"]).resolve()),
                      "patient": str(entry.get("patient", case_id(entry["image"])))})
    return items
