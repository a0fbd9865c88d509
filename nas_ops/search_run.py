"""One harness for every search: its opening and its ending, so a method brings only its own logic.

A method supplies a :class:`Searcher` (its name, config block, the dimensionality it searches, a memory probe and
its search body) and declares it under the entry-point group ``medseg_nas.searches``; every bundle's
``search.json`` runs :func:`search` with the searcher's name (``"method": "bixnas"``)::

    [project.entry-points."medseg_nas.searches"]
    bixnas = "nas_ops.bixnas.search:SEARCHER"

**Opening** a search (:func:`open_search`), before anything is written: the fold is checked, the ``search`` block
is checked by the method's config class (naming ``search#<key>``), the device and torch's threads are set, the
output folder is checked (a file in the way, or another method's search in it, is refused), the dataset is loaded,
validated and fingerprinted once (and refused when the method searches 3D networks and it holds 2D images), and the
method's heaviest training step is checked against ``memory_limit_gb``. The opened :class:`SearchRun` carries all
of it and the base identity (seed, fold, folds, the dataset's name and fingerprint) that every stage's checkpoint
extends.

**Ending** a search (:meth:`SearchRun.finish`): the genotype, with the harness's provenance (method, dataset,
fingerprint, seed, fold, the search block) beside the method's own, is written to ``genotype.json`` only when it
changed (a finished search run again leaves every file as it is); ``search_summary.json`` and the method's plots
come with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas_ops.atomic import write_json_atomic
from nas_ops.config import Backend, ConfigBlock, NFolds, NonNegativeInt, PositiveFloat, PositiveInt, check_output_dir
from nas_ops.data.msd import MSDDataset
from nas_ops.data.setup import load_checked_dataset
from nas_ops.data.splits import fold_items
from nas_ops.entry import entry
from nas_ops.errors import InputError, read_json
from nas_ops.genotype import Genotype
from nas_ops.process import prepare_process
from nas_ops.resources import check_network_memory

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "medseg_nas.searches"
GENOTYPE_FILE, SUMMARY_FILE, METHOD_FILE = "genotype.json", "search_summary.json", "search_method.json"
CONFIG_SOURCE = "search config"


@dataclass(frozen=True)
class MemoryProbe:
    """The heaviest training step of a search: ``build()`` (a supernet, or its heaviest path) at ``batch_size``
    items of ``samples_per_item`` inputs of ``input_shape`` ``(C, *spatial)``; ``size_key``/``batch_key`` name the
    keys a refusal tells the user to lower."""

    build: Callable[[], nn.Module]
    input_shape: Sequence[int]
    batch_size: int
    size_key: str
    what: str
    batch_key: str = "search#batch_size"
    samples_per_item: int = 1


@dataclass(frozen=True)
class Execution:
    """Where a search's independent jobs run (:func:`nas_ops.engine.execution.executor`)."""

    backend: str = "local"
    parallel_jobs: int = 1
    ray_address: str | None = None


@dataclass(frozen=True)
class SearchOutcome:
    """What a search body returns: its summary, and the genotype it selected with the method's provenance and its
    plots (``plots(folder)``, drawn when the genotype is written); no genotype for a part of a search (a phase)."""

    summary: dict[str, Any]
    genotype: Genotype | None = None
    plots: Callable[[Path], None] | None = None


@dataclass(frozen=True)
class Progress:
    """How a search's objective moved: ``values`` against ``steps`` (epochs, evaluations, generations)."""

    step: str
    value: str
    steps: list[float]
    values: list[float]


