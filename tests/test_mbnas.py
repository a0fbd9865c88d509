"""MB-NAS: space size against enumeration, the U-Net point, canonical form, Local Search rules, cache, SIGKILL
resume, refusal of bad genotypes, blocks, baselines and one real (tiny) search through the workflow."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import _mbnas_fake
import numpy as np
import pytest
import torch

from nas_ops.baselines.unet import UNet
from nas_ops.cost_model import count_params
from nas_ops.errors import GenotypeError
from nas_ops.genotype import Genotype
from nas_ops.mbnas.blocks import BLOCKS, make_block
from nas_ops.mbnas.network import MBNASNet
from nas_ops.mbnas.space import (
    CHANNELS,
    STEM,
    Node,
    SearchSpace,
    arch_key,
    canonical,
    make_genotype,
    node_levels,
)
from nas_ops.registry import build_network

torch.set_num_threads(1)

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
GENOTYPES = REPO_ROOT / "bundles" / "mbnas" / "genotypes"


# -------------------------------------------------------------------------------------------------------- space


def _all_encodings(space: SearchSpace):
    """Every raw encoding: channels, block, kernel and skip value (null, the stem or any earlier node) per node."""
    per_node = []
    for i in range(space.num_nodes):
        skips = [None, *range(STEM, i)]
        per_node.append(list(itertools.product(CHANNELS, space.blocks, space.kernel_sizes, skips)))
    for combo in itertools.product(*per_node):
        yield tuple(Node(*c) for c in combo)


@pytest.mark.parametrize(
    "space",
    [SearchSpace(5, 2, ("vgg",), (3,)), SearchSpace(3, 2, ("vgg", "dense"), (3, 7)), SearchSpace(4, 1, ("vgg",), (3,))],
    ids=["5nodes-depth2", "3nodes-depth2-2blocks-2kernels", "4nodes-depth1"],
)
def test_size_formula_counts_exactly_the_valid_canonical_networks(space):
    valid_canonical, keys = 0, set()
    for nodes in _all_encodings(space):
        if space.is_valid(nodes):
            keys.add(arch_key(nodes))
            valid_canonical += canonical(nodes) == nodes
    assert valid_canonical == len(keys) == space.size()
    assert space.size() == (len(space.blocks) * len(space.kernel_sizes)) ** space.num_nodes * space.count_topologies()


def test_full_space_size_is_pinned():
    space = SearchSpace()  # 10 nodes, depth <= 5, 4 blocks, kernels {3, 5, 7}
    assert space.count_topologies() == 28_897_869
    assert space.size() == 12**10 * 28_897_869
    assert f"{space.size():.4e}" == "1.7893e+18"  # the paper: 1.14e18 (see bundles/mbnas/docs/README.md)


def test_random_networks_are_valid_and_neighbours_differ_in_one_variable():
    space = SearchSpace()
    rng = np.random.default_rng(0)
    for _ in range(30):
        nodes = space.random(rng)
        space.check(nodes)
        assert canonical(nodes) == nodes
        for var in ("level[3]", "skip[6]", "block[1]", "kernel[9]"):
            kind, at = var[:-1].split("[")
            for value, cand in space.neighbours(nodes, var):
                space.check(cand)
                assert space.value(cand, var) == value != space.value(nodes, var)
                if kind in ("block", "kernel"):  # everything else untouched
                    assert [n for i, n in enumerate(cand) if i != int(at)] == [n for i, n in enumerate(nodes)
                                                                            if i != int(at)]
                if kind == "level":  # only this level moves
                    a, b = node_levels(nodes), node_levels(cand)
                    assert [x for i, x in enumerate(a) if i != int(at)] == [x for i, x in enumerate(b) if i != int(at)]


# -------------------------------------------------------------------------------------------------- the U-Net


def test_unet_genotype_builds_the_standard_unet():
    base, cin, k_out = 16, 1, 3
    g = Genotype.load(GENOTYPES / "unet.json")
    assert [Node(**n) for n in g.spec["nodes"]] == list(SearchSpace().unet())
    net = build_network(g)
    widths = [base * 2**lvl for lvl in range(6)]
    unit = lambda a, b: 9 * a * b + 2 * b  # noqa: E731  3x3 conv without bias + BN(scale, shift)
    expected = unit(cin, widths[0]) + unit(widths[0], widths[0])  # stem
    for lvl in range(1, 6):  # downscaling cells: pool, VGG block to twice the width
        expected += unit(widths[lvl - 1], widths[lvl]) + unit(widths[lvl], widths[lvl])
    for lvl in range(5):  # upscaling cells: 2x2 transposed conv with bias, concat skip, VGG block
        expected += 4 * widths[lvl + 1] * widths[lvl] + widths[lvl]
        expected += unit(2 * widths[lvl], widths[lvl]) + unit(widths[lvl], widths[lvl])
    expected += widths[0] * k_out + k_out  # 1x1 head
    assert count_params(net) == expected == 7_778_355

    # the same network as the plain U-Net baseline: copy its weights across, get the same output
    ref = UNet(2, cin, k_out, widths).eval()
    pairs = [("stem.", "encoder.0."), ("head.", "head.")]
    pairs += [(f"cells.{k}.block.", f"encoder.{k + 1}.") for k in range(5)]
    pairs += [(f"cells.{5 + m}.resample.", f"up.{4 - m}.") for m in range(5)]
    pairs += [(f"cells.{5 + m}.block.", f"decoder.{4 - m}.") for m in range(5)]
    ref_state = ref.state_dict()
    state = {}
    for mine, theirs in pairs:
        state.update({mine + k[len(theirs):]: v for k, v in ref_state.items() if k.startswith(theirs)})
    net.load_state_dict(state, strict=True)
    x = torch.randn(2, cin, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), ref(x), atol=1e-5)


# --------------------------------------------------------------------------------------------- canonical form


def test_canonical_form_merges_equivalent_encodings(tmp_path):
    space = SearchSpace()
    unet = space.unet()
    # a skip from the preceding node is the cell's input already: the same network as no skip
    loop = list(unet)
    loop[3] = replace(loop[3], skip=2)  # node 2 precedes node 3
    loop[0] = replace(loop[0], skip=STEM)  # the stem precedes node 0
    assert loop != list(unet) and canonical(loop) == unet and arch_key(loop) == arch_key(unet)
    doc = make_genotype(unet, 1, 3, base_channels=8).to_dict()
    doc["spec"]["nodes"] = [n.to_dict() for n in loop]
    (tmp_path / "g.json").write_text(json.dumps(doc))
    a, b = build_network(Genotype.load(tmp_path / "g.json")), build_network(make_genotype(unet, 1, 3, base_channels=8))
    assert count_params(a) == count_params(b)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))
    # and distinct canonical networks keep distinct keys
    rng = np.random.default_rng(1)
    sample = {canonical(space.random(rng)) for _ in range(300)}
    assert len({arch_key(n) for n in sample}) == len(sample)


# ------------------------------------------------------------------------------------------------ Local Search


def _accepts_only_strict_improvements(result):
    current = None
    for e in result["log"]:
        if e["accepted"]:
            assert current is None or e["score"] > current, e
            current = e["score"]
    same_var = {}
    for e in result["log"]:  # per visit of a variable, the accepted value is the best of that visit
        same_var.setdefault((e["phase"], e["sweep"], e["variable"]), []).append(e)
    for entries in same_var.values():
        acc = [e for e in entries if e["accepted"]]
        if acc:
            assert acc[0]["score"] == max(e["score"] for e in entries)
    assert result["best_score"] == current == max(e["score"] for e in result["log"])


def test_local_search_accepts_only_strict_improvements_and_stops_on_budget(tmp_path):
    log = tmp_path / "calls.log"
    result = _mbnas_fake.run_search(str(tmp_path / "a"), budget=25, log=str(log))
    assert result["stop"] == "budget" and result["evaluations"] == 25 == len(result["log"])
    assert len(result["moves"]) >= 3
    _accepts_only_strict_improvements(result)
    done = [line for line in log.read_text().splitlines() if line.startswith("done")]
    assert len(done) == 25 * 2 == len(set(done))  # 2 trainings (fold x seed) per evaluation, none repeated
    text = (tmp_path / "a" / "search_log.txt").read_text()
    assert text.count("\n") == 25 + 3 and "Dv3 Dv3 Dv3 Uv3+n1 Uv3+n0 Uv3+stem" in text


def test_local_search_with_a_flat_score_stops_after_one_sweep(monkeypatch, tmp_path):
    monkeypatch.setattr(_mbnas_fake, "fake_score", lambda genotype, fold, seed, budget: {"score": 0.5})
    result = _mbnas_fake.run_search(str(tmp_path), budget=1000, variant="micro")
    assert result["stop"] == "local optimum" and result["sweeps"] == 1 and result["moves"] == []
    # micro: 6 blocks x 3 other values + 6 kernels x 2 other values, plus the start
    assert result["evaluations"] == 1 + 6 * 3 + 6 * 2


def test_cache_hits_are_counted_and_nothing_is_trained_twice(tmp_path):
    log = tmp_path / "calls.log"
    result = _mbnas_fake.run_search(str(tmp_path / "s"), budget=200, variant="macro", log=str(log))
    assert result["stop"] == "local optimum" and result["sweeps"] >= 2
    keys = [e["key"] for e in result["log"]]
    assert len(keys) == len(set(keys)) == result["evaluations"]
    assert result["cache_hits"] > 0  # revisits: the previous network is a neighbour of the accepted one
    done = [line for line in log.read_text().splitlines() if line.startswith("done")]
    assert len(done) == 2 * result["evaluations"]
    for e in result["log"]:  # macro keeps VGG 3x3 cells
        assert all(tok[1:3] == "v3" for tok in e["key"].split())


@pytest.mark.parametrize("variant", ["micro", "bilevel"])
def test_variants_search_their_own_variables(tmp_path, variant):
    result = _mbnas_fake.run_search(str(tmp_path), budget=60, variant=variant, start="random")
    unet_topology = [tok[0] + tok[3:] for tok in arch_key(SearchSpace(6, 3).unet()).split()]
    variables = {e["variable"].split("[")[0] for e in result["log"][1:]}
    if variant == "micro":
        assert variables <= {"block", "kernel"}
        assert all([t[0] + t[3:] for t in e["key"].split()] == unet_topology for e in result["log"])
    else:
        phases = [e["phase"] for e in result["log"]]
        assert phases == sorted(phases) and 1 in phases
        assert {e["variable"].split("[")[0] for e in result["log"] if e["phase"] == 1} == {"kernel"}
        assert all(t[1] == "v" for e in result["log"] for t in e["key"].split())
    _accepts_only_strict_improvements(result)


def _run(out: Path, log: Path, budget: int, sleep: float) -> subprocess.Popen:
    code = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import _mbnas_fake; _mbnas_fake.main(sys.argv[1:])"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, str(out), str(budget), str(log), str(sleep)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _kill_mid_training(proc: subprocess.Popen, log: Path, after_done: int, timeout: float = 90.0) -> None:
    """SIGKILL the search while a training is in flight (last line 'start') after ``after_done`` finished ones."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if sum(line.startswith("done") for line in lines) >= after_done and lines[-1].startswith("start"):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"search ended before it could be killed: {proc.stderr.read()[-2000:]}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("timed out waiting to kill the search")


