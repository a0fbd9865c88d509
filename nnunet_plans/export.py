"""Export a genotype as an nnU-Net plans variant ``<source plans>_<name>.json`` beside nnU-Net's own plans.

The variant is a copy of nnU-Net's plans (``nnUNetPlans.json``) with one configuration (``2d`` or ``3d_fullres``)
kept and changed: the architecture becomes :class:`nnunet_plans.network.SearchedNetwork` with the genotype inline,
``strides`` follow the searched network's downsampling (one stride-2 stage per halving of its total stride), the
patch size is rounded to a multiple of that total stride, and ``plans_name`` is the file's stem. Everything else
is kept, ``data_identifier`` included, so the variant trains on the data nnU-Net already preprocessed::

    nnUNetv2_train DATASET CONFIG FOLD -p nnUNetPlans_<name> -tr <trainer>
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from nas_ops.atomic import write_json_atomic
from nas_ops.errors import GenotypeError, InputError
from nas_ops.genotype import Genotype
from nas_ops.process import resolve_device
from nas_ops.protocol import check_protocol
from nas_ops.registry import build_network
from nas_ops.resources import check_network_memory
from nnunet_plans.network import SearchedNetwork
from nnunet_plans.plans import PlannedDataset, dataset_id, load_planned, network_cost
from nnunet_plans.trainers import TRAINERS, ext_trainer_dir

NETWORK_CLASS = f"{SearchedNetwork.__module__}.{SearchedNetwork.__qualname__}"
CONFIGURATIONS = ("2d", "3d_fullres")
ROUNDING = ("nearest", "up", "down")
EXPORT = "nnunet export"  # the source named by errors of the command line's own options
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*(_[A-Za-z0-9-]+)*$")  # no "__": nnU-Net splits folder names on it


@dataclass(frozen=True)
class Export:
    """What :func:`export_plans` wrote and the command that trains it."""

    plans_path: Path
    plans_name: str
    configuration: str
    patch_size: list[int]
    strides: list[list[int]]
    params: int
    macs: int
    commands: list[str]


def write_split(split_file: str | Path, folder: Path) -> Path:
    """Copy folds in nnU-Net's format into ``folder/splits_final.json`` (the same file again is fine)."""
    from nas_ops.errors import read_json

    folds = read_json(split_file, what="nnU-Net's splits_final.json")
    if not isinstance(folds, list) or not folds or not all(
            isinstance(f, dict) and set(f) == {"train", "val"} for f in folds):
        raise InputError(split_file, "<root>", "must be a list of folds {\"train\": [...], \"val\": [...]}")
    target = folder / "splits_final.json"
    if target.is_file():
        if read_json(target) != folds:
            raise InputError(target, "splits_final.json", f"holds other folds than {split_file}: nnU-Net would keep "
                             "them; move it away to use the study's split")
        return target
    write_json_atomic(target, folds)
    return target


def net_strides(stride: int, spatial_dims: int, source: str | Path | None = None) -> list[list[int]]:
    """nnU-Net stages of a network that halves every axis ``log2(stride)`` times: ``[[1,..], [2,..], ...]``."""
    halvings = int(math.log2(stride)) if stride >= 1 else -1
    if stride < 1 or 2**halvings != stride:
        raise GenotypeError(source, "spec", f"total stride {stride} is not a power of two: no nnU-Net strides fit it")
    if halvings < 2:
        raise GenotypeError(source, "spec", f"total stride {stride}: nnU-Net's deep supervision needs at least 3 "
                                            "stages (a network that halves its input at least twice)")
    return [[1] * spatial_dims] + [[2] * spatial_dims for _ in range(halvings)]


def round_patch(patch: list[int], divisor: int, rounding: str = "nearest") -> list[int]:
    """Each size rounded to a multiple of ``divisor`` (at least one multiple); ties round up."""
    if rounding not in ROUNDING:
        raise ValueError(f"rounding must be one of {ROUNDING}, got {rounding!r}")
    out = []
    for p in patch:
        if rounding == "up":
            k = math.ceil(p / divisor)
        elif rounding == "down":
            k = p // divisor
        else:
            k = math.floor(p / divisor + 0.5)
        out.append(max(1, k) * divisor)
    return out


def check_fits(genotype: Genotype, planned: PlannedDataset, configuration: str, patch: list[int],
               source: str | Path | None, adapt_io: bool = False) -> Genotype:
    """Refuse a genotype whose dimensionality or channels do not fit the dataset (or rewrite its I/O channels)."""
    where = f"configuration '{configuration}' of {planned.name}"
    if genotype.spatial_dims != len(patch):
        other = "2d" if genotype.spatial_dims == 2 else "3d_fullres"
        raise GenotypeError(source, "spatial_dims", f"the genotype is {genotype.spatial_dims}D, {where} is "
                            f"{len(patch)}D (patch_size {patch}); export it to configuration '{other}'")
    wanted = {"in_channels": planned.input_channels, "out_channels": planned.num_outputs}
    dataset_json = planned.folder / "dataset.json"
    why = {"in_channels": f"channel_names in {dataset_json}", "out_channels": f"labels in {dataset_json}"}
    changes = {}
    for field, need in wanted.items():
        have = getattr(genotype, field)
        if have != need:
            if not adapt_io:
                raise GenotypeError(source, field, f"the genotype has {have}, {planned.name} needs {need} "
                                    f"({why[field]}); pass adapt_io=True to rebuild it with {need}")
            changes[field] = need
    if changes:
        provenance = {**genotype.provenance, "nnunet_adapt_io": {k: [getattr(genotype, k), v]
                                                                   for k, v in changes.items()}}
        genotype = genotype.replace(provenance=provenance, **changes)
    return genotype


