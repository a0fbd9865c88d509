"""The study's ``nnunet`` recipe: every architecture trained by the stock ``nnUNetv2_train``, beside nnU-Net's own.

For a study (:mod:`nas_ops.study.run`) this module keeps an nnU-Net workspace in ``<study>/nnunet/``
(``raw``, ``preprocessed``, ``results/seed<k>``, ``logs``) and fills it with nnU-Net's own tools:

1. the study's development cases as ``imagesTr``/``labelsTr`` and its held-out test images as ``imagesTs`` of one
   MSD task, converted by ``nnUNetv2_convert_MSD_dataset`` and planned by ``nnUNetv2_plan_and_preprocess`` (nnU-Net's
   default planner, and ``nnUNetPlannerResEncM`` when the ResEnc M baseline is asked for);
2. the study's folds of the development cases as the dataset's ``splits_final.json`` (nnU-Net validates on them);
3. each genotype of the study exported as a plans variant (:func:`nnunet_plans.export.export_plans`): 2D networks
   in nnU-Net's ``2d`` configuration, 3D ones in ``3d_fullres``.

A job (:func:`train_and_test`) trains one plans with one trainer on one fold (``nnUNetv2_train ... --c``: a killed
training continues from nnU-Net's latest checkpoint), predicts the test images with ``nnUNetv2_predict`` and scores
them with the study's scorer (:func:`nas_ops.training.evaluation.evaluate`). nnU-Net sets no seed: a study's
"seeds" are independent repetitions, each in its own ``nnUNet_results`` folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_ops.atomic import write_json_atomic
from nas_ops.config import nearest
from nas_ops.cost_model import estimate_training_memory, time_training_step
from nas_ops.data.msd import MSDDataset
from nas_ops.engine.execution import run_command
from nas_ops.errors import InputError, read_json
from nas_ops.genotype import Genotype
from nas_ops.process import resolve_device
from nas_ops.registry import build_network
from nas_ops.study.jobs import RESULT_FILE, finished
from nnunet_plans.compare import nnunet_cli, nnunet_env, read_summary
from nnunet_plans.plans import build_planned_network, network_cost, strides_divisor
from nnunet_plans.trainers import TRAINERS as OUR_TRAINERS

#: the stock baselines: study model name -> nnU-Net plans identifier
BASELINES = {"nnunet": "nnUNetPlans", "nnunet_resenc_m": "nnUNetResEncUNetMPlans"}
#: the planner that writes each plans identifier (None: nnU-Net's default planner)
PLANNERS = {"nnUNetPlans": None, "nnUNetResEncUNetMPlans": "nnUNetPlannerResEncM"}
DATASET_ID = 1  # the workspace is the study's own: no other dataset shares its id
JOB_FILE = "nnunet_job.json"  # the identity of the training a run folder's nnU-Net files belong to
_EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")


def available_baselines() -> list[str]:
    """nnU-Net's own networks this install can plan: the default U-Net, and ResEnc M where nnU-Net has its
    planner (nnU-Net 2.4 and later)."""
    from pydoc import locate

    names = ["nnunet"]
    if locate("nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners."
              "nnUNetPlannerResEncM") is not None:
        names.append("nnunet_resenc_m")
    return names


def trainable(genotype: Genotype) -> bool:
    """Whether nnU-Net can train the network with its deep supervision: a total stride that is a power of two and
    at least 4 (two halvings; see :func:`nnunet_plans.export.net_strides`). Built on the meta device."""
    import torch

    with torch.device("meta"):
        stride = int(getattr(build_network(genotype), "total_stride", 0))
    return stride >= 4 and stride & (stride - 1) == 0


def configuration_of(spatial_dims: int) -> str:
    """nnU-Net's configuration for networks of ``spatial_dims``."""
    return "3d_fullres" if spatial_dims == 3 else "2d"


def nnunet_device(device: str) -> tuple[str, dict[str, str]]:
    """nnU-Net's ``-device`` (``cpu``, ``cuda`` or ``mps``) for a study's device, and the variables that pick one GPU
    (``cuda:1`` -> ``cuda`` with ``CUDA_VISIBLE_DEVICES=1``; ``auto`` -> what this machine has)."""
    resolved = resolve_device(device, "study")
    if resolved.type == "cuda" and resolved.index is not None:
        return "cuda", {"CUDA_VISIBLE_DEVICES": str(resolved.index)}
    return resolved.type, {}


