"""Export a trained searched network to TorchScript (through MONAI's ``ckpt_export``) and ONNX (torch's exporter),
each checked against the eager network on the trained input size.

TorchScript is traced (``ckpt_export --use_trace``): the searched networks choose their graph from the genotype
in Python (BiX-Net's pruned blocks, MB-NAS's mixed blocks, a C2FNAS path, a DiNTS code), which tracing turns
into the fixed graph of that genotype; scripting them would need every branch in TorchScript's subset. The file
``model.ts`` carries the bundle's metadata (MONAI's ``save_net_with_metadata``). ONNX needs the optional extra
``export`` (``pip install -e ".[export]"``: onnx, onnxscript, onnxruntime); ``model.onnx`` is checked with
onnxruntime.

Both files run without this project: ``torch.jit.load("model.ts")`` or ``onnxruntime.InferenceSession
("model.onnx")`` on an input of the trained size (a multiple of the network's total stride for ONNX exported with
that size; TorchScript traced graphs take the traced size).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas_ops.config import check_output_dir
from nas_ops.entry import entry
from nas_ops.errors import InputError, read_json
from nas_ops.genotype import Genotype
from nas_ops.training.artifacts import GENOTYPE_FILE, load_model, read_info

log = logging.getLogger(__name__)
FORMATS = ("torchscript", "onnx")
RTOL, ATOL = 1e-3, 1e-4


def _example(model_dir: Path, batch: int = 1) -> tuple[Any, torch.Tensor]:
    trained = load_model(model_dir)
    shape = (batch, trained.genotype.in_channels, *trained.geometry.input_size)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    return trained, x


def export_torchscript(bundle_dir: Path, model_dir: Path, filepath: Path, config_file: str = "inference.json") -> Path:
    """``model.ts`` through MONAI's ``ckpt_export`` (traced at the trained input size) from the bundle's
    ``network_def``; returns its path."""
    from monai.bundle import ckpt_export

    trained, x = _example(model_dir)
    filepath.parent.mkdir(parents=True, exist_ok=True)
    ckpt_export(net_id="network_def", filepath=str(filepath), ckpt_file=str(model_dir / "model.pt"),
                meta_file=str(bundle_dir / "configs" / "metadata.json"),
                config_file=str(bundle_dir / "configs" / config_file), bundle_root=str(bundle_dir),
                model_dir=str(model_dir), use_trace=True, input_shape=list(x.shape), device="cpu")
    return filepath


def export_onnx(model_dir: Path, filepath: Path) -> Path:
    """``model.onnx`` of the trained network at its trained input size (torch's exporter); returns its path."""
    trained, x = _example(model_dir)
    net = trained.network.eval()
    filepath.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(net, (x,), str(filepath), input_names=["image"], output_names=["pred"], dynamo=False,
                          opset_version=17)
    return filepath


def check_export(model_dir: Path, torchscript: Path | None = None, onnx_file: Path | None = None
                 ) -> dict[str, float]:
    """Max absolute difference of each exported file's output to the eager network's (raises if not allclose)."""
    trained, x = _example(model_dir)
    with torch.no_grad():
        want = trained.network.eval()(x).numpy()
    diffs = {}
    if torchscript is not None:
        ts = torch.jit.load(str(torchscript), map_location="cpu").eval()
        with torch.no_grad():
            got = ts(x).numpy()
        diffs["torchscript"] = float(np.abs(got - want).max())
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    if onnx_file is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": x.numpy()})[0]
        diffs["onnx"] = float(np.abs(got - want).max())
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    return diffs


def _check_same_model(bundle: Path, models: Path) -> None:
    """Refuse a model the bundle's metadata does not describe: another dimensionality than the bundle's networks,
    or (a packed or installed bundle, whose metadata names its genotype's sha256) another genotype."""
    from nas_ops.zoo.index import sha256_path
    from nas_ops.zoo.pack import bundle_dims

    meta_path = bundle / "configs" / "metadata.json"
    read_info(models)  # a folder without a trained model: one line naming it
    genotype = Genotype.load(models / GENOTYPE_FILE)
    meta = read_json(meta_path) if meta_path.is_file() else {}
    if meta and genotype.spatial_dims != bundle_dims(meta, meta_path):
        raise InputError(models / GENOTYPE_FILE, "spatial_dims", f"is {genotype.spatial_dims}: {bundle} applies "
                         f"{bundle_dims(meta, meta_path)}D networks; export the model with the bundle that trained it")
    want = meta.get("genotype_sha256")
    if want and sha256_path(models / GENOTYPE_FILE) != want:
        raise InputError(models / GENOTYPE_FILE, "genotype_sha256", f"is not the genotype {meta_path} describes "
                         f"({genotype.method}, {genotype.in_channels} -> {genotype.out_channels} channels): export "
                         "a bundle's own model, or export from the bundle that trained this one")


@entry
def export(bundle_dir: str, formats: tuple[str, ...] = FORMATS, model_dir: str | None = None,
           out_dir: str | None = None) -> dict[str, Any]:
    """Export the trained model of a bundle folder (``<bundle_dir>/models`` by default, as a packed or installed
    bundle has it) to ``<out_dir>/model.ts`` and ``model.onnx`` (default ``out_dir``: the model folder), check
    both against the eager network, and return the files and differences."""
    bundle = Path(bundle_dir)
    if not (bundle / "configs" / "inference.json").is_file():
        raise InputError(bundle, "bundle_dir", "has no configs/inference.json: give a bundle folder (a packed or "
                         "installed bundle, or bundles/<method>)")
    models = Path(model_dir) if model_dir else bundle / "models"
    _check_same_model(bundle, models)
    out = check_output_dir(out_dir if out_dir else models, "out_dir", "export")
    if not formats:
        raise InputError("export", "formats", f"is empty: give one or more of {list(FORMATS)}")
    for f in formats:
        if f not in FORMATS:
            raise InputError("export", "formats", f"unknown format {f!r} (known: {list(FORMATS)})")
    if "onnx" in formats:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            raise InputError("export", "formats", "ONNX export needs the optional extra: pip install -e "
                             "\".[export]\" (onnx, onnxscript, onnxruntime)") from None
    ts = export_torchscript(bundle, models, out / "model.ts") if "torchscript" in formats else None
    onnx_file = export_onnx(models, out / "model.onnx") if "onnx" in formats else None
    diffs = check_export(models, ts, onnx_file)
    result = {"torchscript": str(ts) if ts else None, "onnx": str(onnx_file) if onnx_file else None,
              "max_abs_diff": diffs}
    log.info("exported: %s", json.dumps(result))
    return result