def export_plans(
    genotype: str | Path,
    dataset: int | str,
    configuration: str = "3d_fullres",
    name: str | None = None,
    source_plans: str = "nnUNetPlans",
    patch_size: list[int] | None = None,
    rounding: str = "nearest",
    adapt_io: bool = False,
    trainer: str = "nnUNetTrainer",
    device: str | None = None,
    folds: tuple[int, ...] = (0, 1, 2, 3, 4),
    memory_limit_gb: float | None = None,
    split_file: str | Path | None = None,
) -> Export:
    """Write ``<source_plans>_<name>.json`` for a genotype file and return the plans path and train commands.

    ``name`` defaults to the genotype's name; ``patch_size`` (default: nnU-Net's) is rounded to the network's total
    stride (``rounding``: nearest, up or down); ``adapt_io`` rebuilds a genotype with the dataset's channel and class
    counts instead of refusing it; ``trainer`` and ``device`` only shape the printed commands. A training step at
    the patch and the plans' batch size that would need more than ``memory_limit_gb`` (default: 80 % of this
    machine's GPU, or of its memory without one) is refused before anything is written. ``split_file``: folds in
    nnU-Net's ``splits_final.json`` format (a study's ``data/dev/splits_final.json``) written into the dataset's
    preprocessed folder, so nnU-Net validates on the folds the search and the study used (an existing, different
    ``splits_final.json`` there is refused: nnU-Net would keep it).
    """
    source = Path(genotype)
    geno = Genotype.load(source)
    name = name or geno.name or source.stem
    if not _NAME.match(name):
        raise InputError(source, "name", f"{name!r}: use letters, digits, '-' and single '_' (it becomes a file "
                                         "and folder name; nnU-Net splits folder names on '__')")
    if configuration not in CONFIGURATIONS:
        raise InputError(EXPORT, "configuration", f"{configuration!r}: export to one of {list(CONFIGURATIONS)}")
    planned = load_planned(dataset, source_plans)
    config = copy.deepcopy(planned.configuration(configuration))
    base_patch = list(config["patch_size"]) if patch_size is None else [int(p) for p in patch_size]
    geno = check_fits(geno, planned, configuration, base_patch, source, adapt_io)

    with torch.device("meta"):  # shapes only: a genotype too large for the machine is refused, not allocated
        stride = check_protocol(build_network(geno), geno.method, str(source)).total_stride
    strides = net_strides(stride, geno.spatial_dims, source)
    if patch_size is None:
        patch = round_patch(base_patch, stride, rounding)
        median = config.get("median_image_size_in_voxels") or base_patch
        if any(p > 2 * max(m, b) for p, m, b in zip(patch, median, base_patch, strict=True)):
            raise InputError(source, "patch_size", f"the network's total stride {stride} grows nnU-Net's patch "
                             f"{base_patch} to {patch}, more than twice the dataset's median image size "
                             f"{list(median)}: pass --patch_size (multiples of {stride}) or export a network that "
                             "halves its input fewer times")
    elif any(p % stride for p in base_patch):
        raise InputError(EXPORT, "patch_size", f"{base_patch} is not divisible by the network's total stride {stride}")
    else:
        patch = base_patch
    check_network_memory(lambda: build_network(geno), (planned.input_channels, *patch),
                         int(config["batch_size"]), resolve_device("auto"), memory_limit_gb, "patch_size",
                         str(source), what=f"nnU-Net's {configuration} training")
    arch_kwargs = {"genotype": geno.to_dict(), "strides": strides, "genotype_source": str(source)}
    net = SearchedNetwork(planned.input_channels, planned.num_outputs, deep_supervision=False, **arch_kwargs)
    cost = network_cost(net, planned.input_channels, patch, net.divisor)

    if split_file is not None:
        write_split(split_file, planned.folder)
    plans_name = f"{source_plans}_{name}"
    config.pop("inherits_from", None)
    config.update(patch_size=patch, architecture={"network_class_name": NETWORK_CLASS, "arch_kwargs": arch_kwargs,
                                                  "_kw_requires_import": []})
    plans = copy.deepcopy(planned.plans)
    plans["plans_name"] = plans_name
    plans["configurations"] = {configuration: config}
    plans["medseg_nas"] = {
        "genotype": geno.name, "method": geno.method, "genotype_file": str(source.resolve()),
        "source_plans": planned.plans_path.name, "configuration": configuration,
        "nnunet_patch_size": list(planned.configuration(configuration)["patch_size"]), "patch_size": patch,
        "total_stride": stride, "params": cost.params, "macs": cost.macs,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = planned.folder / f"{plans_name}.json"
    write_json_atomic(path, plans)
    commands = train_commands(dataset_id(planned.name), configuration, plans_name, trainer, folds, device)
    return Export(path, plans_name, configuration, patch, strides, cost.params, cost.macs, commands)


def train_commands(dataset: int | str, configuration: str, plans_name: str, trainer: str = "nnUNetTrainer",
                   folds: tuple[int, ...] = (0, 1, 2, 3, 4), device: str | None = None) -> list[str]:
    """The exact ``nnUNetv2_train`` lines (with the ``nnUNet_extTrainer`` export our trainers need)."""
    lines = []
    if trainer in TRAINERS:
        lines.append(f"export nnUNet_extTrainer={ext_trainer_dir()}")
    dev = f" -device {device}" if device else ""
    lines += [f"nnUNetv2_train {dataset} {configuration} {fold} -p {plans_name} -tr {trainer}{dev}" for fold in folds]
    return lines
