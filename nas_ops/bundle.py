"""What the bundle configs call besides the library's entry functions: where the bundle lies, the check of a
config's keys, the one error path, and the genotype a config trains.

Every bundle config exposes ``bundle_root``, ``dataset_dir``, ``output_dir``, ``seed`` and ``num_threads`` (torch
CPU threads), and where the workflow uses them ``device``, ``fold``/``n_folds`` and ``num_workers`` (data-loader
workers); search configs hold a nested ``search`` block checked by the method, and those with independent jobs
(MB-NAS) add ``backend`` (``local``, ``ray``, ``subprocess``), ``parallel_jobs`` and ``ray_address``. A
``configs/demo.json`` overlay sets a small CPU budget and the demo data. The output folders of one
``output_dir``: ``search/``, ``train/`` (with ``train/models/``), ``predictions/`` and ``eval/``; no step writes
into another's.

This module is the adapter between MONAI's config parser and the library; the library never imports it. Every
function here is called from a config, and installs the one-line error path for the bundle run
(:func:`nas_ops.entry.install_error_hook`). The key check reads the running config through MONAI's ``ConfigParser``,
found on the call stack (:func:`active_parser`): a config expression has no other way to see every key of its config.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from nas_ops.config import CONVENTIONS, PositiveInt, check_value, nearest
from nas_ops.data.setup import load_checked_dataset
from nas_ops.engine.seeds import seed_everything
from nas_ops.entry import entry, install_error_hook
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.process import prepare_process
from nas_ops.resources import DEFAULT_MAX_PARAMS, check_parameters

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


def config_call(fn: F) -> F:
    """A function a bundle config calls: the one-line error path installed first, then :func:`nas_ops.entry.entry`."""
    checked_fn = entry(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        install_error_hook()
        return checked_fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@config_call
def bundle_root(name: str) -> str:
    """The bundle's folder: ``bundles/<name>`` under the working directory (a checkout of this project), or the
    working directory itself when it is the bundle (a bundle downloaded from a model zoo)."""
    in_repo = Path("bundles") / name
    if (in_repo / "configs").is_dir():
        return str(in_repo)
    if (Path("configs") / "metadata.json").is_file():
        return "."
    raise InputError(
        None, "bundle_root", f"cannot find bundle '{name}' from {Path.cwd()}: run from the project's root or the "
        "bundle's folder, or pass --bundle_root",
    )


def active_parser() -> Any:
    """The MONAI ``ConfigParser`` evaluating the config that called us (found on the call stack), or None."""
    from monai.bundle import ConfigParser

    frame = inspect.currentframe()
    while frame is not None:
        obj = frame.f_locals.get("self")
        if isinstance(obj, ConfigParser):
            return obj
        parser = getattr(obj, "parser", None)
        if isinstance(parser, ConfigParser):
            return parser
        frame = frame.f_back
    return None


# --------------------------------------------------------------------------------------------- the key check


def known_keys(root: str | Path) -> dict[str, set[str]]:
    """Top-level keys of every config of a bundle: ``{"train.json": {...}, ...}``."""
    out = {}
    for path in sorted(Path(root, "configs").glob("*.json")):
        if path.name == "metadata.json":
            continue
        out[path.name] = {k.split("#")[0].lstrip("+") for k in json.loads(path.read_text())}  # "+key": a merge
    return out


def check_config(root: str | Path, workflow: str) -> None:
    """Refuse a top-level key of the running config that no config of the bundle defines (a typo'd override),
    naming the nearest known key, and a nested key of ``search`` the method does not know is refused by the
    method's config block. Run first, from a config's ``initialize``."""
    parser = active_parser()
    if parser is None:
        return
    source = f"{Path(root) / 'configs' / workflow}.json"
    configs = known_keys(root)
    mine = configs.get(f"{workflow}.json", set())
    overlays = set().union(*(keys for name, keys in configs.items() if name not in WORKFLOWS))
    for key in parser.get():
        if key not in mine | overlays | {"_meta_"}:
            elsewhere = sorted(name for name, keys in configs.items() if key in keys)
            where = (f": {' and '.join(elsewhere)} read{'s' if len(elsewhere) == 1 else ''} it, not {workflow}.json"
                     if elsewhere else ": no config of this bundle reads it")
            raise InputError(source, key, f"unknown key{nearest(key, mine)}{where}")
    for key, value in parser.get().items():
        _check_component_keys(value, key, source, list(parser.get()))


WORKFLOWS = ("search.json", "train.json", "inference.json", "evaluate.json")


def _component(target: str) -> Callable[..., Any] | None:
    """The callable a ``_target_`` names (a dotted path, or a MONAI name such as ``DiceCELoss``), or None."""
    import importlib
    import pydoc

    from monai.bundle.config_item import ComponentLocator

    found = pydoc.locate(target)
    if found is None and "." not in target:
        module = ComponentLocator().get_component_module_name(target)
        if isinstance(module, str):
            found = getattr(importlib.import_module(module), target, None)
    return found if callable(found) else None


def _check_component_keys(node: Any, path: str, source: str, config_keys: list[str]) -> None:
    """Refuse an argument a config component's ``_target_`` does not take (``--optimizer#lrr``), recursively,
    naming the nearest argument it takes or, failing one, the nearest key of the config (``--trainer#epoch``: the
    trainer takes a ``recipe``, the config's key is ``epochs``)."""
    if not isinstance(node, dict):
        return
    target = node.get("_target_")
    if isinstance(target, str) and not target.startswith("$"):
        fn = _component(target)
        try:
            params = inspect.signature(fn).parameters if fn is not None else None
        except (TypeError, ValueError):
            params = None
        if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            for key in node:
                if not key.startswith("_") and key not in params:
                    hint = nearest(key, [p for p in params if p != "self"]) or nearest(key, config_keys)
                    raise InputError(source, f"{path}#{key}", f"unknown argument of {target}{hint}")
    for key, value in node.items():
        if not key.startswith("_"):
            _check_component_keys(value, f"{path}#{key}", source, config_keys)


@config_call
def initialize(root: str | Path, workflow: str, seed: int, num_threads: int | None = None) -> None:
    """A bundle config's ``initialize``: check its keys (unknown ones, and the shared ones' types and ranges,
    :data:`nas_ops.config.CONVENTIONS`) before any component is built, set torch's threads and seed every RNG (so
    the network built from ``network_def`` starts from the run's seed)."""
    check_config(root, workflow)
    source = f"{Path(root) / 'configs' / workflow}.json"
    parser = active_parser()
    if parser is not None:
        for key in parser.get():
            if key in CONVENTIONS:
                check_value(key, parser.get_parsed_content(key), CONVENTIONS[key], source)
    check_value("seed", seed, CONVENTIONS["seed"], source)
    prepare_process(parser.get_parsed_content("device") if parser is not None and "device" in parser.get()
                    else "cpu", num_threads, source)
    seed_everything(seed)


@config_call
def genotype(path: str | Path, dataset_dir: str | Path | None = None, fit_channels: bool = False,
             max_params: PositiveInt = DEFAULT_MAX_PARAMS, allow_outside_dataset_dir: bool = False) -> Genotype:
    """The genotype a config trains: read and validated; with ``fit_channels`` its input and output channels set to
    the dataset's (e.g. a shipped baseline trained on MSD Prostate's 2 modalities and 3 classes), in memory: the
    file is never rewritten. A network of more than ``max_params`` parameters is refused before it is built."""
    geno = Genotype.load(path)
    if fit_channels and dataset_dir is not None:
        ds = load_checked_dataset(dataset_dir, deep=False, allow_outside=allow_outside_dataset_dir)
        if (geno.in_channels, geno.out_channels) != (ds.in_channels, ds.num_classes):
            log.info("fitting %s to %s: in_channels %d -> %d, out_channels %d -> %d", path, ds.name,
                     geno.in_channels, ds.in_channels, geno.out_channels, ds.num_classes)
            geno = geno.replace(in_channels=ds.in_channels, out_channels=ds.num_classes)
    check_parameters(geno, max_params)
    return geno


@config_call
def trained_model(model_dir: str | Path) -> tuple[Genotype, Any]:
    """``(genotype, geometry)`` of the trained model in ``model_dir`` (a train run's ``models/``): what an
    inference config builds its ``network_def`` and ``inferer`` from; refused when there is no trained model."""
    from nas_ops.training.artifacts import GENOTYPE_FILE, Geometry, read_info, verify_checksums

    info = read_info(model_dir)
    verify_checksums(model_dir, info)
    return Genotype.load(Path(model_dir) / GENOTYPE_FILE), Geometry(**info["geometry"])
