"""The bundles as a MONAI user runs them (``python -m monai.bundle ...`` in a subprocess): MONAI's own
verify_net_in_out on every network_def, search -> train -> inference -> evaluate on one output folder with nothing
overwritten and no geometry key repeated, and bad input refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas_ops.data import make_mri_dataset, make_nuclei_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ("bixnas", "mbnas", "c2fnas")
SHIPPED = {"bixnas": "bundles/bixnas/genotypes/bixnet_released.json", "mbnas": "bundles/mbnas/genotypes/unet.json",
           "c2fnas": "bundles/c2fnas/genotypes/c2fnas_panc.json"}


def bundle(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m monai.bundle ARGS`` from the project's root, one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MEDSEG_NAS_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-4000:]
    return done


def config(name: str, workflow: str) -> str:
    return f"bundles/{name}/configs/{workflow}.json"


@pytest.mark.parametrize("name", BUNDLES)
def test_every_network_def_passes_monai_verify_net_in_out(name):
    done = bundle("verify_net_in_out", "network_def", "--meta_file", config(name, "metadata"), "--config_file",
                  config(name, "train"), "--genotype_path", SHIPPED[name], "--fit_channels", "False",
                  "--device", "cpu")
    assert "data shape of network is verified with no error" in (done.stdout + done.stderr)


@pytest.mark.parametrize("name", BUNDLES)
def test_the_configs_of_a_bundle_share_their_defaults(name):
    """A workflow's defaults chain onto the others' (the same output_dir, dataset_dir, bundle_root, seed)."""
    docs = {w: json.loads((REPO_ROOT / config(name, w)).read_text()) for w in ("search", "train", "inference",
                                                                              "evaluate")}
    for key in ("bundle_root", "dataset_dir", "output_dir", "seed"):
        assert len({json.dumps(doc[key]) for doc in docs.values()}) == 1, key
    assert docs["train"]["genotype_path"] != docs["inference"]["model_dir"]


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    return make_nuclei_dataset(tmp_path_factory.mktemp("data") / "Task900_Tiny", num_images=8, size=64, seed=0)


TINY_BIXNAS = ["--n_folds", "4", "--device", "cpu", "--num_threads", "1", "--plots", "false",
               "--search#spatial_size", "[64,64]", "--search#width", "8", "--search#stem_width", "8",
               "--search#batch_size", "2", "--search#train_batches", "1", "--search#phase1_epochs", "1",
               "--search#phase2_epochs", "1", "--search#phase2_samples", "1"]


def test_search_then_train_keeps_the_searched_genotype_and_the_chain_reads_geometry_from_the_model(nuclei, tmp_path):
    out = tmp_path / "run"
    common = ["--dataset_dir", str(nuclei), "--output_dir", str(out)]
    bundle("run", "--config_file", config("bixnas", "search"), *common, *TINY_BIXNAS)
    searched = out / "search" / "genotype.json"
    before = searched.read_bytes()
    # the default train.json (the released BiX-Net) into the same output_dir
    bundle("run", "--config_file", config("bixnas", "train"), *common, "--n_folds", "4", "--device", "cpu",
           "--num_threads", "1", "--epochs", "1", "--batch_size", "2", "--spatial_size", "[64,64]")
    assert searched.read_bytes() == before
    models = out / "train" / "models"
    assert sorted(p.name for p in models.iterdir()) == ["genotype.json", "model.pt", "model_info.json"]
    assert json.loads((models / "genotype.json").read_text())["name"] == "bixnet_released"
    # inference and evaluation take the geometry from models/: no spatial_size given
    bundle("run", "--config_file", config("bixnas", "inference"), *common, "--n_folds", "4", "--device", "cpu")
    assert sorted(p.suffix for p in (out / "predictions").glob("[!.]*")) == [".png", ".png"]
    bundle("run", "--config_file", config("bixnas", "evaluate"), *common)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["num_cases"] == 2 and metrics["input_shape"] == [3, 64, 64] and metrics["genotype"] == \
        "bixnet_released"
    assert searched.read_bytes() == before
    # MONAI's verify_net_in_out on the trained model's inference config (network_def from models/genotype.json)
    bundle("verify_net_in_out", "network_def", "--meta_file", config("bixnas", "metadata"), "--config_file",
           config("bixnas", "inference"), "--output_dir", str(out), "--device", "cpu")


def test_mbnas_search_then_default_train_trains_the_searched_genotype(tmp_path):
    data = make_mri_dataset(tmp_path / "Task900_TinyMRI", num_patients=5, shape=(32, 32, 8), seed=0)
    out = tmp_path / "run"
    common = ["--dataset_dir", str(data), "--output_dir", str(out), "--device", "cpu", "--num_threads", "1"]
    bundle("run", "--config_file", config("mbnas", "search"), *common, "--plots", "false", "--search#budget", "1",
           "--search#folds", "[0]", "--search#seeds", "[0]", "--search#epochs", "1", "--search#batch_size", "8",
           "--search#spatial_size", "[32,32]", "--search#base_channels", "4", "--search#num_nodes", "4",
           "--search#max_depth", "2")
    searched = out / "search" / "genotype.json"
    before = searched.read_bytes()
    bundle("run", "--config_file", config("mbnas", "train"), *common, "--epochs", "1", "--batch_size", "8",
           "--spatial_size", "[32,32]")
    trained = json.loads((out / "train" / "models" / "genotype.json").read_text())
    assert trained["spec"] == json.loads(before)["spec"] and searched.read_bytes() == before
    bundle("run", "--config_file", config("mbnas", "inference"), *common)
    bundle("run", "--config_file", config("mbnas", "evaluate"), *common)
    assert json.loads((out / "eval" / "metrics.json").read_text())["input_shape"] == [1, 32, 32]


@pytest.mark.parametrize(("args", "message"), [
    (["--epohcs", "1"], "error: bundles/bixnas/configs/train.json: field 'epohcs': unknown key (did you mean "
                        "'epochs'?): no config of this bundle reads it"),
    (["--epochs", "0"], "error: bundles/bixnas/configs/train.json: field 'epochs': must be >= 1, got 0"),
    (["--batch_size", "abc"], "error: bundles/bixnas/configs/train.json: field 'batch_size': must be an integer, "
                              "got 'abc'"),
    (["--device", "tpu"], "error: bundles/bixnas/configs/train.json: field 'device': must be 'auto', 'cpu', 'cuda' "
                          "or 'cuda:<index>', got 'tpu'"),
    (["--spatial_size", "[100,100]"], "error: bundles/bixnas/configs/train.json: field 'spatial_size': every size "
                                      "must be divisible by 32, got [100, 100] (the network's total stride)"),
])
def test_bad_input_through_a_bundle_run_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    done = bundle("run", "--config_file", config("bixnas", "train"), "--output_dir", str(out), "--dataset_dir",
                  str(tmp_path), *args, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in done.stderr and not out.exists()


def test_c2fnas_search_then_train_inference_and_evaluate_in_3d(tmp_path):
    data = make_mri_dataset(tmp_path / "Task900_TinyMRI", num_patients=6, shape=(32, 32, 32), seed=0)
    out = tmp_path / "run"
    common = ["--dataset_dir", str(data), "--output_dir", str(out), "--device", "cpu", "--num_threads", "1",
              "--n_folds", "3"]
    bundle("run", "--config_file", config("c2fnas", "search"), *common, "--plots", "false",
           "--search#patch_size", "[32,32,32]", "--search#base_channels", "2", "--search#stem_channels", "2",
           "--search#batch_size", "2", "--search#coarse_groups", "2", "--search#coarse_epochs", "1",
           "--search#coarse_scored", "2", "--search#fine_epochs", "1", "--search#population", "2",
           "--search#generations", "1")
    searched = out / "search" / "genotype.json"
    before = searched.read_bytes()
    bundle("run", "--config_file", config("c2fnas", "train"), *common, "--epochs", "1", "--patch_size", "[32,32,32]")
    trained = json.loads((out / "train" / "models" / "genotype.json").read_text())
    assert trained["spec"] == json.loads(before)["spec"] and searched.read_bytes() == before
    bundle("run", "--config_file", config("c2fnas", "inference"), *common)
    predicted = sorted(p.name for p in (out / "predictions").glob("[!.]*"))
    assert predicted == ["mri_002.nii.gz", "mri_003.nii.gz"]  # fold 0/3
    bundle("run", "--config_file", config("c2fnas", "evaluate"), "--dataset_dir", str(data), "--output_dir", str(out))
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["input_shape"] == [1, 32, 32, 32] and metrics["num_cases"] == 2