def check_recipe(ds: MSDDataset, source: str, trainer: str) -> None:
    """Refuse, before anything is written, a dataset nnU-Net's MSD converter cannot read, an install without
    nnU-Net's commands, and a trainer nnU-Net would not find."""
    files = [Path(item[key]) for item in ds.items for key in ("image", "label")]
    if not ds.is_3d or not all(p.name.endswith(".nii.gz") for p in files):
        raise InputError(ds.json_path, "training", "holds 2D or non-NIfTI files: the nnunet recipe converts NIfTI "
                         "volumes (.nii.gz images and labels) with nnU-Net's MSD converter; use --recipe bundle")
    for name in ("nnUNetv2_convert_MSD_dataset", "nnUNetv2_plan_and_preprocess", "nnUNetv2_train",
                 "nnUNetv2_predict"):
        try:
            nnunet_cli(name)
        except FileNotFoundError as err:
            raise InputError(source, "recipe", f"nnunet: {err}") from None
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with _environment({"nnUNet_extTrainer": nnunet_env()["nnUNet_extTrainer"]}):
        try:
            found = recursive_find_trainer_class_by_name(trainer)
        except RuntimeError:  # nnU-Net raises where it finds no such class
            found = None
    if found is None:
        known = ["nnUNetTrainer", *OUR_TRAINERS]
        raise InputError(source, "nnunet_trainer", f"nnU-Net finds no trainer {trainer!r}{nearest(trainer, known)} "
                         f"(this project's: {list(OUR_TRAINERS)}; nnU-Net's own, e.g. nnUNetTrainer)")


@dataclass(frozen=True)
class Workspace:
    """A study's nnU-Net folders and its one dataset (``Dataset001_<Name>``)."""

    root: Path
    dataset: str

    @property
    def preprocessed(self) -> Path:
        return self.root / "preprocessed" / self.dataset

    def env(self, seed: int = 0, device: str = "cpu") -> dict[str, str]:
        """The variables every nnU-Net command of the study runs with: the workspace's folders (results per
        repetition ``seed``), this package's trainers beside the user's own; the user's other nnU-Net settings
        (``nnUNet_compile``, ...) are kept."""
        env = {"nnUNet_raw": str(self.root / "raw"), "nnUNet_preprocessed": str(self.root / "preprocessed"),
               "nnUNet_results": str(self.root / "results" / f"seed{seed}"),
               "nnUNet_extTrainer": nnunet_env()["nnUNet_extTrainer"]}
        if device == "cpu":  # small machines: batches in the main process, one thread per job
            env.update(nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1", OMP_NUM_THREADS="1")
        return env


def _run(argv: list[str], env: dict[str, str], log: Path) -> None:
    """Run one nnU-Net command (found beside this Python) with its output in ``log``."""
    run_command([nnunet_cli(argv[0]), *argv[1:]], env, str(log))


def _link_task(task: Path, dev: MSDDataset, test: MSDDataset) -> None:
    """An MSD task folder of links: development cases to train on (each label under its image's name, as nnU-Net
    pairs them), test images to predict, and a ``dataset.json`` written from the parsed dataset (MSD's keys)."""
    if task.exists():
        shutil.rmtree(task)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    for item in dev.items:
        name = Path(item["image"]).name
        os.symlink(Path(item["image"]).resolve(), task / "imagesTr" / name)
        os.symlink(Path(item["label"]).resolve(), task / "labelsTr" / name)
    for item in test.items:
        os.symlink(Path(item["image"]).resolve(), task / "imagesTs" / Path(item["image"]).name)
    doc = {"name": dev.name, "tensorImageSize": "4D",
           "modality": {str(i): n for i, n in enumerate(dev.channel_names)},
           "labels": {str(k): v for k, v in sorted(dev.labels.items())},
           "numTraining": len(dev.items), "numTest": len(test.items),
           "training": [{"image": f"./imagesTr/{Path(i['image']).name}", "label": f"./labelsTr/{Path(i['image']).name}"}
                        for i in dev.items],
           "test": [f"./imagesTs/{Path(i['image']).name}" for i in test.items]}
    (task / "dataset.json").write_text(json.dumps(doc, indent=2))


def prepare(root: str | Path, dev: MSDDataset, test: MSDDataset, split_file: str | Path,
            configurations: Iterable[str], plans: Iterable[str]) -> Workspace:
    """Convert, plan and preprocess the study's data for nnU-Net and write its folds; each step done once
    (``prepared.json`` records the finished ones). Runs before the searches, so a dataset nnU-Net cannot take stops
    the study before any search. Returns the workspace."""
    from nnunet_plans.export import write_split

    root = Path(root)
    name = re.sub(r"[^A-Za-z0-9]", "", dev.name) or "Study"
    ws = Workspace(root, f"Dataset{DATASET_ID:03d}_{name}")
    marker = root / "prepared.json"
    done: dict[str, Any] = read_json(marker) if marker.is_file() else {}

    def step(key: str, action) -> None:
        if not done.get(key):
            action()
            done[key] = True
            write_json_atomic(marker, done)

    env = ws.env()

    def convert() -> None:
        shutil.rmtree(root / "raw" / ws.dataset, ignore_errors=True)  # a killed conversion starts over
        task = root / "msd" / f"Task{DATASET_ID:03d}_{name}"
        _link_task(task, dev, test)
        _run(["nnUNetv2_convert_MSD_dataset", "-i", str(task), "-np", "1"], env, root / "logs" / "convert.log")

    step("convert", convert)
    configurations = sorted(set(configurations))
    for i, plans_name in enumerate(sorted(set(plans), key=lambda p: PLANNERS[p] or "")):  # the default first
        planner = PLANNERS[plans_name]
        argv = ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", *configurations, "-npfp", "1",
                "-np", *["1"] * len(configurations)]
        argv += ["-pl", planner] if planner else []
        argv += ["--clean"] if i == 0 else []  # a fingerprint a killed run left half-written is not reused
        step(f"plan {plans_name} {' '.join(configurations)}",
             lambda argv=argv, p=plans_name: _run(argv, {**env, "nnUNet_n_proc_DA": "1"},
                                                  root / "logs" / f"plan_{p}.log"))
    write_split(split_file, ws.preprocessed)
    return ws


