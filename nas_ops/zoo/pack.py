"""Pack a trained run into a standalone, versioned bundle zip in the MONAI model-zoo layout.

The zip ``<name>_v<version>.zip`` holds one folder ``<name>/`` (so ``python -m monai.bundle download --url
file://...`` unpacks it to ``<bundle_dir>/<name>``)::

    <name>/configs/   metadata.json (version, changelog, eval metrics, genotype sha256, the trained channels),
                      inference.json, evaluate.json, train.json (read the bundle's own models/), logging.conf
    <name>/models/    model.pt (state dict), genotype.json, model_info.json (geometry and both checksums)
    <name>/docs/README.md  the run's metrics and how to use it
    <name>/LICENSE

Members are written in a fixed order with fixed timestamps, so packing the same run twice gives the same bytes.
The packed bundle runs from its own folder once ``medseg-nas`` is installed, without this repository.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from nas_ops.atomic import atomic_write
from nas_ops.config import check_output_dir
from nas_ops.entry import entry
from nas_ops.errors import InputError
from nas_ops.training.artifacts import GENOTYPE_FILE, MODEL_FILE, read_info, verify_checksums
from nas_ops.zoo.index import release_key, sha256_path

WORKFLOWS = ("train", "inference", "evaluate")
INFO_FILE = "model_info.json"
VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def check_version(version: Any, source: Any, field: str = "version") -> str:
    """A release version ``MAJOR.MINOR.PATCH`` (fire reads ``0.1`` as a number: it is checked as text)."""
    text = str(version) if isinstance(version, (str, int, float)) and not isinstance(version, bool) else None
    if text is None or not VERSION.fullmatch(text):
        raise InputError(source, field, f"must look like 1.2.3, got {version!r}")
    return text


def bundle_dims(meta: dict[str, Any], source: Path) -> int:
    """The dimensionality of the networks a bundle's configs train and apply: the length of the input's
    ``spatial_shape`` its metadata declares."""
    try:
        return len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"])
    except (KeyError, TypeError):
        raise InputError(source, "network_data_format.inputs.image.spatial_shape", "missing: the bundle's metadata "
                         "must declare its input shape") from None


def _json(doc: Any) -> bytes:
    return (json.dumps(doc, indent=4) + "\n").encode()


def packed_configs(bundle_dir: Path) -> dict[str, bytes]:
    """The bundle's train/inference/evaluate configs, reading the packed bundle's own ``models/``."""
    out = {}
    for workflow in WORKFLOWS:
        doc = json.loads((bundle_dir / "configs" / f"{workflow}.json").read_text())
        doc["bundle_root"] = "."  # run from the bundle's folder, as model-zoo bundles do
        if "model_dir" in doc:
            doc["model_dir"] = "$@bundle_root + '/models'"
        if "genotype_path" in doc:
            doc["genotype_path"] = "$@bundle_root + '/models/genotype.json'"
        out[f"configs/{workflow}.json"] = _json(doc)
    logging_conf = bundle_dir / "configs" / "logging.conf"
    if logging_conf.is_file():
        out["configs/logging.conf"] = logging_conf.read_bytes()
    return out


def eval_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The zoo's ``eval_metrics``: mean Dice over the foreground classes and per class, HD95 per class."""
    if not metrics:
        return {}
    summary = metrics["summary"]
    dice = {c: v["mean"] for c, v in summary["dice"].items()}
    out = {"mean_dice": round(sum(dice.values()) / len(dice), 4), "num_cases": metrics.get("num_cases")}
    out.update({f"dice_{c}": round(v, 4) for c, v in dice.items()})
    out.update({f"hd95_mm_{c}": round(v["mean"], 2) for c, v in summary["hd95"].items()})
    return out


def _readme(name: str, method: str, version: str, genotype: dict, dataset: str | None, metrics: dict[str, float]
            ) -> bytes:
    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items()) or "| (not evaluated) | |"
    return f"""# {name} (version {version})

A segmentation network found by {method} (medseg-nas) and trained on {dataset or 'its dataset'}:
genotype `{genotype.get('name') or genotype['method']}` (method `{genotype['method']}`, {genotype['spatial_dims']}D,
{genotype['in_channels']} input channel(s), {genotype['out_channels']} classes).

## Metrics of the packed run (validation fold)

| metric | value |
|---|---|
{rows}

## Use

Install `medseg-nas`, then from this folder:

```
python -m monai.bundle run --config_file configs/inference.json --dataset_dir /path/to/TaskXX --output_dir runs/pred
python -m monai.bundle run --config_file configs/evaluate.json --dataset_dir /path/to/TaskXX --output_dir runs/pred
```

`models/model.pt` is the state dict of the network `models/genotype.json` builds
(`nas_ops.registry.build_network`); `models/model_info.json` holds the input geometry it was trained at and the
sha256 of both files, checked before the weights are loaded. `configs/train.json` trains the same genotype again.
""".encode()


