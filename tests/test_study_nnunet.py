"""The study's nnunet recipe end to end on a tiny MRI task: the genotypes and nnU-Net's own network trained by the
stock ``nnUNetv2_train`` on the study's folds, the test cases predicted by ``nnUNetv2_predict`` and scored, the
table written, and a second run reusing every finished training."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nas_ops.data import make_mri_dataset, make_nuclei_dataset
from nas_ops.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_SEARCH = {"search#budget": 1, "search#epochs": 1, "search#seeds": [0], "search#batch_size": 4,
               "search#spatial_size": [32, 32], "search#base_channels": 4}


def test_the_nnunet_recipe_trains_every_model_with_nnunet_and_resumes(tmp_path, monkeypatch):
    from nas_ops.study.run import study

    monkeypatch.chdir(REPO_ROOT)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # the study keeps its own workspace
        monkeypatch.delenv(var, raising=False)
    data = make_mri_dataset(tmp_path / "Task900_Mri", num_patients=12, shape=(32, 32, 8), seed=0)
    out = tmp_path / "study"
    kwargs = dict(methods=["mbnas"], baselines=["nnunet"], random=1, seeds=1, folds=1, n_folds=2,
                  recipe="nnunet", nnunet_trainer="nnUNetTrainerNAS_AdamW_smoke", test_fraction=0.5,
                  search_overrides=TINY_SEARCH, command="pytest nnunet study")
    summary = study(data, out, **kwargs)
    split = json.loads((out / "split.json").read_text())
    ws = out / "nnunet"
    dataset = ws / "preprocessed" / "Dataset001_DemoMRI"
    # nnU-Net validates on the study's folds, and never sees a test case while training
    assert json.loads((dataset / "splits_final.json").read_text()) == split["folds"]
    raw = ws / "raw" / "Dataset001_DemoMRI"
    dev_cases = sorted(c for fold in split["folds"] for c in fold["val"])
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == [f"{c}_0000.nii.gz" for c in dev_cases]
    assert sorted(p.name for p in (raw / "imagesTs").iterdir()) == [f"{c}_0000.nii.gz" for c in sorted(split["test"])]
    for plans in ("nnUNetPlans_mbnas-mbnas-found", "nnUNetPlans_mbnas-mbnas-random_00", "nnUNetPlans"):
        assert (ws / "results" / "seed0" / "Dataset001_DemoMRI" / f"nnUNetTrainerNAS_AdamW_smoke__{plans}__2d"
                / "fold_0" / "checkpoint_final.pth").is_file(), plans
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["model"] for r in rows} == {"mbnas-found", "mbnas-random_00", "nnunet"}
    assert len(rows) == 3 * len(split["test"]) * 2 and {r["case"] for r in rows} == set(split["test"])
    assert all(int(r["params"]) > 0 and int(r["macs"]) > 0 for r in rows)
    tests = {t["name"] for t in summary["methods"]["mbnas"]["tests"]}
    assert "Wilcoxon mbnas-found vs nnunet" in tests
    assert "nnUNetv2_train" in (out / "report.md").read_text()
    # the same command again trains nothing
    results = sorted((out / "runs").rglob("study_result.json"))
    before = {p: p.stat().st_mtime_ns for p in results}
    study(data, out, **kwargs)
    assert {p: p.stat().st_mtime_ns for p in results} == before


def test_the_nnunet_recipe_refuses_what_it_cannot_train(tmp_path, monkeypatch):
    from nas_ops.study.run import study

    monkeypatch.chdir(REPO_ROOT)
    nuclei = make_nuclei_dataset(tmp_path / "Task900_Nuclei", num_images=12, size=32)
    with pytest.raises(InputError, match="the nnunet recipe converts NIfTI volumes"):
        study(nuclei, tmp_path / "a", methods=["bixnas"], recipe="nnunet")
    mri = make_mri_dataset(tmp_path / "Task901_Mri", num_patients=10, shape=(16, 16, 8))
    with pytest.raises(InputError, match="field 'train_overrides': set keys of the bundles' train.json"):
        study(mri, tmp_path / "b", methods=["mbnas"], recipe="nnunet", train_overrides={"epochs": 1})
    with pytest.raises(InputError, match="field 'baselines\\[0\\]': no bundle .* baseline 'nnunet'"):
        study(mri, tmp_path / "c", methods=["mbnas"], baselines=["nnunet"])  # only the nnunet recipe has it
    typo = "nnUNetTrainerNAS_AdamW_dmeo"
    with pytest.raises(InputError, match=rf"field 'nnunet_trainer': nnU-Net finds no trainer '{typo}' "
                                         r"\(did you mean 'nnUNetTrainerNAS_AdamW_demo'\?\)"):
        study(mri, tmp_path / "d", methods=["mbnas"], recipe="nnunet", nnunet_trainer=typo)
    with pytest.raises(InputError, match="field 'nnunet_trainer': applies to --recipe nnunet only"):
        study(mri, tmp_path / "e", methods=["mbnas"], nnunet_trainer="nnUNetTrainer")
    assert not any((tmp_path / d).exists() for d in "abcde")


def test_nnunet_is_given_the_device_it_accepts():
    from nnunet_plans.study import nnunet_device

    assert nnunet_device("cpu") == ("cpu", {}) and nnunet_device("auto") == ("cpu", {})  # no GPU on this machine
    with pytest.raises(InputError, match="field 'device'"):
        nnunet_device("cuda:1")  # refused here; on a GPU machine: ("cuda", {"CUDA_VISIBLE_DEVICES": "1"})


def test_a_run_folder_left_by_another_training_is_cleared_before_nnunet_trains(tmp_path):
    from nnunet_plans.study import JOB_FILE, _fresh_run

    run, fold_dir = tmp_path / "run", tmp_path / "results" / "fold_0"
    for folder in (run / "predictions", run / "eval", fold_dir):
        folder.mkdir(parents=True)
        (folder / "old.txt").write_text("another genotype's")
    _fresh_run(run, fold_dir, {"plans": "p", "genotype": 1})
    assert not fold_dir.exists() and not (run / "predictions").exists() and not (run / "eval").exists()
    assert json.loads((run / JOB_FILE).read_text()) == {"plans": "p", "genotype": 1}
    fold_dir.mkdir(parents=True)
    (fold_dir / "checkpoint_latest.pth").write_text("this job's, killed midway")
    _fresh_run(run, fold_dir, {"plans": "p", "genotype": 1})  # the same job again: nnU-Net continues it
    assert (fold_dir / "checkpoint_latest.pth").is_file()
    _fresh_run(run, fold_dir, {"plans": "p", "genotype": 2})
    assert not fold_dir.exists()


def test_random_architectures_of_the_nnunet_recipe_are_ones_nnunet_can_train(tmp_path):
    from nas_ops.data.setup import load_checked_dataset
    from nas_ops.search_run import draw_distinct, get_searcher
    from nnunet_plans.study import trainable

    ds = load_checked_dataset(make_mri_dataset(tmp_path / "Task900_Mri", num_patients=3, shape=(16, 16, 8)))
    searcher = get_searcher("mbnas")
    cfg = searcher.config_class.from_values({})
    free = draw_distinct(searcher, cfg, ds, 8, seed=9000)
    kept = draw_distinct(searcher, cfg, ds, 8, seed=9000, accept=trainable)
    assert not all(trainable(g) for g in free)  # this seed's plain draws hold a network of total stride 2
    assert all(trainable(g) for g in kept) and len({json.dumps(g.spec) for g in kept}) == 8
    assert [g.spec for g in free if trainable(g)] == [g.spec for g in kept][: sum(map(trainable, free))]
    with pytest.raises(InputError, match="gave 0 different architectures"):
        draw_distinct(searcher, cfg, ds, 2, seed=0, tries_per_member=5, accept=lambda g: False)