def test_sigkill_resume_equals_uninterrupted_search(tmp_path):
    budget, sleep = 12, 0.25
    ref = _mbnas_fake.run_search(str(tmp_path / "ref"), budget, log=str(tmp_path / "ref.log"))
    out, log = tmp_path / "killed", tmp_path / "killed.log"
    for after in (5, 13):  # killed twice: in the start's sweep and later
        _kill_mid_training(_run(out, log, budget, sleep), log, after)
    proc = _run(out, log, budget, sleep)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    resumed = json.loads(stdout.strip().splitlines()[-1])
    assert resumed == ref  # same network, same evaluation log, same cache hits and moves
    done = [line for line in log.read_text().splitlines() if line.startswith("done")]
    ref_done = [line for line in (tmp_path / "ref.log").read_text().splitlines() if line.startswith("done")]
    assert done == ref_done and len(done) == len(set(done))  # no training finished twice
    assert (out / "search_log.txt").read_text() == (tmp_path / "ref" / "search_log.txt").read_text()


# ------------------------------------------------------------------------------------------------ bad genotypes


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda s: s.update(width=3), "spec.width", "unknown key"),
        (lambda s: s.update(base_channels=2), "spec.base_channels", ">= 4"),
        (lambda s: s.update(nodes=[]), "spec.nodes", "non-empty"),
        (lambda s: s["nodes"][2].update(channels="triple"), "spec.nodes[2].channels", "must be one of"),
        (lambda s: s["nodes"][4].update(block="mlp"), "spec.nodes[4].block", "must be one of"),
        (lambda s: s["nodes"][1].update(kernel=4), "spec.nodes[1].kernel", "[3, 5, 7]"),
        (lambda s: s["nodes"][1].pop("kernel"), "spec.nodes[1].kernel", "missing"),
        (lambda s: s["nodes"][1].update(dilation=2), "spec.nodes[1].dilation", "unknown key"),
        (lambda s: s["nodes"][7].update(skip=0), "spec.nodes[7].skip", "equal sizes"),
        (lambda s: s["nodes"][7].update(skip=8), "spec.nodes[7].skip", "earlier node"),
        (lambda s: s["nodes"][7].update(skip="n2"), "spec.nodes[7].skip", "null or an integer"),
        (lambda s: s["nodes"][9].update(channels="equal"), "spec.nodes[9].channels", "input resolution"),
        (lambda s: s.update(max_depth=4), "spec.nodes[4].channels", "deeper than max_depth 4"),
        (lambda s: s["nodes"][0].update(channels="half"), "spec.nodes[0].channels", "above the input"),
    ],
)
def test_bad_genotype_specs_are_refused_naming_the_field(tmp_path, change, field, words):
    doc = json.loads((GENOTYPES / "unet.json").read_text())
    change(doc["spec"])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(GenotypeError) as err:
        Genotype.load(path)
    assert str(path) in str(err.value) and f"'{field}'" in str(err.value) and words in str(err.value)