@entry
def pack(run_dir: str, bundle: str, version: str | int | float, out_dir: str = "zoo", name: str | None = None,
         changelog: str = "trained and packed", bundle_dir: str | None = None) -> str:
    """Pack ``run_dir`` (a bundle run's ``output_dir``: ``train/models/`` and, if evaluated, ``eval/metrics.json``)
    with the configs of ``bundle`` (the folder ``bundles/<bundle>``, or ``bundle_dir``) into
    ``<out_dir>/<name>_v<version>.zip``; returns the zip's path. The method and the dimensionality are the trained
    genotype's; a bundle whose metadata declares inputs of another dimensionality is refused."""
    source = "zoo pack"
    version = check_version(version, source)
    folder = Path(bundle_dir) if bundle_dir else Path("bundles") / bundle
    if not (folder / "configs" / "metadata.json").is_file():
        raise InputError(folder, "bundle_dir", "has no configs/metadata.json: run from the project's root or pass "
                         "--bundle_dir")
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    out = check_output_dir(out_dir, "out_dir", source)
    model_dir = Path(run_dir) / "train" / "models"
    info = read_info(model_dir)
    verify_checksums(model_dir, info)
    genotype = json.loads((model_dir / GENOTYPE_FILE).read_text())
    dims, method = bundle_dims(meta, folder / "configs" / "metadata.json"), genotype.get("method")
    if genotype.get("spatial_dims") != dims:
        raise InputError(model_dir / GENOTYPE_FILE, "spatial_dims", f"is {genotype.get('spatial_dims')}: the "
                         f"{bundle} bundle trains {dims}D networks; pack this run with the bundle that trained it")
    metrics_path = Path(run_dir) / "eval" / "metrics.json"
    metrics = eval_metrics(json.loads(metrics_path.read_text()) if metrics_path.is_file() else None)
    dataset = info.get("dataset") if isinstance(info.get("dataset"), dict) else {}
    name = name or re.sub(r"[^a-z0-9_]", "_", f"{bundle}_{dataset.get('name', 'model')}".lower())[:64]
    if not NAME.match(name):
        raise InputError(source, "name", f"must be lower-case letters, digits and '_', got {name!r}")

    older = {k: v for k, v in meta.get("changelog", {}).items()
             if VERSION.fullmatch(k) and release_key(k) < release_key(version)}
    meta.update(version=version, changelog={version: changelog, **older},
                eval_metrics=metrics, genotype_sha256=sha256_path(model_dir / GENOTYPE_FILE),
                name=name, bundle=bundle, method=method, dataset=dataset.get("name"))
    fmt = meta["network_data_format"]
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    geometry = info["geometry"]
    size = list(geometry.get("patch_size") if dims == 3 else geometry.get("spatial_size")) or image["spatial_shape"]
    image.update(num_channels=genotype["in_channels"], spatial_shape=size)
    pred.update(num_channels=genotype["out_channels"], spatial_shape=size)
    for spec, names, n in ((image, info["geometry"].get("channel_names", []), genotype["in_channels"]),
                           (pred, info["geometry"].get("class_names", []), genotype["out_channels"])):
        if len(names) == n:
            spec["channel_def"] = {str(i): str(c) for i, c in enumerate(names)}
        elif len(spec["channel_def"]) != n:
            spec["channel_def"] = {str(i): f"channel {i}" for i in range(n)}

    files: dict[str, bytes] = {"configs/metadata.json": _json(meta), **packed_configs(folder),
                               "models/" + MODEL_FILE: (model_dir / MODEL_FILE).read_bytes(),
                               "models/" + GENOTYPE_FILE: (model_dir / GENOTYPE_FILE).read_bytes(),
                               "models/" + INFO_FILE: (model_dir / INFO_FILE).read_bytes(),
                               "docs/README.md": _readme(name, method, version, genotype, dataset.get("name"), metrics),
                               "LICENSE": (folder / "LICENSE").read_bytes()}
    path = out / f"{name}_v{version}.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for member in sorted(files):
            entry = zipfile.ZipInfo(f"{name}/{member}", date_time=FIXED_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, files[member])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()))
    return str(path)