def export_genotypes(ws: Workspace, genotypes: dict[str, str]) -> None:
    """Export every genotype (``genotypes``: plans suffix -> genotype file) as a plans variant of the workspace's
    dataset, unless that variant already holds it."""
    from nnunet_plans.export import export_plans

    with _environment(ws.env()):
        for model, path in genotypes.items():
            genotype = Genotype.load(path)
            target = ws.preprocessed / f"nnUNetPlans_{model}.json"
            if target.is_file() and _exported_genotype(target) == genotype.to_dict():
                continue
            export_plans(path, ws.dataset, configuration_of(genotype.spatial_dims), name=model)


def _exported_genotype(plans_path: Path) -> dict[str, Any] | None:
    """The genotype a plans variant holds (None for another plans file)."""
    doc = read_json(plans_path)
    for config in doc.get("configurations", {}).values():
        kwargs = config.get("architecture", {}).get("arch_kwargs", {})
        if "genotype" in kwargs:
            return kwargs["genotype"]
    return None


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the ``with`` block (nnU-Net's folders for the in-process export)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fresh_run(run: Path, fold_dir: Path, identity: dict[str, Any]) -> None:
    """Make the run folder this job's: nnU-Net files left by a training of another identity (a genotype searched
    again under the same plans name, another trainer) are removed, never scored as this job's."""
    marker = run / JOB_FILE
    mine = marker.is_file() and read_json(marker) == json.loads(json.dumps(identity))
    if not mine:
        for stale in (fold_dir, run / "predictions", run / "predictions.partial", run / "eval"):
            shutil.rmtree(stale, ignore_errors=True)
        write_json_atomic(marker, identity)


def train_and_test(workspace: str, dataset: str, configuration: str, plans: str, trainer: str, fold: int, seed: int,
                   test_dir: str, run_dir: str, device: str = "cpu", fingerprints: dict[str, str] | None = None
                   ) -> dict[str, Any]:
    """Train ``plans`` with ``trainer`` on ``fold`` (repetition ``seed``), predict and score the test cases; returns
    the study's job result (the fields of :func:`nas_ops.study.jobs.train_and_test`)."""
    from nas_ops.training.evaluation import evaluate

    ws, run = Workspace(Path(workspace), dataset), Path(run_dir)
    plans_doc = read_json(ws.preprocessed / f"{plans}.json")
    config = plans_doc["configurations"][configuration]
    identity = {"recipe": "nnunet", "dataset": dataset, "configuration": config, "plans": plans, "trainer": trainer,
                "fold": fold, "seed": seed, "device": device, "data": fingerprints or {}}
    done = finished(run, identity)
    if done is not None:
        return done
    nn_device, device_env = nnunet_device(device)
    env = {**ws.env(seed, nn_device), **device_env}
    fold_dir = (ws.root / "results" / f"seed{seed}" / dataset / f"{trainer}__{plans}__{configuration}"
                / f"fold_{fold}")
    _fresh_run(run, fold_dir, identity)
    tic = time.perf_counter()
    summary = fold_dir / "validation" / "summary.json"
    if not ((fold_dir / "checkpoint_final.pth").is_file() and summary.is_file()):
        _run(["nnUNetv2_train", str(DATASET_ID), configuration, str(fold), "-p", plans, "-tr", trainer,
              "-device", nn_device, "--c"], env, run / "train.log")
    trained = time.perf_counter()
    predictions = run / "predictions"
    partial = run / "predictions.partial"
    if not predictions.is_dir():
        shutil.rmtree(partial, ignore_errors=True)
        _run(["nnUNetv2_predict", "-i", str(ws.root / "raw" / dataset / "imagesTs"), "-o", str(partial),
              "-d", str(DATASET_ID), "-c", configuration, "-p", plans, "-tr", trainer, "-f", str(fold),
              "-device", nn_device, "-npp", "1", "-nps", "1", "--disable_progress_bar"], env, run / "predict.log")
        for extra in ("dataset.json", "plans.json", "predict_from_raw_data_args.json"):
            (partial / extra).unlink(missing_ok=True)
        partial.rename(predictions)
    metrics = evaluate(prediction_dir=predictions, dataset_dir=test_dir, output_dir=run / "eval")

    dataset_json = read_json(ws.preprocessed / "dataset.json")
    in_channels = len(dataset_json["channel_names"])
    out_channels = len(dataset_json["labels"])
    patch, batch = list(config["patch_size"]), int(config["batch_size"])
    arch = config["architecture"]["arch_kwargs"]
    divisor = strides_divisor(arch["strides"]) if "strides" in arch else tuple(patch)
    net = build_planned_network(config, in_channels, out_channels)
    cost = network_cost(net, in_channels, patch, divisor)
    input_shape = [in_channels, *patch]
    if "genotype" in arch:  # a searched network probes its features when built: size its own network instead
        genotype = Genotype.from_dict(arch["genotype"])
        memory = estimate_training_memory(lambda: build_network(genotype), input_shape, batch)
    else:
        memory = estimate_training_memory(lambda: build_planned_network(config, in_channels, out_channels),
                                          input_shape, batch)
    step_seconds = time_training_step(net.to(resolve_device(device)), input_shape, batch)
    epochs = [float(t) for t in _EPOCH_TIME.findall(_training_log(fold_dir))]
    val = read_summary(summary)
    val_means = [v for case in val.values() for v in case.values() if v == v]
    result = {
        "classes": metrics["classes"], "per_case": metrics["per_case"], "params": cost.params, "macs": cost.macs,
        "input_shape": input_shape, "epochs": len(epochs), "step_seconds": step_seconds,
        "epoch_seconds": sum(epochs) / len(epochs) if epochs else float("nan"),
        "train_seconds": round(trained - tic, 1), "job_seconds": round(time.perf_counter() - tic, 1),
        "memory_bytes": memory.total_bytes,
        "final_val_dice": sum(val_means) / len(val_means) if val_means else None,
        "batch_size": batch, "trainer": trainer, "plans": plans, "configuration": configuration,
    }
    write_json_atomic(run / RESULT_FILE, {"identity": identity, "result": result})
    return result


def _training_log(fold_dir: Path) -> str:
    """nnU-Net's training logs of a fold (every start of it), concatenated."""
    return "".join(p.read_text(errors="replace") for p in sorted(fold_dir.glob("training_log_*.txt")))
