"""The search of the C2FNAS bundle by ``variant``: ``c2fnas`` (:mod:`nas_ops.c2fnas.search`) or ``dints``, MONAI's
DiNTS run through the same data, metrics and memory check as the comparison row (:mod:`nas_ops.dints.search`).

Both blocks of ``configs/search.json`` (``search`` and ``dints``) are checked whichever variant runs, so a typo in
either is refused. One search folder holds one variant's search: a folder with the other variant's files is
refused before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from nas_ops.bundle import entry
from nas_ops.c2fnas.context import C2FNASConfig
from nas_ops.errors import InputError

FILES = {
    "c2fnas": ("coarse_result.json", "coarse_state.pt", "coarse", "fine_supernet_state.pt", "evolution_state.pt",
               "evolution_result.json"),
    "dints": ("dints_state.pt", "dints_result.json"),
}
Variant = Literal["c2fnas", "dints"]


def check_folder(output_dir: str | Path, variant: str) -> None:
    """Refuse a search folder holding the other variant's search."""
    for other, names in FILES.items():
        if other == variant:
            continue
        for name in names:
            if (Path(output_dir) / name).exists():
                raise InputError(Path(output_dir) / name, "variant", f"{output_dir} holds a {other} search: give "
                                 f"the {variant} variant its own folder (e.g. --output_dir runs/{variant})")


@entry
def search(variant: Variant, output_dir: str | Path, config: dict[str, Any] | None = None,
           dints: dict[str, Any] | None = None, stage: Literal["all", "coarse", "fine"] = "all",
           topology: list[int] | None = None, config_source: str = "search config", **common: Any) -> dict[str, Any]:
    """Run the ``variant``'s search into ``output_dir``; ``config`` is the ``search`` block (C2FNAS), ``dints`` the
    ``dints`` block; ``common``: the arguments both searches take (dataset, seed, fold, device, ...)."""
    from nas_ops.dints.search import DiNTSConfig

    C2FNASConfig.from_block(config, config_source, {})
    DiNTSConfig.from_values(dints, config_source, "dints#")
    check_folder(output_dir, variant)
    if variant == "dints":
        if stage != "all" or topology is not None:
            raise InputError(config_source, "stage" if stage != "all" else "topology", "the dints variant has one "
                             "stage and searches its own topology: leave stage 'all' and topology null")
        from nas_ops.dints.search import search as dints_search

        c2fnas_only = ("backend", "parallel_jobs", "ray_address", "plots")
        return dints_search(output_dir=output_dir, config=dints, prefix="dints#", config_source=config_source,
                            **{k: v for k, v in common.items() if k not in c2fnas_only})
    from nas_ops.c2fnas.search import search as c2fnas_search

    return c2fnas_search(output_dir=output_dir, config=config, stage=stage, topology=topology,
                         config_source=config_source, **common)
