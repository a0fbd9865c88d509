"""BiX-NAS search: Pareto fronts, the Phase-2 shared head against the naive computation, Phase-1 sharpening,
SIGKILL-resume equality in both phases, a finished search not run again, bad config refused before any write."""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_ops.bixnas.phase2 import (
    combine,
    draw_stage_samples,
    naive_step,
    pruned_form,
    sample_block,
    shared_head_step,
    stage_space_size,
    tails_forward,
)
from nas_ops.bixnas.search import search
from nas_ops.bixnas.space import analyse, normalise_skip_sets
from nas_ops.bixnas.supernet import BiXSupernet
from nas_ops.data import make_mri_dataset, make_nuclei_dataset
from nas_ops.errors import DatasetError, InputError
from nas_ops.genotype import Genotype
from nas_ops.pareto import dominates, non_dominated_sort, pareto_front, select_by_score, select_from_front
from nas_ops.training.losses import make_loss
from nas_ops.training.metrics import ValidationScores

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
# a tiny search: 8 images of 64x64 (6 train, 2 validation), a width-8 supernet, 1-2 batches per epoch
TINY = {"n_folds": 4, "spatial_size": [64, 64], "width": 8, "stem_width": 8, "batch_size": 2, "device": "cpu",
        "num_threads": 1, "phase1_epochs": 6, "phase1_selection_lr": 0.05, "phase2_epochs": 2, "phase2_samples": 2,
        "phase2_keep": 2, "phase2_init": "continue"}
# Phase-1 candidate sets with 1..3 inputs per block (T=3)
PHASE1_SETS = normalise_skip_sets(
    [[[0]] * 4,
     [[2, 4], [0, 2], [1, 3], [0, 1, 4]],
     [[3, 1], [1, 0], [2, 1, 0], [0, 2, 3]],
     [[3, 0], [2, 0, 4], [1, 2], [0, 3]],
     [[3, 2, 4], [4, 0], [0, 1], [0, 3]],
     [[3, 1], [2, 0], [0, 2], [0, 4]]], 3)


# -- Pareto fronts -----------------------------------------------------------------------------------------


def _brute_front(points):
    return sorted(i for i in range(len(points)) if not any(dominates(points[j], points[i]) for j in range(len(points))))


def test_pareto_front_of_a_known_set():
    points = [(0.8, 10), (0.9, 20), (0.7, 5), (0.85, 25), (0.9, 20), (0.6, 30), (0.7, 5), (0.7, 6)]
    # (0.85, 25) is dominated by (0.9, 20); (0.6, 30) by all; (0.7, 6) by (0.7, 5); equal points share the front
    assert pareto_front(points) == [1, 4, 0, 2, 6]
    assert non_dominated_sort(points) == [[1, 4, 0, 2, 6], [3, 7], [5]]
    assert select_by_score(points, [0, 2, 6, 1], 2) == [1, 0]
    front, kept = select_from_front(points, 3)
    assert front == [1, 4, 0, 2, 6] and kept == [1, 4, 0]
    assert select_from_front([(0.5, 3), (0.5, 2)], 3) == ([1], [1])  # equal score: fewer MACs wins
    assert pareto_front([]) == [] and select_from_front([], 3) == ([], [])


def test_pareto_front_matches_brute_force():
    rng = random.Random(0)
    for _ in range(300):
        points = [(rng.randint(0, 6) / 6, rng.randint(0, 6)) for _ in range(rng.randint(1, 14))]
        front = pareto_front(points)
        assert sorted(front) == _brute_front(points)
        assert front == sorted(front, key=lambda i: (-points[i][0], points[i][1], i))
        fronts = non_dominated_sort(points)
        assert sorted(i for f in fronts for i in f) == list(range(len(points)))
        for a, b in zip(fronts, fronts[1:], strict=False):  # every later point is dominated by an earlier front
            assert all(any(dominates(points[i], points[j]) for i in a) for j in b)


# -- Phase-2 sampling --------------------------------------------------------------------------------------


def test_sampler_draws_non_empty_subsets_of_the_candidates():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        block = sample_block(rng, (0, 2, 4))
        assert block and set(block) <= {0, 2, 4} and list(block) == sorted(block)
        seen.add(block)
        kept = sample_block(rng, (1, 3), keep_sequential=True)
        assert kept[0] == 0 and set(kept) <= {0, 1, 3}
    assert len(seen) == 7  # every non-empty subset of 3 candidates
    # stage 1: 3 * 3 * 3 * 7 skip sets; stage 5 with the authors' rule (input 0 kept): 2^2 * 2 * 2 * 2
    assert stage_space_size(PHASE1_SETS, 1, "paper") == 189 and stage_space_size(PHASE1_SETS, 5, "authors") == 32
    samples = draw_stage_samples(np.random.default_rng(1), PHASE1_SETS, 3, 500)
    assert len(samples) == len(set(samples)) == stage_space_size(PHASE1_SETS, 3, "paper") == 3 * 7 * 3 * 3


