"""C2FNAS: topology counts, every kind of path builds, op and reference sizes, a supernet's sampled path equals the
network of its genotype, the evolution, both stages end to end with SIGKILL-resume equality, the memory refusal."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_ops.c2fnas.cells import make_op
from nas_ops.c2fnas.evolution import evolve, mutate, random_ops
from nas_ops.c2fnas.network import C2FNASNet, CellGrid, path_state_dict
from nas_ops.c2fnas.search import search
from nas_ops.c2fnas.space import (
    C2FNAS_PANC_LEVELS,
    C2FNAS_PANC_OPS,
    OPS,
    c2fnas_genotype,
    encode,
    enumerate_topologies,
    group_topologies,
    skip_sources,
    topology_code,
)
from nas_ops.cost_model import count_macs, count_params
from nas_ops.data import make_mri_dataset
from nas_ops.errors import GenotypeError, InputError
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network
from nas_ops.search_state import SearchState

torch.set_num_threads(1)
REPO_ROOT = Path(__file__).resolve().parents[1]
# a tiny search: 6 volumes of 32^3 (4 train, 2 validation), width 2, 2 groups, a few batches per epoch
TINY = {"patch_size": [32, 32, 32], "base_channels": 2, "stem_channels": 2, "batch_size": 2, "samples_per_volume": 2,
        "coarse_groups": 2, "coarse_epochs": 3, "coarse_scored": 2, "fine_epochs": 2, "population": 4,
        "generations": 5, "n_folds": 3, "device": "cpu", "num_threads": 1}


# -- the macro space ---------------------------------------------------------------------------------------


def test_topology_counts_of_each_rule():
    assert len(enumerate_topologies("all")) == 14_445
    assert len(enumerate_topologies("u_shaped")) == 1_486
    assert len(enumerate_topologies("u_deep")) == 924
    found = C2FNAS_PANC_LEVELS
    assert found in enumerate_topologies("u_deep")
    codes = [topology_code(t) for t in enumerate_topologies("all")]
    assert len(set(codes)) == len(codes) and topology_code(found) == "001123221000"


def test_skips_come_from_the_latest_output_at_the_arrival_level():
    # 0 0 1 1 2 3 2 2 1 0 0 0: the up cell 6 (level 2) takes cell 4's output, cell 8 (level 1) cell 3's, cell 9
    # (level 0) cell 1's
    assert skip_sources(C2FNAS_PANC_LEVELS) == [None, None, None, None, None, None, 4, None, 3, 1, None, None]
    assert skip_sources((1, 0)) == [None, -1]  # back to level 0 right after the stem: the stem's output


def test_kmeans_groups_partition_the_topologies_and_are_reproducible():
    topologies = enumerate_topologies("u_deep")
    groups = group_topologies(topologies, 6, seed=0)
    assert len(groups) == 6 and sorted(t for g in groups for t in g) == sorted(topologies)
    assert groups == group_topologies(topologies, 6, seed=0)
    assert encode(topologies[:3]).shape == (3, 48)
    # similar paths group together: the mean within-group code distance is below the overall one
    codes = encode(topologies)
    within = np.mean([np.abs(encode(g) - encode(g).mean(0)).sum(1).mean() for g in groups])
    assert within < np.abs(codes - codes.mean(0)).sum(1).mean()


@pytest.mark.parametrize("rule", ["all", "u_shaped"])
def test_a_seeded_sample_of_topologies_builds_and_keeps_the_patch_size(rule):
    rng = random.Random(0)
    for levels in rng.sample(enumerate_topologies(rule), 12):
        ops = tuple(rng.choice(OPS) for _ in levels)
        net = build_network(c2fnas_genotype(levels, ops, 1, 3, base_channels=2, stem_channels=2))
        x = torch.randn(1, 1, 32, 32, 32)
        logits, feats = net.forward_with_features(x)
        assert logits.shape == (1, 3, 32, 32, 32), levels
        assert net.total_stride == 2 ** (1 + max(levels))
        for f in feats:  # an integer factor per axis, deepest first, full size last
            assert all(32 % s == 0 for s in f.shape[2:])
        assert feats[-1].shape[2:] == (32, 32, 32)
        assert [f.shape[2] for f in feats] == sorted(f.shape[2] for f in feats)


def test_the_three_ops_have_the_expected_parameter_counts():
    c = 16
    norm = 2 * c  # InstanceNorm's affine weight and bias
    assert count_params(make_op("2d", c)) == 9 * c * c + norm
    assert count_params(make_op("3d", c)) == 27 * c * c + norm
    assert count_params(make_op("p3d", c)) == 12 * c * c + norm
    x = torch.randn(1, c, 8, 8, 8)
    assert all(make_op(op, c)(x).shape == x.shape for op in OPS)


def test_the_found_network_has_its_reference_size():
    genotype = Genotype.load(REPO_ROOT / "bundles" / "c2fnas" / "genotypes" / "c2fnas_panc.json")
    assert tuple(genotype.spec["levels"]) == C2FNAS_PANC_LEVELS and tuple(genotype.spec["ops"]) == C2FNAS_PANC_OPS
    with torch.device("meta"):
        net = build_network(genotype)
    # widths 64/128/256/512: about 17-20 M parameters by the reimplementations; 96^3 patch (MSD Pancreas)
    assert count_params(net) == 18_845_507
    assert count_macs(net, (1, 96, 96, 96), device="meta") == 155_628_601_344


@pytest.mark.parametrize(("change", "field"), [
    ({"levels": [0, 2, 1, 0]}, "levels[1]"),
    ({"levels": [0, 1, 1]}, "levels"),
    ({"ops": ["3d"] * 11}, "ops"),
    ({"ops": ["3d"] * 11 + ["5d"]}, "ops[11]"),
    ({"base_channels": 0}, "base_channels"),
    ({"width": 3}, "width"),
])
def test_bad_specs_are_refused_naming_the_field(tmp_path, change, field):
    doc = c2fnas_genotype(C2FNAS_PANC_LEVELS, C2FNAS_PANC_OPS).to_dict()
    doc["spec"].update(change)
    if "levels" in change and "ops" not in change:
        doc["spec"]["ops"] = ["3d"] * len(change["levels"])
    path = tmp_path / "g.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(GenotypeError, match=re.escape(f"g.json: field 'spec.{field}'")):
        Genotype.load(path)


# -- supernets -----------------------------------------------------------------------------------------------


def test_a_sampled_path_of_either_supernet_equals_the_network_of_its_genotype():
    rng = random.Random(1)
    group = rng.sample(enumerate_topologies("u_shaped"), 5)
    coarse = CellGrid(1, 3, group, ("3d",), base_channels=2, stem_channels=2)
    fine = CellGrid(1, 3, [C2FNAS_PANC_LEVELS], OPS, base_channels=2, stem_channels=2)
    x = torch.randn(2, 1, 32, 32, 32)
    cases = [(coarse, t, ("3d",) * 12) for t in group]
    cases += [(fine, C2FNAS_PANC_LEVELS, tuple(rng.choice(OPS) for _ in range(12))) for _ in range(3)]
    for grid, levels, ops in cases:
        net = C2FNASNet(1, 3, levels, ops, base_channels=2, stem_channels=2)
        net.load_state_dict(path_state_dict(grid, levels, ops), strict=True)  # no leftovers, nothing missing
        for mode in (True, False):
            grid.train(mode)
            net.train(mode)
            assert torch.equal(grid(x, (levels, ops)), net(x))
    # the supernet shares cells where paths meet: fewer cells than the members have in all
    assert len(coarse.cells) < 5 * 12


# -- evolution -----------------------------------------------------------------------------------------------


def _count_3d(candidates):
    return [sum(op == "3d" for op in c) / len(c) for c in candidates]


def test_evolution_improves_its_fitness_and_respects_the_bound(tmp_path):
    evolved, drawn = [], []
    for seed in range(5):  # the share of 3D cells: evolution against random search with as many evaluations
        state = SearchState(tmp_path / str(seed), "evo.pt", "evo.json", identity={"t": 1})
        result = evolve(_count_3d, lambda ops: True, 12, 8, 12, 0.1, 0.5, np.random.default_rng(seed), state)
        best = [row["best"] for row in result["history"]]
        assert best == sorted(best)  # elitist: never worse
        evolved.append(result["best_fitness"])
        rng = np.random.default_rng(100 + seed)
        drawn.append(max(_count_3d([random_ops(rng, 12) for _ in result["cache"]])))
    assert np.mean(evolved) > np.mean(drawn) + 0.15  # measured: 0.95 against 0.68
    bounded = SearchState(tmp_path / "b", "evo.pt", "evo.json", identity={"t": 2})
    at_most_6 = lambda ops: sum(op == "3d" for op in ops) <= 6  # noqa: E731
    result = evolve(_count_3d, at_most_6, 12, 8, 12, 0.2, 0.5, np.random.default_rng(0), bounded)
    assert all(at_most_6(tuple(k.split(","))) for k in result["cache"]) and result["best_fitness"] == 0.5
    rng = np.random.default_rng(0)
    assert all(mutate(rng, ("2d",) * 12, 0.0) == ("2d",) * 12 for _ in range(5))


def test_a_killed_evolution_continues_to_the_same_result(tmp_path):
    full = evolve(_count_3d, lambda ops: True, 12, 6, 6, 0.3, 0.5, np.random.default_rng(3),
                  SearchState(tmp_path / "full", "evo.pt", "evo.json", identity={}))
    calls = [0]

    def dies_in_generation_3(candidates):
        calls[0] += 1
        if calls[0] == 4:
            raise KeyboardInterrupt
        return _count_3d(candidates)

    state = SearchState(tmp_path / "part", "evo.pt", "evo.json", identity={})
    with pytest.raises(KeyboardInterrupt):
        evolve(dies_in_generation_3, lambda ops: True, 12, 6, 6, 0.3, 0.5, np.random.default_rng(3), state)
    again = evolve(_count_3d, lambda ops: True, 12, 6, 6, 0.3, 0.5, np.random.default_rng(99),  # rng from the file
                   SearchState(tmp_path / "part", "evo.pt", "evo.json", identity={}))
    assert again == full


# -- the search end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return make_mri_dataset(tmp_path_factory.mktemp("c2f") / "Task950_Tiny", num_patients=6, shape=(32, 32, 32))


@pytest.fixture(scope="module")
def reference(volumes, tmp_path_factory):
    out = tmp_path_factory.mktemp("c2f_ref") / "run"
    return out, search(volumes, out, plots=False, **TINY)


def test_search_writes_a_genotype_that_trains_and_reports_a_finished_run(reference, volumes):
    out, summary = reference
    genotype = Genotype.load(out / "genotype.json")
    assert genotype.method == "c2fnas" and (genotype.in_channels, genotype.out_channels) == (1, 3)
    coarse = json.loads((out / "coarse_result.json").read_text())
    assert genotype.spec["levels"] == coarse["topology"] and len(coarse["groups"]) == 2
    assert all(len(g["scores"]) == 2 for g in coarse["groups"])  # coarse_scored members per group
    evolution = json.loads((out / "evolution_result.json").read_text())
    assert genotype.spec["ops"] == evolution["best"] and summary["dice"] == evolution["best_fitness"]
    assert [r["best"] for r in evolution["history"]] == sorted(r["best"] for r in evolution["history"])
    assert genotype.provenance["params"] == count_params(build_network(genotype))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    tic = time.perf_counter()
    assert search(volumes, out, plots=False, **TINY) == summary  # reported, nothing rerun or rewritten
    assert time.perf_counter() - tic < 10
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(InputError, match="field 'coarse_epochs': this output_dir holds"):
        search(volumes, out, plots=False, **{**TINY, "coarse_epochs": 4})


def test_each_stage_alone_gives_the_search_result(reference, volumes, tmp_path):
    ref_out, summary = reference
    out = tmp_path / "run"
    with pytest.raises(InputError, match="field 'stage': the fine stage needs a finished coarse stage"):
        search(volumes, out, stage="fine", plots=False, **TINY)
    assert not out.exists()
    assert search(volumes, out, stage="coarse", plots=False, **TINY)["topology"] == summary["topology"]
    fine = search(volumes, out, stage="fine", plots=False, **TINY)
    assert {**fine, "genotype": None} == {**summary, "genotype": None}
    assert (out / "genotype.json").read_bytes() == (ref_out / "genotype.json").read_bytes()
    # the fine stage on a given topology, without a coarse stage
    alone = search(volumes, tmp_path / "alone", stage="fine", topology=list(C2FNAS_PANC_LEVELS), plots=False, **TINY)
    assert alone["topology"] == "001123221000" and not (tmp_path / "alone" / "coarse_result.json").exists()


def test_a_configuration_beyond_memory_limit_gb_is_refused_before_anything_is_written(volumes, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InputError, match=r"field 'search#batch_size': the largest supernet's training needs about "
                                         r".* at batch 2 \(4 patches: 2 per volume\) .* lower search#batch_size \(at "
                                         r"most 1 fits\) or search#patch_size or search#samples_per_volume, or set "
                                         r"memory_limit_gb"):
        search(volumes, out, memory_limit_gb=0.0125, **TINY)
    with pytest.raises(InputError, match=r"limit of 0.001 GiB: the weights alone do not fit: use a smaller network"):
        search(volumes, out, memory_limit_gb=0.001, **TINY)
    assert not out.exists()
    with pytest.raises(InputError, match=r"field 'patch_size\[0\]': 40 must be a multiple of 16"):
        search(volumes, out, **{**TINY, "patch_size": [40, 32, 32]})
    with pytest.raises(InputError, match=r"field 'topology_rule': must be one of"):
        search(volumes, out, **{**TINY, "topology_rule": "v_shaped"})
    assert not out.exists()


CHILD = """
import json, logging, sys
import torch
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO)
from nas_ops.c2fnas.search import search
kwargs = json.loads(sys.argv[1])
search(kwargs.pop("dataset_dir"), kwargs.pop("output_dir"), **kwargs)
"""


def _start(kwargs: dict, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(kwargs)], cwd=REPO_ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the search ended before the kill point"
        assert time.monotonic() < deadline, "the kill point was not reached in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _mid_coarse(out: Path) -> bool:  # group 1 has checkpointed an epoch and not finished
    group = out / "coarse" / "group_01"
    return (group / "state.pt").is_file() and not (group / "result.json").exists()


def _mid_fine(out: Path) -> bool:  # the evolution has checkpointed a generation and not finished
    return (out / "evolution_state.pt").is_file() and not (out / "evolution_result.json").exists()


@pytest.mark.parametrize("when", ["coarse", "fine"])
def test_sigkill_resume_equals_uninterrupted_search(reference, volumes, tmp_path, when):
    ref_out, _ = reference
    out, log = tmp_path / "run", tmp_path / "child.log"
    kwargs = {"dataset_dir": str(volumes), "output_dir": str(out), **TINY, "plots": False}
    proc = _start(kwargs, log)
    _kill_when(proc, lambda: (_mid_coarse if when == "coarse" else _mid_fine)(out))
    assert proc.returncode == -signal.SIGKILL and not (out / "genotype.json").exists()
    proc = _start(kwargs, log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    resumed = r"coarse group 1 \(\d+ topologies\): resuming at epoch" if when == "coarse" else \
        r"evolution: resuming at generation"
    assert re.search(resumed, text), text[-3000:]
    for name in ("genotype.json", "coarse_result.json", "evolution_result.json"):
        assert (out / name).read_bytes() == (ref_out / name).read_bytes(), name