class Searcher:
    """What a method supplies to the harness: a subclass sets its name, config class and bundle, and writes its search
    body and its sampler; the rest has defaults (the bundle's ``demo.json`` overlay for the demo budget)."""

    name: str  # the method's name in messages, provenance and the folder marker
    config_class: type[ConfigBlock]  # its ``search`` block
    bundle: str  # the bundle folder whose configs run it (``bundles/<bundle>``)
    spatial_dims: int | None = None  # 3: searches 3D networks on volumes; None: any dataset (2D methods slice volumes)
    overlays: dict[str, tuple[str, ...]] = {"demo": ("demo.json",), "paper": ()}  # per budget, over search.json
    train_overlays: dict[str, tuple[str, ...]] = {"demo": ("demo.json",), "paper": ()}  # per budget, over train.json

    def memory_probe(self, config: Any, dataset: MSDDataset, prefix: str) -> MemoryProbe | None:
        """The heaviest training step of a search of ``config`` on ``dataset`` (None: the method checks its
        candidates itself); ``prefix`` names the block's keys in messages (``search#`` in a bundle)."""
        return None

    def run(self, run: SearchRun, **options: Any) -> SearchOutcome:
        """The search body: resumes or reports what is finished, writes its own checkpoints in ``run.output_dir``."""
        raise NotImplementedError

    def sample(self, config: Any, dataset: MSDDataset, rng: np.random.Generator) -> tuple[Any, Genotype]:
        """One architecture drawn from the space a search of ``config`` explores, under its constraints (a
        random-search control; uniformly where the method can say what uniform means), with the key that tells two
        different networks apart."""
        raise NotImplementedError

    def progress(self, output_dir: Path) -> Progress | None:
        """The objective along a finished search in ``output_dir`` (None when it left none)."""
        return None


@dataclass
class SearchRun:
    """An opened search: its checked config, device, dataset, output folder and base identity."""

    searcher: Searcher
    config: ConfigBlock
    device: torch.device
    dataset_dir: Path
    dataset: MSDDataset  # validated; ``dataset.fingerprint`` is set
    output_dir: Path
    seed: int
    fold: int
    n_folds: int
    num_workers: int = 0
    plots: bool = True
    execution: Execution = field(default_factory=Execution)
    memory_limit_gb: float | None = None
    source: str = CONFIG_SOURCE
    prefix: str = "search#"  # how messages name the block's keys: search#<key> for a bundle's block, <key> from Python

    @property
    def identity(self) -> dict[str, Any]:
        """What decides every result of this search besides its config: seed, folds and the dataset."""
        return {"seed": self.seed, "fold": self.fold, "n_folds": self.n_folds,
                "dataset": {"name": self.dataset.name, "fingerprint": self.dataset.fingerprint}}

    def begin(self) -> Path:
        """The output folder, made and marked as this method's (the body calls it before it first writes)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        marker = self.output_dir / METHOD_FILE
        if not marker.is_file():
            write_json_atomic(marker, {"method": self.searcher.name})
        return self.output_dir

    def provenance(self, **own: Any) -> dict[str, Any]:
        """The genotype's provenance: the harness's part (method, seed, the dataset and fold it was searched on, the
        search block) and the method's own (scores, costs)."""
        dataset = {"name": self.dataset.name, "dataset_dir": str(self.dataset_dir),
                   "fingerprint": self.dataset.fingerprint, "fold": self.fold, "n_folds": self.n_folds}
        return {"method": self.searcher.name, "seed": self.seed, "dataset": dataset,
                "search_config": self.config.as_dict(), **own}

    def finish(self, outcome: SearchOutcome) -> dict[str, Any]:
        """Write the selected genotype, its plots and ``search_summary.json`` when the genotype changed (a finished
        search run again leaves every file as it is); returns the summary."""
        summary = dict(outcome.summary)
        summary_path = self.output_dir / SUMMARY_FILE
        changed = not summary_path.is_file()
        if outcome.genotype is not None:
            path = self.output_dir / GENOTYPE_FILE
            summary.setdefault("genotype", str(path))
            if not outcome.genotype.matches_file(path):
                outcome.genotype.save(path)
                if self.plots and outcome.plots is not None:
                    outcome.plots(self.output_dir / "plots")
                changed = True
        if changed:
            write_json_atomic(summary_path, summary)
            log.info("%s search done: %s", self.searcher.name, _brief(summary))
        else:
            log.info("the %s search in %s has finished: %s", self.searcher.name, self.output_dir, _brief(summary))
        return summary


def draw_distinct(searcher: Searcher, config: Any, dataset: MSDDataset, n: int, seed: int,
                  tries_per_member: int = 200, accept: Callable[[Genotype], bool] | None = None) -> list[Genotype]:
    """``n`` different architectures drawn by ``searcher.sample`` with a generator seeded by ``seed``, named
    ``random_00``, ``random_01``, ...; refused when the space holds fewer. ``accept``: a constraint of where the
    architectures will be trained (e.g. what nnU-Net can train): a draw it rejects is dropped, so the members are
    uniform over the accepted part of the space wherever the sampler is uniform."""
    rng = np.random.default_rng(seed)
    found: dict[Any, Genotype] = {}
    for _ in range(n * tries_per_member):
        if len(found) == n:
            break
        key, genotype = searcher.sample(config, dataset, rng)
        if key not in found and (accept is None or accept(genotype)):
            found[key] = genotype.replace(name=f"random_{len(found):02d}")
    if len(found) < n:
        raise InputError(None, "random", f"the {searcher.name} search space gave {len(found)} different "
                         f"architectures in {n * tries_per_member} draws, fewer than the {n} asked for")
    return list(found.values())


