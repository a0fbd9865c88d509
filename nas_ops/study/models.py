"""What a study trains for each method: the network its search found, the hand-designed baselines of its bundle
(and MONAI's SegResNet), and random architectures of its search space, each a genotype file in the study."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nas_ops.baselines.segresnet import segresnet_genotype
from nas_ops.data.msd import MSDDataset
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype

Kind = Literal["found", "baseline", "random"]
BUILT_IN = ("segresnet",)  # baselines the library builds for any dimensionality


@dataclass(frozen=True)
class StudyModel:
    """One architecture of a study: ``method`` (the search it is compared in), the ``bundle`` that trains it, a
    ``name`` unique among the bundle's models (baselines are shared by the methods of one bundle), its ``kind``
    and its genotype file."""

    method: str
    bundle: str
    name: str
    kind: Kind
    genotype: str


def bundle_baselines(bundle_dir: str | Path, spatial_dims: int) -> list[str]:
    """The baselines a bundle ships for networks of ``spatial_dims`` (its ``genotypes/`` folder), and the built-in
    ones."""
    names = []
    for path in sorted(Path(bundle_dir, "genotypes").glob("*.json")):
        if Genotype.load(path).spatial_dims == spatial_dims:
            names.append(path.stem)
    return names + list(BUILT_IN)


def baseline_genotype(name: str, bundle_dir: str | Path, spatial_dims: int, ds: MSDDataset) -> Genotype | None:
    """Baseline ``name`` fitted to the dataset's channels and classes: a genotype of the bundle's ``genotypes/``
    folder or a built-in one; None when the bundle has no such baseline for networks of ``spatial_dims``."""
    if name == "segresnet":
        genotype = segresnet_genotype(spatial_dims, ds.in_channels, ds.num_classes)
    else:
        path = Path(bundle_dir, "genotypes", f"{name}.json")
        if not path.is_file():
            return None
        genotype = Genotype.load(path)
        if genotype.spatial_dims != spatial_dims:
            return None
    return genotype.replace(in_channels=ds.in_channels, out_channels=ds.num_classes, name=name)


def check_baselines(names: list[str], available: dict[str, list[str]]) -> None:
    """Refuse a baseline no method of the study can train (``available``: method -> its baselines)."""
    known = sorted({n for names_of in available.values() for n in names_of})
    for i, name in enumerate(names):
        if name not in known:
            from nas_ops.config import nearest

            raise InputError("study", f"baselines[{i}]", f"no bundle of the study's methods has a baseline {name!r}"
                             f"{nearest(name, known)}; known: {known}")
