"""The study: statistics equal scipy's (Holm included), random architectures are valid and different members of
each space, the split keeps every test case away from the searches and is the one nnU-Net gets, and a tiny study
writes its table, statistics and plots, then resumes reusing every finished training."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from nas_ops.data import make_mri_dataset, make_nuclei_dataset
from nas_ops.data.msd import case_id
from nas_ops.data.setup import load_checked_dataset
from nas_ops.data.splits import SPLIT_FILE, fold_items
from nas_ops.errors import DatasetError, InputError
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network
from nas_ops.search_run import draw_distinct, get_searcher
from nas_ops.study.split import draw_split, min_test_cases, write_views
from nas_ops.study.statistics import compare_family, friedman, holm, rank_among, wilcoxon

torch.set_num_threads(1)
REPO_ROOT = Path(__file__).resolve().parents[1]

# -- statistics ------------------------------------------------------------------------------------------------

TABLE = np.array([[0.81, 0.77, 0.90, 0.66, 0.72, 0.85, 0.79, 0.70],  # found
                  [0.78, 0.75, 0.86, 0.67, 0.70, 0.80, 0.74, 0.69],  # baseline a
                  [0.70, 0.71, 0.80, 0.60, 0.65, 0.79, 0.73, 0.61],  # baseline b
                  [0.80, 0.70, 0.88, 0.64, 0.73, 0.81, 0.77, 0.66]])  # random control


def test_the_statistics_equal_scipy_and_holm_by_hand():
    f = friedman(TABLE)
    ref = stats.friedmanchisquare(*TABLE)
    assert f.statistic == pytest.approx(ref.statistic) and f.p == pytest.approx(ref.pvalue) and f.n == 8
    w = wilcoxon(TABLE[0], TABLE[1], "found", "a")
    ref = stats.wilcoxon(TABLE[0], TABLE[1])
    assert w.statistic == pytest.approx(ref.statistic) and w.p == pytest.approx(ref.pvalue)
    assert w.mean_difference == pytest.approx(float((TABLE[0] - TABLE[1]).mean()))
    # Holm: sorted p (0.01, 0.03, 0.04, 0.2) x (4, 3, 2, 1), running maximum: 0.04, 0.09, 0.09, 0.2
    assert holm([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert holm([0.5, None, 0.01]) == [0.5, None, 0.02] and holm([0.6, 0.6]) == [1.0, 1.0]
    family = compare_family(TABLE[0], {"a": TABLE[1], "b": TABLE[2], "random": TABLE[3]}, "found")
    raw = [stats.wilcoxon(TABLE[0], TABLE[i]).pvalue for i in (1, 2, 3)]
    assert [t.p for t in family] == pytest.approx(raw)
    assert [t.p_holm for t in family] == pytest.approx(holm(raw))
    assert all(t.p_final == t.p_holm for t in family)
    assert family[1].significant and family[1].verdict() == "significant"  # better on all 8: exact p = 2/256 x 3
    nothing = wilcoxon(TABLE[0], TABLE[0], "found", "itself")
    assert nothing.p is None and nothing.verdict().startswith("no test") and not nothing.significant
    assert friedman(TABLE[:2]).p is None  # two models: see the Wilcoxon test
    rank = rank_among(0.75, [0.7, 0.8, 0.6, 0.75, float("nan")])
    assert (rank.rank, rank.of, rank.median, rank.beats_median) == (3, 5, 0.725, True)


# -- random architectures of each space ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("spaces")
    return {2: load_checked_dataset(make_nuclei_dataset(root / "n", num_images=4, size=32)),
            3: load_checked_dataset(make_mri_dataset(root / "m", num_patients=3, shape=(16, 16, 16)))}


@pytest.mark.parametrize("method", ["bixnas", "mbnas", "c2fnas", "dints"])
def test_random_architectures_are_valid_and_different_members_of_the_space(method, datasets):
    searcher = get_searcher(method)
    ds = datasets[3 if searcher.spatial_dims == 3 else 2]
    small = {"bixnas": {}, "mbnas": {"variant": "micro"}, "c2fnas": {"base_channels": 4, "stem_channels": 4},
             "dints": {"channel_mul": 0.25, "num_blocks": 4, "num_depths": 3, "patch_size": [32, 32, 32]}}[method]
    cfg = searcher.config_class.from_values(small)
    drawn = draw_distinct(searcher, cfg, ds, 8, seed=3)
    specs = [json.dumps(g.spec, sort_keys=True) for g in drawn]
    assert len(set(specs)) == 8 and [g.name for g in drawn] == [f"random_{i:02d}" for i in range(8)]
    for g in drawn:
        again = Genotype.from_dict(g.to_dict())  # a valid genotype of its method
        assert (again.in_channels, again.out_channels) == (ds.in_channels, ds.num_classes)
        with torch.device("meta"):
            build_network(again)
    assert [g.to_dict() for g in draw_distinct(searcher, cfg, ds, 8, seed=3)] == [g.to_dict() for g in drawn]
    assert specs != [json.dumps(g.spec, sort_keys=True) for g in draw_distinct(searcher, cfg, ds, 8, seed=4)]
    if method == "mbnas":  # Micro-NAS searches cells on the U-Net topology: the random members keep it
        from nas_ops.mbnas.space import SearchSpace, node_levels, nodes_of

        unet = node_levels(SearchSpace(cfg.num_nodes, cfg.max_depth).unet())
        assert all(node_levels(nodes_of(g)) == unet for g in drawn)
    if method == "c2fnas":
        from nas_ops.c2fnas.space import enumerate_topologies

        allowed = set(enumerate_topologies(cfg.topology_rule, cfg.num_cells))
        assert all(tuple(g.spec["levels"]) in allowed for g in drawn)


# -- the split -------------------------------------------------------------------------------------------------


def test_the_split_holds_out_whole_patients_and_every_workflow_reads_its_folds(tmp_path):
    data = make_mri_dataset(tmp_path / "Task900_Mri", num_patients=10, shape=(16, 16, 8))
    ds = load_checked_dataset(data)
    split = draw_split(ds, n_folds=2, seed=0, test_fraction=0.2)
    assert len(split.test) == 6 and len(split.dev) == 4 and not set(split.test) & set(split.dev)
    assert draw_split(ds, 2, 0, 0.2) == split and draw_split(ds, 2, 1, 0.2).test != split.test
    dev_dir, test_dir = write_views(ds, split, tmp_path / "study" / "data")
    dev, test = load_checked_dataset(dev_dir), load_checked_dataset(test_dir)
    assert sorted(case_id(i["image"]) for i in dev.items) == split.dev
    assert sorted(case_id(i["image"]) for i in test.items) == split.test
    assert json.loads((dev_dir / SPLIT_FILE).read_text()) == split.folds
    for fold, expected in enumerate(split.folds):
        for seed in (0, 5):  # the folds are the file's whatever the run's seed
            train, val = fold_items(dev, fold, 2, seed)
            assert sorted(case_id(i["image"]) for i in val) == expected["val"]
            assert sorted(case_id(i["image"]) for i in train) == expected["train"]
    with pytest.raises(DatasetError, match=r"splits_final.json: field 'n_folds': holds 2 folds, the run asks for 5"):
        fold_items(dev, 0, 5, 0)
    (dev_dir / SPLIT_FILE).write_text(json.dumps([{"train": [split.test[0]], "val": split.dev}] * 2))
    with pytest.raises(DatasetError, match=rf"field '\[0\].train': case '{split.test[0]}' is not in"):
        fold_items(load_checked_dataset(dev_dir), 0, 2, 0)
    with pytest.raises(InputError, match="cannot give 6 test cases and 5 folds"):
        draw_split(ds, n_folds=5, seed=0)
    assert [min_test_cases(m) for m in (1, 2, 3, 6, 7)] == [6, 7, 7, 8, 9]
    doc = json.loads((data / "dataset.json").read_text())
    (data / "imagesTr" / "copy").mkdir()
    (data / "imagesTr" / "copy" / "mri_000.nii.gz").write_bytes((data / "imagesTr" / "mri_001.nii.gz").read_bytes())
    doc["training"][1]["image"] = "./imagesTr/copy/mri_000.nii.gz"
    (data / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"training\[1\].image': case id 'mri_000' is also training\[0\]'s"):
        draw_split(load_checked_dataset(data), n_folds=2, seed=0)


def test_the_nnunet_export_writes_the_study_split(tmp_path):
    from nnunet_plans.export import write_split

    folds = [{"train": ["a", "b"], "val": ["c"]}, {"train": ["c"], "val": ["a", "b"]}]
    (tmp_path / "splits_final.json").write_text(json.dumps(folds))
    target = tmp_path / "nnUNet_preprocessed" / "Dataset900_X"
    target.mkdir(parents=True)
    written = write_split(tmp_path / "splits_final.json", target)
    assert json.loads(written.read_text()) == folds
    assert write_split(tmp_path / "splits_final.json", target) == written  # the same again: fine
    (tmp_path / "other.json").write_text(json.dumps(folds[::-1]))
    with pytest.raises(InputError, match="holds other folds than"):
        write_split(tmp_path / "other.json", target)


# -- a tiny study end to end -----------------------------------------------------------------------------------

TINY_SEARCH = {"search#spatial_size": [64, 64], "search#width": 8, "search#stem_width": 8, "search#batch_size": 2,
               "search#phase1_epochs": 2, "search#phase2_epochs": 1, "search#phase2_samples": 1,
               "search#train_batches": 1}
TINY_TRAIN = {"epochs": 1, "batch_size": 2, "spatial_size": [64, 64]}


def test_a_tiny_study_writes_its_table_keeps_test_cases_away_and_resumes(tmp_path, monkeypatch):
    import PIL.Image

    from nas_ops.study import run as study_run

    data = make_nuclei_dataset(tmp_path / "Task900_Nuclei", num_images=12, size=64, seed=0)
    monkeypatch.chdir(REPO_ROOT)
    searched: list[str] = []  # every image file read while a search runs
    real_open, real_workflow = PIL.Image.open, study_run.run_workflow
    in_search = [False]

    def recording_open(fp, *args, **kwargs):
        if in_search[0]:
            searched.append(Path(str(fp)).name)
        return real_open(fp, *args, **kwargs)

    def workflow(bundle_dir, names, **overrides):
        in_search[0] = names[0] == "search.json"
        try:
            return real_workflow(bundle_dir, names, **overrides)
        finally:
            in_search[0] = False

    monkeypatch.setattr(PIL.Image, "open", recording_open)
    monkeypatch.setattr(study_run, "run_workflow", workflow)
    out = tmp_path / "study"
    kwargs = dict(methods=["bixnas"], baselines=["unet", "segresnet"], random=2, seeds=2, folds=1, n_folds=2,
                  search_overrides=TINY_SEARCH, train_overrides=TINY_TRAIN, command="pytest tiny study")
    summary = study_run.study(data, out, **kwargs)
    split = json.loads((out / "split.json").read_text())
    # a family of 3 Holm-adjusted tests needs 7 cases to reach p < 0.05 (3 x 2/2^7 < 0.05 <= 3 x 2/2^6)
    assert len(split["test"]) == 7 and searched and not {Path(n).stem for n in searched} & set(split["test"])
    dev = json.loads((out / "data" / "dev" / "dataset.json").read_text())["training"]
    assert not {case_id(e["image"]) for e in dev} & set(split["test"])  # no training nor validation sees them
    assert {c for fold in json.loads((out / "data" / "dev" / SPLIT_FILE).read_text()) for side in fold.values()
            for c in side} == {case_id(e["image"]) for e in dev}
    # the table: models x seeds x test cases x classes
    rows = list(csv.DictReader((out / "results.csv").open()))
    models = {"bixnas-found", "unet", "segresnet", "bixnas-random_00", "bixnas-random_01"}
    assert {r["model"] for r in rows} == models and len(rows) == 5 * 2 * 7 * 1
    assert {r["case"] for r in rows} == set(split["test"])
    method = summary["methods"]["bixnas"]
    assert method["cases"] == 7 and {t["name"] for t in method["tests"]} == {
        "Wilcoxon bixnas-found vs unet", "Wilcoxon bixnas-found vs segresnet",
        "Wilcoxon bixnas-found vs random control (median)"}
    holm_ps = [t["p_holm"] for t in method["tests"] if t["p"] is not None]
    assert all(h >= t["p"] for h, t in zip(holm_ps, [t for t in method["tests"] if t["p"] is not None], strict=True))
    assert method["rank_among_random"]["of"] == 3 and "above_the_random_median" in method["goal"]
    report = (out / "report.md").read_text()
    assert "pytest tiny study" in report and "Holm" in report and "In plain words" in report
    for plot in ("dice_vs_macs.png", "dice_per_model.png", "search_progress.png"):
        assert (out / "plots" / plot).stat().st_size > 1000, plot
    # killed after the trainings but one: the same command trains only that one again
    runs = sorted((out / "runs").rglob("study_result.json"))
    assert len(runs) == 10
    lost = runs[3]
    lost.unlink()
    (out / "report.md").unlink()
    before = {p: p.stat().st_mtime_ns for p in runs if p != lost}
    again = study_run.study(data, out, **kwargs)
    assert {p: p.stat().st_mtime_ns for p in runs if p != lost} == before and lost.is_file()
    assert [r["dice_mean"] for r in again["methods"]["bixnas"]["rows"]] == [r["dice_mean"] for r in method["rows"]]
    # another setting in the same folder is refused, naming it
    with pytest.raises(InputError, match="field 'random': this output_dir holds a study run with random=2"):
        study_run.study(data, out, **{**kwargs, "random": 3})


def test_an_override_naming_no_key_of_the_bundle_is_refused_with_the_nearest(tmp_path, monkeypatch):
    from nas_ops.study.run import study

    monkeypatch.chdir(REPO_ROOT)
    data = make_mri_dataset(tmp_path / "Task900_Mri", num_patients=10, shape=(16, 16, 8))
    out = tmp_path / "study"
    with pytest.raises(InputError, match=r"field 'search_overrides.search#accept#margin': the MB-NAS bundle's "
                                         r"search.json has no key 'accept' in 'search' \(did you mean "
                                         r"'search#accept_margin'\?\)"):
        study(data, out, methods=["mbnas"], search_overrides={"search#accept#margin": 0.2})
    with pytest.raises(InputError, match=r"field 'train_overrides.epohcs': the MB-NAS bundle's train.json has no key "
                                         r"'epohcs' \(did you mean 'epochs'\?\)"):
        study(data, out, methods=["mbnas"], train_overrides={"epohcs": 3})
    assert not out.exists()