def _brief(summary: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in summary.items() if isinstance(v, (int, float, str)))


def _read(path: Path) -> Any:
    try:
        return read_json(path)
    except InputError:
        return None


def get_searcher(name: str, source: str | None = None, field: str = "searcher#method") -> Searcher:
    """The searcher declared under ``name`` in the entry-point group ``medseg_nas.searches``."""
    declared = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in declared:
        from nas_ops.config import nearest

        raise InputError(source, field, f"no search method {name!r}{nearest(name, declared)}; "
                         f"known: {sorted(declared)}")
    return declared[name].load()


@entry
def open_search(
    searcher: Searcher,
    dataset_dir: str | Path,
    output_dir: str | Path,
    config: dict[str, Any] | None = None,
    seed: NonNegativeInt = 0,
    device: str = "auto",
    fold: NonNegativeInt = 0,
    n_folds: NFolds = 5,
    num_workers: NonNegativeInt = 0,
    num_threads: PositiveInt | None = None,
    plots: bool = True,
    memory_limit_gb: PositiveFloat | None = None,
    backend: Backend = "local",
    parallel_jobs: PositiveInt = 1,
    ray_address: str | None = None,
    allow_outside_dataset_dir: bool = False,
    config_source: str = CONFIG_SOURCE,
    **more: Any,
) -> SearchRun:
    """Open a search (see the module docstring); nothing is written. ``config``: the ``search`` block; its keys may
    also come as keyword arguments (``more``) from Python, not beside a bundle's block. ``backend``/
    ``parallel_jobs``/``ray_address``: where a search with independent jobs runs them."""
    source = config_source
    if fold >= n_folds:
        raise InputError(source, "fold", f"must be < n_folds = {n_folds}, got {fold}")
    cfg = searcher.config_class.from_block(config, source, more)
    dev = prepare_process(device, num_threads, source)
    out = check_output_dir(output_dir, source=source)
    marker = out / METHOD_FILE
    if marker.is_file():
        held = (_read(marker) or {}).get("method")
        if held != searcher.name:
            raise InputError(marker, "method", f"{out} holds a {held} search: give the {searcher.name} search its "
                             "own output_dir")
    ds = load_checked_dataset(dataset_dir, allow_outside=allow_outside_dataset_dir)
    if searcher.spatial_dims == 3 and not ds.is_3d:
        raise InputError(ds.json_path, "training", f"holds 2D images: {searcher.name} searches 3D networks on volumes")
    fold_items(ds, fold, n_folds, seed)  # a dataset that cannot fill the folds: refused before anything is written
    prefix = "search#" if config is not None else ""
    probe = searcher.memory_probe(cfg, ds, prefix)
    if probe is not None:
        check_network_memory(probe.build, probe.input_shape, probe.batch_size, dev, memory_limit_gb, probe.size_key,
                             source, what=probe.what, batch_key=probe.batch_key,
                             samples_per_item=probe.samples_per_item)
    return SearchRun(searcher, cfg, dev, Path(dataset_dir), ds, out, seed, fold, n_folds, num_workers, plots,
                     Execution(backend, parallel_jobs, ray_address), memory_limit_gb, source, prefix)


def search(method: str, dataset_dir: str | Path, output_dir: str | Path, options: dict[str, Any] | None = None,
           config_source: str = CONFIG_SOURCE, **settings: Any) -> dict[str, Any]:
    """Run (or resume, or report) the search of ``method`` into ``output_dir``; returns its summary.

    What every bundle's ``searcher`` calls. ``settings``: what :func:`open_search` takes (the ``search`` block as
    ``config``, seed, device, folds, ...); ``options``: the method's run options (BiX-NAS ``phase``, C2FNAS ``stage``
    and ``topology``).
    """
    searcher = get_searcher(method, config_source)
    run = open_search(searcher, dataset_dir, output_dir, config_source=config_source, **settings)
    return run.finish(searcher.run(run, **(options or {})))
