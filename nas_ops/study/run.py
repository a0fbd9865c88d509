"""A study in one call: from a dataset to a table that says whether each search beat hand-design and chance.

``study(dataset_dir, output_dir, methods=[...])``, in order, each part resumable and reused when finished:

1. the split (:mod:`nas_ops.study.split`): held-out test cases, patient-grouped folds of the rest, written once
   as the study's development and test dataset folders;
2. each method's search, through its bundle's ``search.json`` (with the budget's overlays) on the development
   cases only (:mod:`nas_ops.study.workflows`: the code path of ``python -m monai.bundle run``);
3. the models of each method (:mod:`nas_ops.study.models`): the network its search found, the baselines of its
   bundle (``--baselines``), and ``random`` architectures drawn from its search space (uniformly where the space
   allows) under the search's constraints (``nas_ops.search_run.draw_distinct``: seeded, valid, different from each
   other);
4. every model trained with one recipe (the bundle's ``train.json`` and the budget's overlays) for every seed and
   fold, and scored on the test cases (:mod:`nas_ops.study.jobs`), as jobs of the execution layer (``backend``:
   ``local``, ``ray`` or ``subprocess``);
5. the report (:mod:`nas_ops.study.report`): ``report.md``, ``results.csv``, ``summary.json`` and the plots.

``<output_dir>/study.json`` keeps the study's identity (the dataset's fingerprint and every setting that changes a
number): the same command resumes or reports a study; another dataset or setting in the folder is refused, naming
what changed. Where the jobs run (backend, parallel jobs) is not part of it.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from nas_ops.atomic import write_json_atomic
from nas_ops.config import (
    Backend,
    Fraction,
    NFolds,
    NonNegativeInt,
    PositiveInt,
    check_output_dir,
    json_ready,
)
from nas_ops.data.setup import load_checked_dataset
from nas_ops.engine.execution import Job, executor
from nas_ops.engine.seeds import stream_seed
from nas_ops.entry import entry
from nas_ops.errors import InputError, read_json
from nas_ops.genotype import Genotype
from nas_ops.process import resolve_device
from nas_ops.search_run import GENOTYPE_FILE, Searcher, draw_distinct, get_searcher
from nas_ops.search_state import refuse_other_settings
from nas_ops.study.models import StudyModel, baseline_genotype, bundle_baselines, check_baselines
from nas_ops.study.report import write_report
from nas_ops.study.split import draw_split, min_test_cases, read_split, write_views
from nas_ops.study.workflows import check_config_key, config_value, run_workflow

log = logging.getLogger(__name__)
FORMAT, VERSION = "medseg-nas-study", 1
STUDY_FILE, SPLIT_FILE, TIMING_FILE = "study.json", "split.json", "timing.json"
SOURCE = "study"
#: the nnunet recipe's trainer per budget: a short AdamW schedule for the demo, nnU-Net's own for the paper budget
TRAINERS_OF_BUDGET = {"demo": "nnUNetTrainerNAS_AdamW_demo", "paper": "nnUNetTrainer"}


def _searchers(methods: list[str]) -> dict[str, Searcher]:
    out = {name: get_searcher(name, SOURCE, f"methods[{i}]") for i, name in enumerate(methods)}
    if not out:
        raise InputError(SOURCE, "methods", "names no method: give at least one search method")
    return out


def _check_overrides(bundle_dir: Path, searcher: Searcher, budget: str, search: dict[str, Any] | None,
                     train: dict[str, Any] | None) -> list[str]:
    """Refuse an override key the method's configs do not define, and a search block the method refuses, before
    anything runs; returns the search's configs."""
    from monai.bundle import ConfigParser

    configs = ["search.json", *searcher.overlays[budget]]
    for names, overrides, what in ((configs, search, "search_overrides"),
                                   (["train.json", *searcher.train_overlays[budget]], train, "train_overrides")):
        merged = ConfigParser.load_config_files([str(bundle_dir / "configs" / n) for n in names])
        for key in overrides or {}:
            check_config_key(merged, key, SOURCE, f"{what}.{key}", f"the {searcher.name} bundle's {names[0]}")
    block = config_value(bundle_dir, configs, "search", **(search or {}))
    searcher.config_class.from_values(block, f"{bundle_dir / 'configs' / 'search.json'} (with search_overrides)",
                                      "search#")
    return configs


