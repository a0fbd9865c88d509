"""nnU-Net plans on disk: find a dataset's plans, resolve a configuration, build its network, count its cost.

Shared by the exporter (:mod:`nnunet_plans.export`) and the comparison harness (:mod:`nnunet_plans.compare`).
Paths come from nnU-Net's own environment variables (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``),
read when called.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from nas_ops.cost_model import count_macs, count_params
from nas_ops.errors import InputError
from nas_ops.errors import read_json as read_user_json


def env_dir(var: str) -> Path:
    """The folder an nnU-Net environment variable names (an :class:`InputError` when it is unset)."""
    value = os.environ.get(var)
    if not value:
        raise InputError(f"${var}", var, "environment variable not set (nnU-Net's data folders, see docs/nnunet.md)")
    return Path(value)


def dataset_name(dataset: int | str) -> str:
    """``DatasetXXX_Name`` from an id (``5``, ``"005"``) or a name, as nnU-Net resolves it."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        return maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as err:  # nnU-Net's message goes on to list the folders: one line here
        first = (str(err).splitlines() or [type(err).__name__])[0]
        if "Could not find a dataset" in first:
            first = ("no dataset with this id in $nnUNet_raw, $nnUNet_preprocessed or $nnUNet_results "
                     f"({', '.join(os.environ.get(v, '<unset>') for v in ('nnUNet_raw', 'nnUNet_preprocessed'))}, "
                     f"{os.environ.get('nnUNet_results', '<unset>')})")
        raise InputError(os.environ.get("nnUNet_preprocessed"), "dataset", f"{dataset!r}: {first}") from None


def dataset_id(name: str) -> int:
    """The numeric id of ``DatasetXXX_Name`` (nnU-Net's own conversion)."""
    from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id

    return convert_dataset_name_to_id(name)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """Parse a JSON file; a missing file is an :class:`InputError` telling which nnU-Net step writes it."""
    return read_user_json(path, missing=f"not found ({what})")


@dataclass(frozen=True)
class PlannedDataset:
    """A preprocessed dataset: its plans file and dataset.json as nnU-Net wrote them."""

    name: str
    folder: Path
    plans_path: Path
    plans: dict[str, Any]
    dataset_json: dict[str, Any]

    @property
    def input_channels(self) -> int:
        """Image channels, from dataset.json's ``channel_names``."""
        return len(self.dataset_json["channel_names"])

    @property
    def num_outputs(self) -> int:
        """Segmentation outputs nnU-Net asks a network for (labels with background, or regions)."""
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        return PlansManager(self.plans).get_label_manager(self.dataset_json).num_segmentation_heads

    def configuration(self, name: str) -> dict[str, Any]:
        """The configuration with inheritance resolved; an :class:`InputError` if it was not planned."""
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        planned = sorted(self.plans.get("configurations", {}))
        if name not in planned:
            raise InputError(self.plans_path, f"configurations.{name}",
                             f"not planned (planned: {planned}); run nnUNetv2_plan_and_preprocess -c {name}")
        return PlansManager(self.plans).get_configuration(name).configuration


def load_planned(dataset: int | str, plans_name: str = "nnUNetPlans") -> PlannedDataset:
    """The plans ``<nnUNet_preprocessed>/<dataset>/<plans_name>.json`` and the dataset.json beside it."""
    name = dataset_name(dataset)
    folder = env_dir("nnUNet_preprocessed") / name
    hint = f"written by nnUNetv2_plan_and_preprocess -d {dataset_id(name)}"
    plans_path = folder / f"{plans_name}.json"
    plans = read_json(plans_path, hint)
    return PlannedDataset(name, folder, plans_path, plans, read_json(folder / "dataset.json", hint))


def build_planned_network(configuration: dict[str, Any], input_channels: int, num_outputs: int,
                          deep_supervision: bool = False) -> nn.Module:
    """The network of a resolved configuration, built exactly as nnU-Net builds it."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = configuration["architecture"]
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  input_channels, num_outputs, allow_init=True, deep_supervision=deep_supervision)


def strides_divisor(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per axis, the product of nnU-Net's per-stage strides (what a patch size must be divisible by)."""
    return tuple(math.prod(axis) for axis in zip(*strides, strict=True))


@dataclass(frozen=True)
class NetworkCost:
    """Parameters (as built, supervision heads included) and inference MACs at one patch size."""

    params: int
    macs: int
    patch_size: tuple[int, ...]


def network_cost(net: nn.Module, input_channels: int, patch_size: Sequence[int], divisor: Sequence[int]) -> NetworkCost:
    """Params, and conv MACs of one forward at ``patch_size`` (deep supervision off).

    A fully convolutional network whose every feature map is the input size over a fixed factor costs MACs in
    proportion to the input's voxels, so they are counted at the smallest valid size ``divisor`` and scaled
    (exact when ``patch_size`` is divisible by ``divisor``; counted at full size otherwise).
    """
    patch = tuple(int(p) for p in patch_size)
    decoder = getattr(net, "decoder", None)
    saved = getattr(decoder, "deep_supervision", None)
    if saved is not None:
        decoder.deep_supervision = False
    try:
        macs = None
        for small in _small_sizes(patch, divisor):
            try:
                macs = count_macs(net, (input_channels, *small), device="cpu") * math.prod(patch) // math.prod(small)
                break
            except ValueError:  # e.g. InstanceNorm refuses a 1-voxel bottleneck: try the next size up
                continue
        if macs is None:
            macs = count_macs(net, (input_channels, *patch), device="cpu")
    finally:
        if saved is not None:
            decoder.deep_supervision = saved
    return NetworkCost(params=count_params(net), macs=macs, patch_size=patch)


def _small_sizes(patch: tuple[int, ...], divisor: Sequence[int]) -> list[tuple[int, ...]]:
    """Sizes that divide ``patch`` and are multiples of ``divisor``: ``divisor`` itself, then each axis doubled
    (or its next multiple) where the patch allows; empty when ``patch`` is not divisible by ``divisor``."""
    if any(p % d for p, d in zip(patch, divisor, strict=True)):
        return []
    bigger = []
    for p, d in zip(patch, divisor, strict=True):
        q = p // d
        bigger.append(d * next((m for m in range(2, q + 1) if q % m == 0), 1))
    return list(dict.fromkeys([tuple(divisor), tuple(bigger)]))
