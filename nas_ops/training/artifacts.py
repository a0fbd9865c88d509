"""A trained model as files: ``models/model.pt`` (a state dict), ``models/genotype.json`` (its architecture) and
``models/model_info.json`` (the input geometry it was trained at, the dataset, the sha256 of both files, and
``info_sha256``: the sha256 of the info file's own content without that key).

Inference and evaluation read everything they need from this folder, so the geometry keys are not repeated in
their configs; MONAI's ``verify_net_in_out`` and ``ckpt_export`` read ``model.pt`` as any bundle's. Loading checks
the checksums and refuses a changed file, naming it; a ``model.pt`` that is not a plain state dict is refused in
one line.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_ops.atomic import atomic_write, write_json_atomic
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network

MODEL_FILE, GENOTYPE_FILE, INFO_FILE = "model.pt", "genotype.json", "model_info.json"


@dataclass(frozen=True)
class Geometry:
    """The input a network was trained at: 2D samples of ``spatial_size`` (volumes sliced along ``slice_axis``) or
    3D patches of ``patch_size``; and the dataset's channel and class names."""

    spatial_dims: int
    spatial_size: list[int] = field(default_factory=list)  # 2D: H, W
    slice_axis: int = 2
    patch_size: list[int] = field(default_factory=list)  # 3D
    channel_names: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)  # with background

    @property
    def input_size(self) -> list[int]:
        """The spatial size one forward of the network takes."""
        return list(self.spatial_size if self.spatial_dims == 2 else self.patch_size)


@dataclass(frozen=True)
class TrainedModel:
    """What :func:`load_model` gives: the genotype, its geometry, and the network with its trained weights."""

    genotype: Genotype
    geometry: Geometry
    network: nn.Module
    info: dict[str, Any]


def sha256_file(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def save_model(model_dir: str | Path, network: nn.Module, genotype: Genotype, geometry: Geometry,
               extra: dict[str, Any] | None = None) -> Path:
    """Write the three files of a trained model atomically (the info file last: a model without it is incomplete)."""
    model_dir = Path(model_dir)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    atomic_write(model_dir / MODEL_FILE, lambda fh: torch.save(state, fh))
    genotype.save(model_dir / GENOTYPE_FILE)
    info = {"geometry": asdict(geometry), **(extra or {}),
            "sha256": {name: sha256_file(model_dir / name) for name in (MODEL_FILE, GENOTYPE_FILE)}}
    info["info_sha256"] = info_sha256(info)
    write_json_atomic(model_dir / INFO_FILE, info)
    return model_dir


def info_sha256(info: dict[str, Any]) -> str:
    """``sha256:<hex>`` of an info file's content without its own ``info_sha256`` key (canonical JSON)."""
    content = {k: v for k, v in info.items() if k != "info_sha256"}
    return f"sha256:{hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()}"


def read_info(model_dir: str | Path) -> dict[str, Any]:
    """The model's info file (geometry, checksums), checked to exist and parse."""
    path = Path(model_dir) / INFO_FILE
    if not path.is_file():
        raise InputError(path, "model_dir", "no trained model here (run train.json first, or point model_dir at the "
                         "train run's models/ folder)")
    try:
        info = json.loads(path.read_text())
        Geometry(**info["geometry"])
        checksums = info["sha256"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise InputError(path, "<root>", f"not a model info file ({type(err).__name__}: {err})") from None
    if not isinstance(checksums, dict):
        raise InputError(path, "sha256", "must map file names to checksums")
    want = info.get("info_sha256")
    if want is None:  # saved before the info file carried its own checksum: still read, said once
        warnings.warn(f"{path} has no info_sha256 (saved by an older medseg-nas): its geometry is not verified",
                      stacklevel=2)
    elif want != info_sha256(info):
        raise InputError(path, "info_sha256", "the file changed since it was written (its content no longer "
                         "matches its recorded checksum): it is corrupted or was edited; train again or restore it")
    return info


def verify_checksums(model_dir: str | Path, info: dict[str, Any]) -> None:
    """Refuse a model file whose bytes differ from the checksum recorded when it was written."""
    for name, want in info["sha256"].items():
        path = Path(model_dir) / name
        if not path.is_file():
            raise InputError(path, name, "missing from the trained model's folder")
        verify_sha256(path, want, f"sha256.{name}", "train again or restore it")


def verify_sha256(path: str | Path, want: str, field: str, remedy: str) -> None:
    """Refuse a file whose bytes differ from the checksum ``want`` recorded when it was written."""
    got = sha256_file(path)
    if got != want:
        raise InputError(path, field, f"the file changed since it was written ({got[:19]}..., recorded "
                         f"{want[:19]}...): it is corrupted or was replaced; {remedy}")


def load_geometry(model_dir: str | Path) -> Geometry:
    """The input geometry a trained model was trained at."""
    return Geometry(**read_info(model_dir)["geometry"])


def load_model(model_dir: str | Path, device: torch.device | str = "cpu") -> TrainedModel:
    """Verify the checksums, build the genotype's network and load its weights strictly, in eval mode."""
    info = read_info(model_dir)
    verify_checksums(model_dir, info)
    genotype = Genotype.load(Path(model_dir) / GENOTYPE_FILE)
    network = build_network(genotype)
    load_weights(network, model_dir, info)
    return TrainedModel(genotype, Geometry(**info["geometry"]), network.to(device).eval(), info)


def load_weights(network: nn.Module, model_dir: str | Path, info: dict[str, Any] | None = None) -> nn.Module:
    """Load ``models/model.pt`` into ``network`` (strictly), after checking its checksum; returns the network."""
    info = info if info is not None else read_info(model_dir)
    verify_checksums(model_dir, {"sha256": {MODEL_FILE: info["sha256"][MODEL_FILE]}})
    path = Path(model_dir) / MODEL_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure: not a file this project wrote
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise InputError(path, MODEL_FILE, f"not a plain state dict of tensors ({type(err).__name__}: {first[:160]})"
                         ": load only weights this project saved (train.json writes them)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, MODEL_FILE, f"holds a {type(state).__name__}, not a state dict of tensors")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise InputError(path, "network_def", f"these weights do not fit the network ({first}); build it from "
                         f"{Path(model_dir) / GENOTYPE_FILE}") from None
    return network