def _only_known(bundle_dir: Path, names: list[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides a bundle's merged configs define (a search without ``fold`` or ``backend`` gets none)."""
    from monai.bundle import ConfigParser

    keys = set(ConfigParser.load_config_files([str(bundle_dir / "configs" / n) for n in names]))
    return {k: v for k, v in overrides.items() if k in keys}


def _save(genotype: Genotype, path: Path) -> str:
    """Write a model's genotype unless the file already holds it; returns the path."""
    if not genotype.matches_file(path):
        genotype.save(path)
    return str(path)


@entry
def study(
    dataset_dir: str | Path,
    output_dir: str | Path,
    methods: list[str],
    baselines: list[str] | None = None,
    random: NonNegativeInt = 8,
    seeds: PositiveInt = 3,
    folds: PositiveInt = 1,
    n_folds: NFolds = 5,
    recipe: Literal["bundle", "nnunet"] = "bundle",
    nnunet_trainer: str | None = None,
    budget: Literal["demo", "paper"] = "demo",
    test_fraction: Fraction = 0.2,
    split_seed: NonNegativeInt = 0,
    search_seed: NonNegativeInt = 0,
    device: str = "cpu",
    backend: Backend = "local",
    parallel_jobs: PositiveInt = 1,
    ray_address: str | None = None,
    bundles_dir: str | Path = "bundles",
    search_overrides: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    allow_outside_dataset_dir: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or resume, or report) a study; returns its summary (see the module docstring).

    ``methods``: searches by name (``bixnas``, ``mbnas``, ``c2fnas``, ``dints``); ``baselines``: names of the
    bundles' genotypes (``unet``, ``bionet_pp``, ``resunet``, ``unet3d``, ...) or ``segresnet`` (None: every
    baseline each bundle ships for its dimensionality, and SegResNet); ``random``: random architectures per method;
    ``seeds`` x ``folds``: the trainings of every model (training seeds 0.., folds 0.. of ``n_folds``);
    ``budget``: the bundles' ``demo`` overlays or their ``paper`` settings; ``test_fraction``: the held-out share of
    the cases (at least as many as a method's family of Holm-adjusted Wilcoxon tests needs to reach p < 0.05:
    :func:`nas_ops.study.split.min_test_cases`). ``search_overrides``/``train_overrides``:
    keys set on every search/training over the budget's configs (``{"search#budget": 20}``, ``{"epochs": 30}``),
    as ``--key value`` on a bundle's command line. ``recipe``: ``bundle`` trains with each bundle's ``train.json``;
    ``nnunet`` exports every genotype to an nnU-Net plans variant and trains it, with nnU-Net's own networks
    (baselines ``nnunet`` and ``nnunet_resenc_m``), by the stock ``nnUNetv2_train`` with ``nnunet_trainer`` (default:
    a short AdamW schedule for the demo budget, ``nnUNetTrainer`` for the paper's; :mod:`nnunet_plans.study`).
    A search runs in this process with ``parallel_jobs`` torch
    threads (its own independent jobs, if it has any, on ``backend``); every training is a job of one thread.
    """
    tic = time.perf_counter()
    out = check_output_dir(output_dir, source=SOURCE)
    searchers = _searchers(list(methods))
    if folds > n_folds:
        raise InputError(SOURCE, "folds", f"{folds} folds of a {n_folds}-fold split: use at most {n_folds}")
    bundles = Path(bundles_dir)
    for name, searcher in searchers.items():
        if not (bundles / searcher.bundle / "configs" / "search.json").is_file():
            raise InputError(SOURCE, "bundles_dir", f"{bundles / searcher.bundle} holds no bundle (method {name}): "
                             "run from the project's root or pass --bundles_dir")
    ds = load_checked_dataset(dataset_dir, allow_outside=allow_outside_dataset_dir)
    trainer = nnunet_trainer or TRAINERS_OF_BUDGET[budget]
    nnunet = _nnunet_recipe(recipe, ds, train_overrides, trainer, nnunet_trainer is not None)
    for name, searcher in searchers.items():
        if searcher.spatial_dims == 3 and not ds.is_3d:
            raise InputError(ds.json_path, "training", f"holds 2D images: {name} searches 3D networks on volumes")
    dims = {name: searcher.spatial_dims or 2 for name, searcher in searchers.items()}
    stock = nnunet.available_baselines() if nnunet else []  # nnU-Net's own networks, with the nnunet recipe
    available = {name: bundle_baselines(bundles / s.bundle, dims[name]) + stock for name, s in searchers.items()}
    if baselines is not None:
        check_baselines(list(baselines), available)
    chosen = {name: [b for b in (baselines if baselines is not None else names) if b in names]
              for name, names in available.items()}
    resolve_device(device, SOURCE)
    configs = {name: _check_overrides(bundles / s.bundle, s, budget, search_overrides, train_overrides)
               for name, s in searchers.items()}
    family = max(len(chosen[name]) + (1 if random else 0) for name in searchers)
    identity = {"dataset": {"name": ds.name, "fingerprint": ds.fingerprint}, "methods": list(methods),
                "baselines": chosen, "random": random, "seeds": seeds, "folds": folds, "n_folds": n_folds,
                "recipe": recipe, **({"nnunet_trainer": trainer} if nnunet else {}),
                "budget": budget, "test_fraction": test_fraction, "split_seed": split_seed,
                "search_seed": search_seed, "device": device, "search_overrides": search_overrides or {},
                "train_overrides": train_overrides or {}}
    identity = json_ready(identity)
    state_path = out / STUDY_FILE
    if state_path.is_file():
        saved = read_json(state_path)
        refuse_other_settings(saved.get("identity", {}), identity, state_path, "study")
    split_path = out / SPLIT_FILE  # 1. the split: drawn (a pure function of the dataset and the settings) first
    split = read_split(split_path) if split_path.is_file() else draw_split(
        ds, n_folds, split_seed, test_fraction, min_test=min_test_cases(family))
    command = command or " ".join(shlex.quote(a) for a in sys.argv)
    out.mkdir(parents=True, exist_ok=True)  # every input checked: from here on the study writes
    write_json_atomic(state_path, {"format": FORMAT, "version": VERSION, "identity": identity, "command": command})
    dev_dir, test_dir = write_views(ds, split, out / "data")
    write_json_atomic(split_path, split.to_dict())
    dev, test = load_checked_dataset(dev_dir), load_checked_dataset(test_dir)
    log.info("study split of %s: %d development cases in %d folds, %d held-out test cases", ds.name,
             len(dev.items), n_folds, len(test.items))
    fingerprints = {"dev": dev.fingerprint, "test": test.fingerprint}
    workspace = None
    if nnunet:  # nnU-Net converts and plans the data before any search: a dataset it cannot take stops here
        plans = {nnunet.BASELINES[b] for names in chosen.values() for b in names if b in nnunet.BASELINES}
        workspace = nnunet.prepare(out / "nnunet", dev, test, dev_dir / "splits_final.json",
                                   {nnunet.configuration_of(d) for d in dims.values()}, {"nnUNetPlans", *plans})

    # 2. the searches, 3. the models
    models: list[StudyModel] = []
    search_seconds: dict[str, float] = {}
    for name, searcher in searchers.items():
        bundle_dir = bundles / searcher.bundle
        search_configs = configs[name]
        search_out = out / "searches" / name
        timing = search_out / "study_search.json"
        if timing.is_file():
            search_seconds[name] = read_json(timing)["seconds"]
        started = time.perf_counter()
        log.info("search %s (%s budget) on the development cases into %s", name, budget, search_out)
        run_workflow(bundle_dir, search_configs, **_only_known(bundle_dir, search_configs, {
            "dataset_dir": str(dev_dir), "output_dir": str(search_out), "seed": search_seed, "fold": 0,
            "n_folds": n_folds, "device": device, "num_threads": parallel_jobs, "backend": backend,
            "parallel_jobs": parallel_jobs, "ray_address": ray_address}), **(search_overrides or {}))
        if name not in search_seconds:
            search_seconds[name] = round(time.perf_counter() - started, 1)
            write_json_atomic(timing, {"seconds": search_seconds[name]})
        genotypes = out / "genotypes" / searcher.bundle
        found = Genotype.load(search_out / "search" / GENOTYPE_FILE)
        models.append(StudyModel(name, searcher.bundle, f"{name}-found", "found",
                                 _save(found.replace(name=f"{name}-found"), genotypes / f"{name}-found.json")))
        for base in chosen[name]:
            if nnunet and base in nnunet.BASELINES:  # nnU-Net's own network: its plans, no genotype
                models.append(StudyModel(name, f"nnunet_{nnunet.configuration_of(dims[name])}", base, "baseline", ""))
                continue
            genotype = baseline_genotype(base, bundle_dir, dims[name], dev)
            models.append(StudyModel(name, searcher.bundle, base, "baseline",
                                     _save(genotype, genotypes / f"{base}.json")))
        cfg = searcher.config_class.from_values(config_value(bundle_dir, search_configs, "search",
                                                             **(search_overrides or {})))
        accept = nnunet.trainable if nnunet else None  # the nnunet recipe: only networks nnU-Net can train
        drawn = draw_distinct(searcher, cfg, dev, random, stream_seed(search_seed, 9_000), accept=accept)
        for i, genotype in enumerate(drawn):
            model = f"{name}-random_{i:02d}"
            models.append(StudyModel(name, searcher.bundle, model, "random",
                                     _save(genotype.replace(name=model), genotypes / f"{model}.json")))

    # 4. the trainings
    if nnunet:
        jobs = _nnunet_jobs(nnunet, workspace, out, models, seeds, folds, identity["nnunet_trainer"], device,
                            fingerprints, str(test_dir))
    else:
        jobs = _bundle_jobs(out, bundles, models, searchers, budget, seeds, folds, n_folds, device, str(dev_dir),
                            str(test_dir), fingerprints, train_overrides or {})
    seen = {job.tag[:2] for job in jobs}
    log.info("study: %d trainings (%d models x %d seeds x %d folds) on %s with %d job(s) at once", len(jobs),
             len(seen), seeds, folds, backend, parallel_jobs)
    results: dict[tuple, dict] = {}
    started = time.perf_counter()
    with executor(backend, parallel_jobs, ray_address) as run_jobs:
        for done, (job, result) in enumerate(run_jobs(jobs), 1):
            results[job.tag] = result
            log.info("study: training %d/%d done (%s %s seed %d fold %d): %.0f s", done, len(jobs), *job.tag[:2],
                     *job.tag[2:], result["job_seconds"])
    runs = _record_run(out / TIMING_FILE, {"study_seconds": round(time.perf_counter() - tic, 1),
                                          "training_seconds": round(time.perf_counter() - started, 1),
                                          "backend": backend, "parallel_jobs": parallel_jobs})

    # 5. the report
    return write_report(out, ds, split, models, results, searchers, {
        "command": command, "identity": identity, "search_seconds": search_seconds, "runs": runs,
        "study_seconds": sum(r["study_seconds"] for r in runs),
        "training_seconds": sum(r["training_seconds"] for r in runs),
        "job_seconds": round(sum(r["job_seconds"] for r in results.values()), 1),
        "trainings": len(jobs), "dev_dir": str(dev_dir), "test_dir": str(test_dir)})


def _nnunet_recipe(recipe: str, ds: Any, train_overrides: dict[str, Any] | None, trainer: str | None,
                   trainer_given: bool) -> Any:
    """The nnunet recipe's module when it is chosen (checked against the dataset, the install and the trainer),
    else None."""
    if recipe != "nnunet":
        if trainer_given:
            raise InputError(SOURCE, "nnunet_trainer", "applies to --recipe nnunet only (the bundle recipe trains "
                             "with each bundle's train.json)")
        return None
    import nnunet_plans.study as nnunet

    if train_overrides:
        raise InputError(SOURCE, "train_overrides", "set keys of the bundles' train.json; the nnunet recipe trains "
                         "with nnU-Net's trainer: choose it with --nnunet_trainer")
    nnunet.check_recipe(ds, SOURCE, trainer)
    return nnunet


def _nnunet_jobs(nnunet: Any, ws: Any, out: Path, models: list[StudyModel], seeds: int, folds: int,
                 trainer: str, device: str, fingerprints: dict[str, str], test_dir: str) -> list[Job]:
    """Export every genotype into the study's nnU-Net workspace and return one job per model, repetition and
    fold."""
    nnunet.export_genotypes(ws, {f"{m.bundle}-{m.name}": m.genotype for m in models if m.genotype})
    dims = {m.bundle: Genotype.load(m.genotype).spatial_dims for m in models if m.genotype}

    def kwargs(model: StudyModel) -> dict[str, Any]:
        if model.genotype:
            configuration = nnunet.configuration_of(dims[model.bundle])
            plans_name = f"nnUNetPlans_{model.bundle}-{model.name}"
        else:
            configuration = model.bundle.removeprefix("nnunet_")
            plans_name = nnunet.BASELINES[model.name]
        return {"workspace": str(ws.root), "dataset": ws.dataset, "configuration": configuration,
                "plans": plans_name, "trainer": trainer, "test_dir": test_dir, "device": device,
                "fingerprints": fingerprints}

    return _trainings(out, models, seeds, folds, "nnunet_plans.study.train_and_test", kwargs)


def _bundle_jobs(out: Path, bundles: Path, models: list[StudyModel], searchers: dict[str, Searcher], budget: str,
                 seeds: int, folds: int, n_folds: int, device: str, dev_dir: str, test_dir: str,
                 fingerprints: dict[str, str], train_overrides: dict[str, Any]) -> list[Job]:
    """One job per model, seed and fold: the bundle's own train, inference and evaluate workflows."""
    return _trainings(out, models, seeds, folds, "nas_ops.study.jobs.train_and_test", lambda model: {
        "bundle_dir": str(bundles / model.bundle),
        "train_configs": list(searchers[model.method].train_overlays[budget]), "genotype_path": model.genotype,
        "dev_dir": dev_dir, "test_dir": test_dir, "n_folds": n_folds,
        "device": device, "fingerprints": fingerprints, "overrides": train_overrides})


def _trainings(out: Path, models: list[StudyModel], seeds: int, folds: int, fn: str,
               kwargs: Callable[[StudyModel], dict[str, Any]]) -> list[Job]:
    """One job ``fn`` per model, seed and fold (a model shared by two methods of one bundle trains once), each in
    ``<study>/runs/<bundle>/<model>/seed<k>_fold<f>``."""
    jobs, seen = [], set()
    for model in models:
        for seed in range(seeds):
            for fold in range(folds):
                key = (model.bundle, model.name, seed, fold)
                if key in seen:
                    continue
                seen.add(key)
                run_dir = out / "runs" / model.bundle / model.name / f"seed{seed}_fold{fold}"
                jobs.append(Job(fn, tag=key, log=str(run_dir / "job.log"), kwargs={
                    **kwargs(model), "seed": seed, "fold": fold, "run_dir": str(run_dir)}))
    return jobs


def _record_run(path: Path, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Append this invocation's wall times to the study's ``timing.json``: a resumed study reports the time of
    every run it took, not only of the last (which may have reused everything)."""
    runs = read_json(path).get("runs", []) if path.is_file() else []
    runs.append(run)
    write_json_atomic(path, {"runs": runs})
    return runs


def main(argv: list[str] | None = None) -> None:
    """The ``medseg-nas-study`` console command (a ``fire`` CLI over :func:`study`)."""
    from nas_ops.entry import fire_main

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    fire_main(study, argv)