def test_combine_drops_architectures_that_differ_only_in_dead_blocks():
    sample_1 = ((4,), (2,), (0,), (4,))  # dec2 level 3 reads only enc2 level 3: levels 0-2 of dec2 are dead
    sample_2 = ((1,), (3,), (1,), (4,))  # other inputs, but only in dead blocks: the same network
    sample_3 = ((1,), (2,), (0,), (0, 4))  # level 3 reads level 2, which reads level 1: level 0 is dead
    nets = combine([PHASE1_SETS], 5, [sample_1, sample_2, sample_3])
    assert [net[5] for net in nets] == [sample_1, sample_3]
    assert pruned_form(combine([PHASE1_SETS], 5, [sample_2])[0]) == pruned_form(nets[0])
    assert analyse(nets[0]).alive[5] == (False, False, False, True)
    assert analyse(nets[1]).alive[5] == (False, True, True, True)


# -- Phase-2 shared head -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", [5, 3, 1])
def test_shared_head_step_equals_naive_per_sample_step(stage):
    """Same losses and the same gradient of every parameter as running every sample whole."""
    torch.manual_seed(0)
    rng = np.random.default_rng(stage)
    population = [PHASE1_SETS]
    if stage < 5:  # retained architectures that differ after the stage
        population = combine(population, stage + 1, draw_stage_samples(rng, PHASE1_SETS, stage + 1, 2))
    networks = combine(population, stage, draw_stage_samples(rng, PHASE1_SETS, stage, 4))
    assert len(networks) >= 3
    naive = BiXSupernet(2, 3, 2, iterations=3, width=8, stem_width=8).train()
    shared = copy.deepcopy(naive)
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 2, (2, 1, 64, 64))
    loss_fn = make_loss("dice_ce")
    naive_losses = naive_step(naive, x, y, networks, loss_fn)
    shared_losses = shared_head_step(shared, x, y, networks, stage, loss_fn)
    assert np.allclose(shared_losses, naive_losses, rtol=1e-5, atol=1e-6)
    n_grads = 0
    for (name, p), q in zip(naive.named_parameters(), shared.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            n_grads += 1
            assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name
    assert n_grads > 20
    shared.eval(), naive.eval()
    with torch.no_grad():
        for logits, sets in zip(tails_forward(shared, x, networks, stage), networks, strict=True):
            assert torch.allclose(logits, shared.forward_fixed(x, sets), atol=1e-5)


# -- the search --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return make_nuclei_dataset(tmp_path_factory.mktemp("data") / "Task900_Tiny", num_images=8, size=64, seed=0)


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory):
    """An uninterrupted tiny search (both phases, plots on)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return out, search(tiny_dataset, out, **TINY)


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def test_search_outputs(reference):
    out, result = reference
    genotype = Genotype.load(out / "genotype.json")
    assert genotype.method == "bixnet" and genotype.out_channels == 2 and genotype.in_channels == 3
    scores = genotype.provenance["scores"]
    assert scores == {k: result["selected"][k] for k in scores}
    assert genotype.provenance["seed"] == 0 and genotype.provenance["search_config"]["phase2_samples"] == 2
    pareto = sorted((out / "pareto").glob("pareto_*.json"))
    assert len(pareto) == len(result["pareto"]) >= 1
    ious = [Genotype.load(p).provenance["scores"]["val_iou"] for p in pareto]
    assert ious == sorted(ious, reverse=True) and ious[0] == scores["val_iou"]
    assert Genotype.load(out / "phase1_genotype.json").name == "bixnas_phase1"
    rows = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]
    assert sum(r["phase"] == 1 for r in rows) == TINY["phase1_epochs"]
    assert sum(r["phase"] == 2 and "epoch" in r for r in rows) == 5 * TINY["phase2_epochs"]
    assert sum(r.get("event") == "stage_done" for r in rows) == 5
    for name in ("phase1_selection", "phase1_history", "phase2_pareto", "architecture"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 10_000


def test_phase1_sharpens_the_selection_matrices(reference):
    out, result = reference
    assert result["phase1"]["entropy_final"] < result["phase1"]["entropy_init"] < np.log(5)
    selection = json.loads((out / "phase1_selection.json").read_text())
    assert len(selection["blocks"]) == 20
    for block in selection["blocks"].values():
        probs = np.array(block["probabilities"])
        assert probs.shape == (5, 3) and np.allclose(probs.sum(axis=0), 1.0)
        assert block["candidates"] == sorted(set(probs.argmax(axis=0).tolist()))


def test_phases_run_alone_give_the_search_result(reference, tiny_dataset, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "run"
    with pytest.raises(InputError, match="field 'phase'.*finished Phase 1"):
        search(tiny_dataset, out, **{**TINY, "phase": "phase2"})
    assert not out.exists()
    first = search(tiny_dataset, out, **{**TINY, "phase": "phase1", "plots": False})
    assert "genotype" not in first and not (out / "genotype.json").exists()
    search(tiny_dataset, out, **{**TINY, "phase": "phase2", "plots": False})
    for name in ("phase1_genotype.json", "genotype.json"):
        assert (out / name).read_bytes() == (ref_out / name).read_bytes()


def test_phase2_refuses_a_phase1_supernet_whose_bytes_changed(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    search(tiny_dataset, out, **{**TINY, "phase": "phase1", "plots": False})
    weights = out / "phase1_supernet.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside a tensor: still a loadable file
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"phase1_supernet.pt: field 'supernet_sha256': the file changed since it "
                                         r"was written .*rerun Phase 1 in a new output_dir, or use phase2_init "
                                         r"'fresh'"):
        search(tiny_dataset, out, **{**TINY, "phase": "phase2", "plots": False})
    assert not (out / "genotype.json").exists()


def test_finished_search_runs_nothing_and_reports_the_same_result(reference, tiny_dataset):
    out, result = reference
    before = _listing(out)
    tic = time.perf_counter()
    again = search(tiny_dataset, out, **TINY)
    assert time.perf_counter() - tic < 5.0
    assert again == result
    assert _listing(out) == before


@pytest.mark.parametrize("change, key", [
    ({"phase2_samples": 0}, "phase2_samples"),
    ({"phase1_lr": -1.0}, "phase1_lr"),
    ({"spatial_size": [100, 100]}, "spatial_size"),
    ({"phase2_init": "warm"}, "phase2_init"),
    ({"phase": "phase3"}, "phase"),
    ({"fold": 4}, "fold"),
    ({"keep_dead_bridge": "yes"}, "keep_dead_bridge"),
    ({"population": 3}, "population"),
])
def test_bad_config_is_refused_before_anything_is_written(tiny_dataset, tmp_path, change, key):
    out = tmp_path / "run"
    with pytest.raises(InputError, match=f"field '{key}'"):
        search(tiny_dataset, out, **{**TINY, **change})
    assert not out.exists()


def test_the_search_block_is_checked_naming_its_keys(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    block = {k: v for k, v in TINY.items() if k not in ("n_folds", "device", "num_threads")}
    run = {"n_folds": 4, "device": "cpu", "config_source": "search.json"}
    with pytest.raises(InputError, match=r"search.json: field 'search#phase1_epohcs': unknown key \(did you mean "
                                         r"'phase1_epochs'\?\)"):
        search(tiny_dataset, out, config={**block, "phase1_epohcs": 3}, **run)
    with pytest.raises(InputError, match=r"field 'search#batch_size': must be an integer, got 'abc'"):
        search(tiny_dataset, out, config={**block, "batch_size": "abc"}, **run)
    with pytest.raises(InputError, match=r"field 'search#phase1_epochs': must be >= 1, got 0"):
        search(tiny_dataset, out, config={**block, "phase1_epochs": 0}, **run)
    with pytest.raises(InputError, match=r"field 'device': must be 'auto', 'cpu'"):
        search(tiny_dataset, out, config=block, **{**run, "device": "tpu"})
    assert not out.exists()


def test_bad_dataset_and_other_settings_are_refused_before_anything_is_written(reference, tiny_dataset, tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        search(tmp_path / "missing", tmp_path / "run", **TINY)
    assert not (tmp_path / "run").exists()
    out, _ = reference
    before = _listing(out)
    with pytest.raises(InputError, match="field 'phase1_epochs'.*phase1_epochs=6"):
        search(tiny_dataset, out, **{**TINY, "phase1_epochs": 7})
    # a finished search is not reported for another dataset (nor for a missing one)
    other = make_nuclei_dataset(tmp_path / "Task900_Other", num_images=8, size=64, seed=1)
    with pytest.raises(InputError, match=r"phase1_state.pt: field 'dataset.fingerprint': this output_dir holds"):
        search(other, out, **TINY)
    with pytest.raises(DatasetError, match="no such folder"):
        search(REPO_ROOT / "missing", out, **TINY)
    assert _listing(out) == before


def test_search_on_sliced_volumes_with_two_foreground_classes(tmp_path):
    data = make_mri_dataset(tmp_path / "Task900_TinyMRI", num_patients=4, shape=(32, 32, 8), seed=0)
    out = tmp_path / "run"
    config = {**TINY, "n_folds": 2, "spatial_size": [32, 32], "phase1_epochs": 2, "phase2_epochs": 1,
              "phase2_samples": 1, "train_batches": 2, "plots": False}
    result = search(data, out, **config)
    genotype = Genotype.load(out / "genotype.json")
    assert genotype.in_channels == 1 and genotype.out_channels == 3 and genotype.spatial_dims == 2
    assert genotype.provenance["dataset"]["name"] == "DemoMRI"
    assert Genotype.load(out / "phase1_genotype.json").out_channels == 3 and len(result["pareto"]) >= 1
    assert all(0.0 <= r["val_iou"] <= 1.0 for r in _rows(out) if r["phase"] == 1)


def test_scores_are_mean_foreground_iou_and_dice():
    label = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    label[0, 0, :2] = 1  # image 0: class 1 in the top half; image 1: class 2 in the left half, no class 1
    label[1, 0, :, :2] = 2
    pred = label.clone()
    pred[0, 0, 2] = 1  # image 0: class 1 predicted on 12 pixels, 8 right: IoU 8/12, Dice 16/20
    pred[1, 0, :, 2] = 2  # image 1: class 2 on 12 pixels, 8 right
    scores = ValidationScores(3)
    scores.add(torch.nn.functional.one_hot(pred[:, 0], 3).permute(0, 3, 1, 2).float(), label)
    result = scores.result()
    # per class the mean over images whose reference has it (image 1 has no class 1), then over classes
    assert result["iou"] == pytest.approx(8 / 12) and result["dice"] == pytest.approx(16 / 20)
    assert result["dice_per_class"] == pytest.approx([16 / 20, 16 / 20])


# -- SIGKILL and resume ------------------------------------------------------------------------------------

CHILD = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from nas_ops.bixnas.search import search
search(**json.loads(sys.argv[1]))
"""


