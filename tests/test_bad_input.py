"""The bad-input corpus: each case runs a bundle config (as ``python -m monai.bundle run`` does, in this process) or
a CLI with one bad input, and checks the one line the user sees (``error: <file>: field '<field>': <problem>``,
exit status 1), that nothing was written, and that the finished run beside it is byte-identical afterwards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nas_ops.data import make_nuclei_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = "bundles/bixnas/configs/train.json"
SMALL = {"device": "cpu", "num_threads": 1, "n_folds": 4, "epochs": 1, "batch_size": 2, "spatial_size": [64, 64]}


def run_bundle(configs: str | list[str], **overrides) -> None:
    """What ``python -m monai.bundle run --config_file ... --key value`` runs, in this process, and what its user
    sees of bad input (the bundle run's error hook: one line, exit status 1)."""
    from monai.bundle.scripts import run

    from nas_ops.entry import command_line

    with command_line():
        run(config_file=configs if isinstance(configs, list) else [configs], **overrides)


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny nuclei dataset and a finished training of the released BiX-Net on it (the earlier result)."""
    root = tmp_path_factory.mktemp("world")
    data = make_nuclei_dataset(root / "Task900_Tiny", num_images=8, size=64, seed=0)
    mp = pytest.MonkeyPatch()
    mp.chdir(REPO_ROOT)
    run_bundle(TRAIN, dataset_dir=str(data), output_dir=str(root / "done"), **SMALL)
    mp.undo()
    return {"root": root, "data": data, "done": root / "done"}


@pytest.fixture
def user(world, tmp_path, monkeypatch):
    """Runs one bad command; returns the line the user sees and checks that nothing changed or appeared."""
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.delenv("MEDSEG_NAS_DEBUG", raising=False)
    before = listing(world["done"])
    out = tmp_path / "new"

    def refused(fn, *args, **kwargs) -> str:
        with pytest.raises(SystemExit) as exit_info:
            fn(*args, **kwargs)
        code = exit_info.value.code
        assert isinstance(code, str) and code.startswith("error: ") and "\n" not in code  # status 1, one line
        assert listing(world["done"]) == before
        assert not out.exists()
        return code

    return refused, out


def bad_json(path: Path, text: bytes) -> Path:
    path.write_bytes(text)
    return path


def test_a_finished_training_was_written(world):
    assert sorted(listing(world["done"] / "train" / "models")) == ["genotype.json", "model.pt", "model_info.json"]


# -- train.json: keys, types, ranges, devices -------------------------------------------------------------

KEY_CASES = [
    ({"epohcs": 1}, "error: bundles/bixnas/configs/train.json: field 'epohcs': unknown key (did you mean 'epochs'?): "
                    "no config of this bundle reads it"),
    ({"batchsize": 4}, "error: bundles/bixnas/configs/train.json: field 'batchsize': unknown key (did you mean "
                       "'batch_size'?): no config of this bundle reads it"),
    ({"epochs": 0}, "error: bundles/bixnas/configs/train.json: field 'epochs': must be >= 1, got 0"),
    ({"epochs": -1}, "error: bundles/bixnas/configs/train.json: field 'epochs': must be >= 1, got -1"),
    ({"epochs": 2.5}, "error: bundles/bixnas/configs/train.json: field 'epochs': must be an integer, got 2.5"),
    ({"batch_size": "abc"}, "error: bundles/bixnas/configs/train.json: field 'batch_size': must be an integer, got "
                            "'abc'"),
    ({"batch_size": 0}, "error: bundles/bixnas/configs/train.json: field 'batch_size': must be >= 1, got 0"),
    ({"val_interval": 0}, "error: bundles/bixnas/configs/train.json: field 'val_interval': must be >= 1, got 0"),
    ({"spatial_size": [64]}, "error: bundles/bixnas/configs/train.json: field 'spatial_size': must have 2 entries, "
                             "got [64]"),
    ({"spatial_size": [100, 100]}, "error: bundles/bixnas/configs/train.json: field 'spatial_size': every size must "
                                   "be divisible by 32, got [100, 100] (the network's total stride)"),
    ({"slice_axis": 3}, "error: bundles/bixnas/configs/train.json: field 'slice_axis': must be one of 0, 1, 2, got 3"),
    ({"keep_empty_fraction": 2.0}, "error: bundles/bixnas/configs/train.json: field 'keep_empty_fraction': must be "
                                   "<= 1, got 2.0"),
    ({"seed": -1}, "error: bundles/bixnas/configs/train.json: field 'seed': must be >= 0, got -1"),
    ({"num_threads": 0}, "error: bundles/bixnas/configs/train.json: field 'num_threads': must be >= 1, got 0"),
    ({"device": "tpu"}, "error: bundles/bixnas/configs/train.json: field 'device': must be 'auto', 'cpu', 'cuda' or "
                        "'cuda:<index>', got 'tpu'"),
    ({"optimizer#lrr": 0.1}, "error: bundles/bixnas/configs/train.json: field 'optimizer#lrr': unknown argument of "
                             "torch.optim.Adam (did you mean 'lr'?)"),
    ({"trainer#epoch": 5}, "error: bundles/bixnas/configs/train.json: field 'trainer#epoch': unknown argument of "
                           "nas_ops.training.trainer.train (did you mean 'epochs'?)"),
    ({"phase": "all"}, "error: bundles/bixnas/configs/train.json: field 'phase': unknown key: search.json reads it, "
                       "not train.json"),
    ({"fold": 4}, "error: bundles/bixnas/configs/train.json: field 'fold': must be < n_folds = 4, got 4"),
    ({"fit_channels": "maybe"}, "error: bundles/bixnas/configs/train.json: field 'fit_channels': must be true or "
                                "false, got 'maybe'"),
]


@pytest.mark.parametrize(("change", "line"), KEY_CASES, ids=[next(iter(c)) + str(i) for i, (c, _) in
                                                               enumerate(KEY_CASES)])
def test_train_config_values_are_checked_before_anything_is_written(user, world, change, line):
    refused, out = user
    assert refused(run_bundle, TRAIN, dataset_dir=str(world["data"]), output_dir=str(out),
                   **{**SMALL, **change}) == line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_cuda_device_on_a_machine_without_one_is_refused(user, world):
    refused, out = user
    assert refused(run_bundle, TRAIN, dataset_dir=str(world["data"]), output_dir=str(out),
                   **{**SMALL, "device": "cuda"}) == ("error: bundles/bixnas/configs/train.json: field 'device': is "
                                                      "'cuda' but this machine has no CUDA GPU: use 'cpu' or 'auto'")


# -- genotypes ------------------------------------------------------------------------------------------------


def test_bad_genotype_files_are_refused_naming_file_and_field(user, world, tmp_path):
    refused, out = user
    released = json.loads((REPO_ROOT / "bundles/bixnas/genotypes/bixnet_released.json").read_text())
    cases = {
        "missing.json": (None, "field '<file>': no such file"),
        "latin1.json": (b'{"name": "caf\xe9"}', "field '<root>': not UTF-8 text (byte 13): a genotype is a JSON file"),
        "deep.json": (b"[" * 100_000 + b"]" * 100_000, "field '<root>': nested too deeply to be a genotype"),
        "truncated.json": (b'{"format": "medseg-nas-genotype", ', "field '<root>': not valid JSON"),
        "method.json": ({**released, "method": "bixnett"}, "field 'method': unknown method 'bixnett'"),
        "stages.json": ({**released, "spec": {**released["spec"], "skip_sets": [[[0]]]}}, "field 'spec.skip_sets'"),
        "channels.json": ({**released, "in_channels": 1}, "field 'in_channels': is 1 but"),
    }
    for name, (content, words) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            bad_json(path, content)
        elif content is not None:
            path.write_text(json.dumps(content))
        line = refused(run_bundle, TRAIN, dataset_dir=str(world["data"]), output_dir=str(out),
                       genotype_path=str(path), **SMALL)
        assert line.startswith(f"error: {path}: {words}"), (name, line)


def test_a_genotype_too_large_for_the_machine_is_refused_before_it_is_built(user, world, tmp_path):
    refused, out = user
    unet = json.loads((REPO_ROOT / "bundles/bixnas/genotypes/unet.json").read_text())
    path = tmp_path / "k99.json"
    path.write_text(json.dumps({**unet, "spec": {**unet["spec"], "kernel_size": 99}}))
    line = refused(run_bundle, TRAIN, dataset_dir=str(world["data"]), output_dir=str(out), genotype_path=str(path),
                   **SMALL)
    assert line.startswith(f"error: {path}: field 'spec': the network has 7,689,391,234 parameters, more than "
                           "max_params = 500,000,000: lower the widths or kernel sizes of the spec")
    line = refused(run_bundle, TRAIN, dataset_dir=str(world["data"]), output_dir=str(out),
                   **{**SMALL, "batch_size": 64, "spatial_size": [512, 512], "memory_limit_gb": 1.0})
    assert line.startswith("error: bundles/bixnas/configs/train.json: field 'batch_size': training needs about ")
    assert "more than the limit of 1.0 GiB: lower batch_size (at most " in line


# -- datasets -------------------------------------------------------------------------------------------------


def test_bad_datasets_are_refused_naming_file_and_field(user, world, tmp_path):
    refused, out = user
    assert refused(run_bundle, TRAIN, dataset_dir=str(tmp_path / "nowhere"), output_dir=str(out), **SMALL) == \
        f"error: {tmp_path / 'nowhere'}: field 'dataset_dir': no such folder"
    copies = {}
    for name in ("latin1", "nolabels", "lostfile", "badlabel"):
        copies[name] = shutil.copytree(world["data"], tmp_path / name)
    doc = json.loads((world["data"] / "dataset.json").read_text())
    bad_json(copies["latin1"] / "dataset.json", b'{"name": "caf\xe9"}')
    (copies["nolabels"] / "dataset.json").write_text(json.dumps({k: v for k, v in doc.items() if k != "labels"}))
    (copies["lostfile"] / "labelsTr" / "nuclei_003.png").unlink()
    (copies["badlabel"] / "dataset.json").write_text(json.dumps({**doc, "labels": {"0": "background"}}))
    expect = {
        "latin1": "field '<file>': not UTF-8 text (byte 13): dataset.json is a JSON file",
        "nolabels": "field 'labels': missing key",
        "lostfile": "field 'training[3].label': file does not exist",
        "badlabel": "field 'labels': needs at least one foreground class besides 0",
    }
    for name, words in expect.items():
        line = refused(run_bundle, TRAIN, dataset_dir=str(copies[name]), output_dir=str(out), **SMALL)
        assert line.startswith(f"error: {copies[name] / 'dataset.json'}: {words}"), (name, line)


def test_case_paths_that_leave_the_dataset_folder_are_refused_unless_allowed(user, world, tmp_path):
    refused, out = user
    doc = json.loads((world["data"] / "dataset.json").read_text())
    outside = shutil.copytree(world["data"], tmp_path / "elsewhere")  # the same cases, outside the dataset folder
    for name, path in (("dotdot", "../elsewhere/imagesTr/nuclei_001.png"),
                       ("absolute", str(outside / "imagesTr" / "nuclei_001.png"))):
        copy = shutil.copytree(world["data"], tmp_path / name)
        training = [dict(e) for e in doc["training"]]
        training[1]["image"] = path
        (copy / "dataset.json").write_text(json.dumps({**doc, "training": training}))
        line = refused(run_bundle, TRAIN, dataset_dir=str(copy), output_dir=str(out), **SMALL)
        assert line == (f"error: {copy / 'dataset.json'}: field 'training[1].image': path {path!r} leaves the dataset "
                        f"folder {copy}: move the case inside it, or set allow_outside_dataset_dir true"), name
    # the key allows it explicitly: the same dataset then trains
    run_bundle(TRAIN, dataset_dir=str(tmp_path / "dotdot"), output_dir=str(out), allow_outside_dataset_dir=True,
               **SMALL)
    assert (out / "train" / "models" / "model.pt").is_file()
    shutil.rmtree(out)

# -- the finished run: identity, checksums, a file in the way --------------------------------------------------


def test_a_finished_run_is_not_reused_for_another_dataset_or_setting(user, world, tmp_path):
    refused, _ = user
    other = make_nuclei_dataset(tmp_path / "Task900_Other", num_images=8, size=64, seed=1)
    state = world["done"] / "train" / "train_state.pt"
    line = refused(run_bundle, TRAIN, dataset_dir=str(other), output_dir=str(world["done"]), **SMALL)
    assert line.startswith(f"error: {state}: field 'dataset.fingerprint': this output_dir holds a training run with")
    line = refused(run_bundle, TRAIN, dataset_dir=str(world["data"]), output_dir=str(world["done"]),
                   **{**SMALL, "epochs": 2})
    assert line.startswith(f"error: {state}: field 'epochs': this output_dir holds a training run with epochs=1, "
                           "now 2")
    line = refused(run_bundle, TRAIN, dataset_dir=str(world["data"]), output_dir=str(world["done"]),
                   **{**SMALL, "lr": 0.01})
    assert line.startswith(f"error: {state}: field 'optimizer.defaults.lr': this output_dir holds a training run")


def test_an_output_dir_that_is_a_file_is_refused(user, world, tmp_path):
    refused, _ = user
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = refused(run_bundle, TRAIN, dataset_dir=str(world["data"]), output_dir=str(blocker), **SMALL)
    assert line == (f"error: bundles/bixnas/configs/train.json: field 'output_dir': {blocker / 'train'} cannot be a "
                    f"folder: {blocker} is a file")


def test_a_corrupted_or_truncated_file_of_a_run_is_refused_naming_it(user, world, tmp_path):
    refused, _ = user
    copy = shutil.copytree(world["done"], tmp_path / "copy")
    model = copy / "train" / "models" / "model.pt"
    data = bytearray(model.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 4096):
        data[i] ^= 0xFF
    model.write_bytes(bytes(data))
    inference = "bundles/bixnas/configs/inference.json"
    line = refused(run_bundle, inference, dataset_dir=str(world["data"]), output_dir=str(copy), device="cpu",
                   n_folds=4)
    assert line.startswith(f"error: {model}: field 'sha256.model.pt': the file changed since it was written")
    assert not (copy / "predictions").exists()
    empty = tmp_path / "empty"
    line = refused(run_bundle, inference, dataset_dir=str(world["data"]), output_dir=str(empty), device="cpu")
    assert line.startswith(f"error: {empty / 'train' / 'models' / 'model_info.json'}: field 'model_dir': no trained "
                           "model here")
    # an unfinished training whose checkpoint was cut short
    part = tmp_path / "part"
    (part / "train").mkdir(parents=True)
    state = part / "train" / "train_state.pt"
    state.write_bytes((world["done"] / "train" / "train_state.pt").read_bytes()[:5000])
    line = refused(run_bundle, TRAIN, dataset_dir=str(world["data"]), output_dir=str(part), **SMALL)
    assert line.startswith(f"error: {state}: field '<root>': not a readable checkpoint")
    assert "truncated or corrupted" in line


def test_an_edited_model_info_or_weights_that_are_not_a_state_dict_are_refused(user, world, tmp_path):
    from nas_ops.training.artifacts import info_sha256, sha256_file

    refused, _ = user
    inference = "bundles/bixnas/configs/inference.json"
    copy = shutil.copytree(world["done"], tmp_path / "copy")
    info_path = copy / "train" / "models" / "model_info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "geometry": {**info["geometry"], "spatial_size": [96, 96]}}))
    line = refused(run_bundle, inference, dataset_dir=str(world["data"]), output_dir=str(copy), device="cpu",
                   n_folds=4)
    assert line.startswith(f"error: {info_path}: field 'info_sha256': the file changed since it was written")
    # a whole pickled module where the weights belong, its checksums rewritten to match: one line, no traceback
    model = copy / "train" / "models" / "model.pt"
    for payload, found in ((torch.nn.Linear(2, 2), "not a plain state dict of tensors (UnpicklingError"),
                           ({"weight": [1.0, 2.0]}, "holds a dict, not a state dict of tensors")):
        torch.save(payload, model)
        forged = {**info, "sha256": {**info["sha256"], "model.pt": sha256_file(model)}}
        info_path.write_text(json.dumps({**forged, "info_sha256": info_sha256(forged)}))
        line = refused(run_bundle, inference, dataset_dir=str(world["data"]), output_dir=str(copy), device="cpu",
                       n_folds=4)
        assert line.startswith(f"error: {model}: field 'model.pt': {found}"), line
    assert not (copy / "predictions").exists()


# -- inference and evaluation ----------------------------------------------------------------------------------


def test_inference_and_evaluation_values_are_checked(user, world, tmp_path):
    refused, out = user
    inference, evaluate = "bundles/bixnas/configs/inference.json", "bundles/bixnas/configs/evaluate.json"
    line = refused(run_bundle, inference, dataset_dir=str(world["data"]), output_dir=str(world["done"]),
                   cases="everything", device="cpu")
    assert line == "error: bundles/bixnas/configs/inference.json: field 'cases': must be one of 'validation', " \
                   "'training', 'all', got 'everything'"
    line = refused(run_bundle, evaluate, dataset_dir=str(world["data"]), output_dir=str(out))
    assert line == f"error: {out / 'predictions'}: field 'predictions': no predictions to evaluate (run " \
                   "inference.json first)"
    line = refused(run_bundle, evaluate, dataset_dir=str(world["data"]), output_dir=str(world["done"]),
                   tolerance_mm=-1.0)
    assert line == "error: bundles/bixnas/configs/evaluate.json: field 'tolerance_mm': must be a positive number, " \
                   "got -1.0"


def test_predictions_of_another_dataset_never_join_a_finished_runs_folder(user, world, tmp_path):
    refused, _ = user
    inference, evaluate = "bundles/bixnas/configs/inference.json", "bundles/bixnas/configs/evaluate.json"
    copy = shutil.copytree(world["done"], tmp_path / "copy")
    run_bundle(inference, dataset_dir=str(world["data"]), output_dir=str(copy), device="cpu", n_folds=4)
    predictions = listing(copy / "predictions")
    marker = copy / "predictions" / ".prediction_run.json"
    other = make_nuclei_dataset(tmp_path / "Task900_Other", num_images=8, size=64, seed=1)
    line = refused(run_bundle, inference, dataset_dir=str(other), output_dir=str(copy), device="cpu", n_folds=4)
    assert line.startswith(f"error: {marker}: field 'dataset.fingerprint': this output_dir holds a prediction run")
    line = refused(run_bundle, inference, dataset_dir=str(world["data"]), output_dir=str(copy), device="cpu",
                   n_folds=4, cases="all")
    assert line.startswith(f"error: {marker}: field 'cases': this output_dir holds a prediction run with "
                           "cases='validation', now 'all'")
    line = refused(run_bundle, evaluate, dataset_dir=str(other), output_dir=str(copy))
    assert line.startswith(f"error: {marker}: field 'dataset.fingerprint': these predictions are of another dataset")
    assert listing(copy / "predictions") == predictions and not (copy / "eval").exists()
    run_bundle(evaluate, dataset_dir=str(world["data"]), output_dir=str(copy))  # its own dataset: scored
    assert (copy / "eval" / "metrics.json").is_file()


# -- searches ------------------------------------------------------------------------------------------------


def test_search_blocks_and_run_keys_are_checked(user, world, tmp_path):
    refused, out = user
    bix, mb = "bundles/bixnas/configs/search.json", "bundles/mbnas/configs/search.json"
    common = {"dataset_dir": str(world["data"]), "output_dir": str(out), "device": "cpu"}
    cases = [
        (bix, {"search#phase1_epohcs": 1}, "error: bundles/bixnas/configs/search.json: field 'search#phase1_epohcs': "
                                           "unknown key (did you mean 'phase1_epochs'?)"),
        (bix, {"search#spatial_size": [100, 100]}, "error: bundles/bixnas/configs/search.json: field "
                                                   "'search#spatial_size': every size must be divisible by 32"),
        (bix, {"search#phase2_init": "warm"}, "error: bundles/bixnas/configs/search.json: field 'search#phase2_init': "
                                              "must be one of 'fresh', 'phase1', 'continue', got 'warm'"),
        (bix, {"phase": "phase3"}, "error: bundles/bixnas/configs/search.json: field 'phase': must be one of"),
        (bix, {"fold": 5}, "error: bundles/bixnas/configs/search.json: field 'fold': must be < n_folds = 5, got 5"),
        (mb, {"backend": "slurm"}, "error: bundles/mbnas/configs/search.json: field 'backend': must be one of 'local', "
                                   "'ray', 'subprocess', got 'slurm'"),
        (mb, {"parallel_jobs": 0}, "error: bundles/mbnas/configs/search.json: field 'parallel_jobs': must be >= 1"),
        (mb, {"search#folds": [9]}, "error: bundles/mbnas/configs/search.json: field 'search#folds[0]': must lie in "
                                    "[0, 4], got 9"),
        (mb, {"search#spatial_size": [48, 48]}, "error: bundles/mbnas/configs/search.json: field "
                                                "'search#spatial_size[0]': 48 is not divisible by 2**max_depth = 32"),
        (mb, {"search#seeds": []}, "error: bundles/mbnas/configs/search.json: field 'search#seeds': needs at least "
                                   "one training seed"),
        (mb, {"search#evaluate_fn": "nas_ops.nowhere.train"}, "error: bundles/mbnas/configs/search.json: field "
                                                              "'search#evaluate_fn': 'nas_ops.nowhere.train' names no"),
        (mb, {"fold": 1}, "error: bundles/mbnas/configs/search.json: field 'fold': unknown key (did you mean "
                          "'n_folds'?): inference.json and train.json read it, not search.json"),
        (mb, {"search": 5}, "error: bundles/mbnas/configs/search.json: field 'search': must be an object of "
                            "settings, got 5"),
        (bix, {"memory_limit_gb": 0.01}, "error: bundles/bixnas/configs/search.json: field 'search#batch_size': "
                                         "the supernet's training needs about "),
        (mb, {"memory_limit_gb": 0.001}, "error: bundles/mbnas/configs/search.json: field 'search#batch_size': "
                                         "training needs about "),
        (mb, {"memory_limit_gb": -1}, "error: bundles/mbnas/configs/search.json: field 'memory_limit_gb': must be "),
        (bix, {"searcher#phase1_epochs": 3}, "error: bundles/bixnas/configs/search.json: field 'phase1_epochs': "
                                             "unknown argument of the search: its settings go in the search block"),
    ]
    for config, change, start in cases:
        line = refused(run_bundle, config, **{**common, **change})
        assert line.startswith(start), (change, line)


# -- a CLI -----------------------------------------------------------------------------------------------------


def test_the_nnunet_export_cli_refuses_in_one_line(user, tmp_path, monkeypatch):
    import importlib.util

    refused, _ = user
    spec = importlib.util.spec_from_file_location("nnunet_export", REPO_ROOT / "scripts" / "nnunet_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from nas_ops.entry import cli

    missing = tmp_path / "missing.json"
    assert refused(cli(module.main), str(missing), "990") == f"error: {missing}: field '<file>': no such file"


# -- faults of the machine: one line each, nothing lost ----------------------------------------------------------


def test_a_read_only_output_folder_is_refused_before_any_work(user, world, tmp_path, monkeypatch):
    import os

    refused, _ = user
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # the tests run as root here, whom permission bits do not stop: the check asks os.access, so ask it as a user
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    line = refused(run_bundle, TRAIN, dataset_dir=str(world["data"]), output_dir=str(locked / "run"), **SMALL)
    assert line == (f"error: bundles/bixnas/configs/train.json: field 'output_dir': {locked / 'run' / 'train'} cannot "
                    f"be written: {locked} is read-only or not yours to write (pass another output_dir)")
    assert list(locked.iterdir()) == []


def test_ctrl_c_and_a_full_disk_say_one_line(capsys, monkeypatch):
    import errno
    import sys

    from nas_ops.entry import INTERRUPTED, command_line, install_error_hook

    monkeypatch.delenv("MEDSEG_NAS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stopped, command_line():
        raise KeyboardInterrupt
    assert stopped.value.code == 130 and capsys.readouterr().err == INTERRUPTED + "\n"
    assert "run the same command again to resume" in INTERRUPTED
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/train/train_state.pt")
    with pytest.raises(SystemExit) as stopped, command_line():
        try:
            raise full
        except OSError as err:
            raise RuntimeError("while saving a checkpoint") from err
    assert stopped.value.code == ("error: /runs/x/train/train_state.pt: No space left on device: free space and run "
                                  "the same command again (finished work is kept)")
    with pytest.raises(ZeroDivisionError), command_line():  # a fault of the code keeps its traceback
        raise ZeroDivisionError
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    install_error_hook()  # what a bundle run (python -m monai.bundle run) shows for an uncaught Ctrl-C
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert capsys.readouterr().err == INTERRUPTED + "\n"
