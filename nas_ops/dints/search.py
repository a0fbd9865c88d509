"""The DiNTS search on the harness (:mod:`nas_ops.search_run`): MONAI's ``TopologySearch``/``DiNTS`` on this
project's run engine and data (:mod:`nas_ops.dints.topology_search`), the decoded network stored as a ``dints``
genotype.

In a bundle: the C2FNAS bundle's ``configs/dints.json`` overlay names this searcher and its ``search`` block.
Writes ``dints_state.pt``, ``dints_result.json`` and, through the harness, ``genotype.json``. A killed search
resumes to the same genotype; a finished one is reported; one of another identity is refused, naming what changed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas_ops.cost_model import count_macs, count_params
from nas_ops.data.msd import MSDDataset
from nas_ops.dints.config import DiNTSConfig
from nas_ops.dints.space import dints_genotype, random_genotype
from nas_ops.dints.topology_search import RESULT_FILE, STATE_FILE, halves, meta_parameters, supernet, train_and_decode
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network
from nas_ops.search_run import MemoryProbe, Progress, Searcher, SearchOutcome, SearchRun
from nas_ops.search_run import search as harness_search
from nas_ops.search_state import SearchState

log = logging.getLogger(__name__)


class DiNTSSearch(Searcher):
    """DiNTS for the harness: its config block, the whole supernet as memory probe, the search and decode."""

    name = "DiNTS"
    config_class = DiNTSConfig
    spatial_dims = 3
    bundle = "c2fnas"  # the comparison row of C2FNAS: the C2FNAS bundle with its DiNTS overlays
    overlays = {"demo": ("demo.json", "dints_demo.json"), "paper": ("dints.json",)}

    def memory_probe(self, cfg: DiNTSConfig, ds: MSDDataset, prefix: str) -> MemoryProbe:
        """The whole supernet, its weights built on the meta device."""

        def probe():
            with meta_parameters():
                return supernet(cfg, ds.in_channels, ds.num_classes)

        return MemoryProbe(probe, (ds.in_channels, *cfg.patch_size), cfg.batch_size, f"{prefix}patch_size",
                           "the DiNTS supernet's training", batch_key=f"{prefix}batch_size",
                           samples_per_item=cfg.samples_per_volume)

    def run(self, run: SearchRun) -> SearchOutcome:
        """Run (or resume, or report) the search; decode; the genotype with its cost."""
        cfg: DiNTSConfig = run.config  # type: ignore[assignment]
        ds = run.dataset
        state = SearchState(run.output_dir, STATE_FILE, RESULT_FILE, identity={**run.identity, **cfg.as_dict()},
                            what="DiNTS search")
        if not state.inspect().finished:
            data, arch = halves(run.dataset_dir, cfg, run.seed, run.fold, run.n_folds, ds.fingerprint)
            run.begin()
            state.finish(train_and_decode(data, arch, cfg, state, run.seed, run.device))
        result = state.result
        provenance = run.provenance(
            method="DiNTS through MONAI's TopologySearch/DiNTS: weights and architecture codes on halves of the "
                   "training cases, then TopologySearch.decode()",
            supernet_dice=result["supernet_dice"], patch_size=list(cfg.patch_size))
        genotype = dints_genotype(result["node_a"], result["arch_code_a"], result["arch_code_c"], ds.in_channels,
                                  ds.num_classes, name="dints-searched", provenance=provenance,
                                  channel_mul=cfg.channel_mul, num_blocks=cfg.num_blocks, num_depths=cfg.num_depths)
        with torch.device("meta"):
            net = build_network(genotype)
        params, macs = count_params(net), count_macs(net, (ds.in_channels, *cfg.patch_size), device="meta")
        genotype.provenance.update(params=params, macs=macs)
        summary = {"method": "dints", "dice": result["supernet_dice"], "params": params, "macs": macs,
                   "active_paths": int(np.asarray(result["arch_code_a"]).sum())}
        return SearchOutcome(summary, genotype)


    def sample(self, cfg: DiNTSConfig, ds: MSDDataset, rng: np.random.Generator) -> tuple[Any, Genotype]:
        """A topology decoded by MONAI from random architecture weights (:func:`~nas_ops.dints.space.
        random_genotype`) in the config's space."""
        genotype = random_genotype(int(rng.integers(2**31)), ds.in_channels, ds.num_classes, cfg.channel_mul,
                                   cfg.num_blocks, cfg.num_depths, name="random")
        return json.dumps(genotype.spec, sort_keys=True), genotype


    def progress(self, output_dir: Path) -> Progress | None:
        """The architecture loss per epoch after the warm-up (the training loss before it)."""
        path = output_dir / RESULT_FILE
        if not path.is_file():
            return None
        result = json.loads(path.read_text())
        values = [a if a is not None else w for a, w in zip(result["arch_loss"], result["loss"], strict=True)]
        return Progress("epoch", "loss (architecture loss after the warm-up)", list(range(1, len(values) + 1)),
                        values)


SEARCHER = DiNTSSearch()


def search(dataset_dir: str | Path, output_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """The DiNTS search from Python: :func:`nas_ops.search_run.search` of ``"dints"``."""
    return harness_search("dints", dataset_dir, output_dir, **kwargs)