def _start(kwargs: dict, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(kwargs)], cwd=REPO_ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)


def _rows(out: Path) -> list[dict]:
    path = out / "search_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the search ended before the kill point: give the tiny search a larger budget"
        assert time.monotonic() < deadline, "the kill point was not reached in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _mid_phase1(out: Path) -> bool:
    return len(_rows(out)) >= 2 and not (out / "phase1_result.json").exists()


def _mid_phase2(out: Path) -> bool:  # stage dec2 done, inside stage enc2
    rows = _rows(out)
    return any(r.get("event") == "stage_done" for r in rows) and any(r["phase"] == 2 and r.get("stage") == 4
                                                                        and "epoch" in r for r in rows)


@pytest.mark.parametrize("when", ["phase1", "phase2"])
def test_sigkill_resume_equals_uninterrupted_search(reference, tiny_dataset, tmp_path, when):
    ref_out, _ = reference
    out, log = tmp_path / "run", tmp_path / "child.log"
    kwargs = {"dataset_dir": str(tiny_dataset), "output_dir": str(out), **TINY, "plots": False}
    proc = _start(kwargs, log)
    _kill_when(proc, lambda: (_mid_phase1 if when == "phase1" else _mid_phase2)(out))
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "phase2_result.json").exists()
    proc = _start(kwargs, log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert ("Phase 1: resuming at epoch" if when == "phase1" else "Phase 2: resuming at stage") in log.read_text()
    assert (out / "genotype.json").read_bytes() == (ref_out / "genotype.json").read_bytes()
    ref_pareto = sorted(p.name for p in (ref_out / "pareto").iterdir())
    assert sorted(p.name for p in (out / "pareto").iterdir()) == ref_pareto
    for name in ref_pareto:
        assert (out / "pareto" / name).read_bytes() == (ref_out / "pareto" / name).read_bytes()
    assert (out / "phase1_genotype.json").read_bytes() == (ref_out / "phase1_genotype.json").read_bytes()
    # every loss, IoU and Dice of every epoch and every sample is the same float
    for name in ("phase1_result.json", "phase2_result.json"):
        got, want = (json.loads((d / name).read_text()) for d in (out, ref_out))
        assert _timeless(got) == _timeless(want), name


def _timeless(doc):
    """A result without its wall-clock times."""
    if isinstance(doc, dict):
        return {k: _timeless(v) for k, v in doc.items() if k != "seconds"}
    if isinstance(doc, list):
        return [_timeless(v) for v in doc]
    return doc