# ----------------------------------------------------------------------------------------- blocks and baselines


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_block_keeps_the_size_and_trains(spatial_dims):
    for block in BLOCKS:
        net = make_block(block, spatial_dims, 6, 8, kernel_size=5)
        x = torch.randn(2, 6, *([8] * spatial_dims))
        y = net(x)
        assert y.shape == (2, 8, *([8] * spatial_dims)), block
        y.mean().backward()
        assert all(p.grad is not None for p in net.parameters()), block


def test_a_mixed_network_runs_in_3d_and_every_parameter_gets_a_gradient():
    nodes = SearchSpace(4, 2).random(np.random.default_rng(3))
    net = MBNASNet(3, 2, 3, nodes, base_channels=4)
    out = net(torch.randn(1, 2, 16, 16, 16))
    assert out.shape == (1, 3, 16, 16, 16)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_resunet_baseline_builds_without_torchvision():
    code = (
        "import sys; sys.modules['torchvision'] = None\n"
        "import torch; torch.set_num_threads(1)\n"
        "from nas_ops.registry import build_network; from nas_ops.cost_model import count_params\n"
        f"net = build_network({str(GENOTYPES / 'resunet.json')!r})\n"
        "print(count_params(net), tuple(net(torch.zeros(1, 1, 64, 64)).shape))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.split("\n")[0] == "32103699 (1, 3, 64, 64)"


# ------------------------------------------------------------------------------------- a real search, tiny


def test_real_search_through_the_workflow_writes_every_output(tmp_path, monkeypatch):
    from nas_ops.data import setup
    from nas_ops.data.demo import make_mri_dataset
    from nas_ops.mbnas.evaluate import train_and_score
    from nas_ops.mbnas.search import search

    data = make_mri_dataset(tmp_path / "data", num_patients=5, shape=(32, 32, 8))
    kw = dict(variant="micro", budget=2, n_folds=5, folds=[0], seeds=[0], epochs=2, batch_size=8,
              spatial_size=[32, 32], base_channels=4, num_nodes=4, max_depth=2, device="cpu")
    validations = []
    real_validate = setup.validate_dataset
    monkeypatch.setattr(setup, "validate_dataset", lambda ds, deep=True: (validations.append(deep),
                                                                          real_validate(ds, deep))[1])
    summary = search(data, tmp_path / "out", **kw)
    assert validations == [True]  # validated once by the search; its two trainings trust the fingerprint
    out = tmp_path / "out"
    for name in ("genotype.json", "search_state.pt", "search_result.json", "search_log.txt", "trajectory.png",
                 "genotype.png"):
        assert (out / name).is_file(), name
    assert summary["evaluations"] == 2 and summary["stop"] == "budget"
    g = Genotype.load(out / "genotype.json")
    assert g.method == "mbnas" and (g.in_channels, g.out_channels) == (1, 3)
    assert g.provenance["score"] == summary["best_score"]
    # a training is a pure function of (genotype, fold, seed, budget): the same numbers twice
    budget = {"dataset_dir": str(data), "epochs": 2, "batch_size": 8, "spatial_size": [32, 32], "device": "cpu"}
    a = train_and_score(g.to_dict(), 0, 0, budget)
    b = train_and_score(g.to_dict(), 0, 0, budget)
    assert a["score"] == b["score"] and a["loss"] == b["loss"] and len(a["val_dice"]) == 1
    # a candidate whose training step would not fit in memory_limit_gb is not trained: it scores 0
    tight = train_and_score(g.to_dict(), 0, 0, {**budget, "memory_limit_gb": 1e-4})
    assert tight["score"] == 0.0 and tight["loss"] == [] and "training needs about" in tight["skipped"]
    # resuming a finished search returns its result and rewrites nothing; changing what it searches is refused
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert search(data, out, **kw)["best_key"] == summary["best_key"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with pytest.raises(Exception, match="config.variant"):
        search(data, out, **{**kw, "variant": "macro"})


def test_ray_and_subprocess_backends_give_the_same_search_as_in_process(tmp_path):
    pytest.importorskip("ray")
    from nas_ops.data.demo import make_mri_dataset
    from nas_ops.mbnas.search import search

    data = make_mri_dataset(tmp_path / "data", num_patients=5, shape=(32, 32, 8))
    kw = dict(budget=3, folds=[0, 1], seeds=[0], epochs=1, batch_size=8, spatial_size=[32, 32], base_channels=4,
              num_nodes=4, max_depth=2, device="cpu", plots=False)
    logs = {}
    for backend in ("local", "ray", "subprocess"):
        search(data, tmp_path / backend, backend=backend, parallel_jobs=2, **kw)
        result = json.loads((tmp_path / backend / "search_result.json").read_text())
        logs[backend] = [(e["key"], e["score"]) for e in result["log"]]
    assert logs["local"] == logs["ray"] == logs["subprocess"] and len(logs["ray"]) == 3
