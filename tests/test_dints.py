"""The DiNTS comparison row: the decoded network equals MONAI's DiNTS of the same codes, its genotype is validated,
the search runs on the engine (warm-up, then architecture steps), resumes after SIGKILL to the same genotype,
refuses too much memory and a folder of the other variant, and runs as the C2FNAS bundle's ``dints`` variant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import DiNTS, TopologyInstance

from nas_ops.c2fnas.search import search as c2fnas_search
from nas_ops.cost_model import count_macs, count_params
from nas_ops.data import make_mri_dataset
from nas_ops.dints.config import DiNTSConfig
from nas_ops.dints.search import search
from nas_ops.dints.space import dints_genotype, path_ends, quiet, random_genotype
from nas_ops.dints.topology_search import DiNTSStep, supernet
from nas_ops.errors import GenotypeError, InputError
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network
from nas_ops.training.losses import make_loss

torch.set_num_threads(1)
REPO_ROOT = Path(__file__).resolve().parents[1]
# a tiny search: 6 volumes of 32^3 (4 train: 2 for the weights, 2 for the architecture; 2 validation)
TINY = {"patch_size": [16, 16, 16], "batch_size": 2, "samples_per_volume": 2, "channel_mul": 0.25,
        "num_blocks": 4, "num_depths": 3, "epochs": 6, "warmup_epochs": 3, "n_folds": 3, "device": "cpu",
        "num_threads": 1}


def decoded(seed: int, num_blocks: int = 12, num_depths: int = 4):
    """The codes MONAI's decode gives for seeded random architecture weights."""
    spec = random_genotype(seed, channel_mul=0.25, num_blocks=num_blocks, num_depths=num_depths).spec
    return tuple(np.asarray(spec[k]) for k in ("node_a", "arch_code_a", "arch_code_c"))


@pytest.fixture(scope="module")
def codes():
    return decoded(0, num_blocks=6)


def test_the_decoded_network_equals_monai_dints_without_the_stems_it_never_runs(codes):
    node_a, arch_code_a, arch_code_c = codes
    genotype = dints_genotype(node_a, arch_code_a, arch_code_c, 2, 3, channel_mul=0.25, num_blocks=6)
    reloaded = Genotype.from_dict(json.loads(json.dumps(genotype.to_dict())))  # through JSON, as a file does
    net = build_network(reloaded)
    torch.manual_seed(1)
    ref = DiNTS(quiet(TopologyInstance, arch_code=[arch_code_a.astype(np.float32), arch_code_c], channel_mul=0.25,
                      num_blocks=6, num_depths=4, spatial_dims=3),
                in_channels=2, num_classes=3, node_a=torch.from_numpy(node_a))
    state = ref.state_dict()
    net.load_state_dict({k: v for k, v in state.items() if k in net.state_dict()}, strict=True)
    dropped = sorted({k.split(".mod")[0] for k in state if k not in net.state_dict()})
    inactive = [f"stem_down.{d}" for d in range(4) if not node_a[0][d]]
    below = [f"stem_up.{d}" for d in range(4) if d > max(np.flatnonzero(node_a[-1]))]
    assert dropped == sorted(inactive + below)
    x = torch.randn(1, 2, 32, 32, 32)
    net.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))
        logits, features = net.forward_with_features(x)
    assert torch.equal(logits, net(x))
    sizes = [f.shape[2] for f in features]
    assert sizes == sorted(sizes) and sizes[-1] == 32  # deepest first, the last at full resolution
    assert count_params(net) == count_params(ref) - sum(state[k].numel() for k in state if k not in net.state_dict())
    with torch.device("meta"):
        meta = build_network(reloaded)
    assert count_macs(meta, (2, 32, 32, 32), device="meta") == count_macs(net, (2, 32, 32, 32))
    with pytest.raises(ValueError, match=r"input size \(24, 32, 32\) is not divisible by 16"):
        net(torch.randn(1, 2, 24, 32, 32))


def test_a_reference_decoding_has_its_known_size():
    genotype = dints_genotype(*decoded(0), 1, 3, channel_mul=0.25)
    net = build_network(genotype)
    assert (count_params(net), count_macs(net, (1, 32, 32, 32))) == (6_136_715, 564_641_792)
    assert net.total_stride == 16 and genotype.spec["num_blocks"] == 12


def _edit(genotype: Genotype, **spec) -> dict:
    return {**genotype.to_dict(), "spec": {**genotype.spec, **spec}}


def test_bad_dints_specs_are_refused_naming_the_field(codes, tmp_path):
    node_a, arch_code_a, arch_code_c = (a.astype(int).tolist() for a in codes)
    good = dints_genotype(node_a, arch_code_a, arch_code_c, 1, 3, num_blocks=6)
    ins, _ = path_ends(4)
    b, p = 0, next(p for p in range(10) if arch_code_a[0][p])
    cut = [row[:] for row in node_a]
    cut[b][ins[p]] = 0
    wrong_out = [row[:] for row in node_a]
    wrong_out[3] = [1 - v for v in wrong_out[3]]
    op5 = [row[:] for row in arch_code_c]
    op5[1][4] = 5
    empty = [row[:] for row in arch_code_a]
    empty[0] = [0] * 10
    cases = [
        ({"arch_code_c": op5}, "spec.arch_code_c[1][4]", "must be an integer in [0, 4], got 5"),
        ({"node_a": cut}, f"spec.arch_code_a[{b}][{p}]", f"path {p} reads level {ins[p]}, which node_a[{b}] marks"),
        ({"node_a": wrong_out}, "spec.node_a[3]", "the levels the active paths of block 2 reach"),
        ({"arch_code_a": empty}, "spec.arch_code_a[0]", "has no active path"),
        ({"num_blocks": 5}, "spec.node_a", "must be a list of 6 rows"),
        ({"channel_mul": 0.01}, "spec.channel_mul", "must be a number in [1/32, 8]"),
        ({"width": 3}, "spec.width", "unknown key"),
    ]
    for change, field, problem in cases:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(_edit(good, **change)))
        with pytest.raises(GenotypeError) as err:
            Genotype.load(path)
        assert f"{path}: field '{field}': " in str(err.value) and problem in str(err.value), str(err.value)


# -- the search --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return make_mri_dataset(tmp_path_factory.mktemp("dints") / "Task951_Tiny", num_patients=6, shape=(32, 32, 32))


@pytest.fixture(scope="module")
def reference(volumes, tmp_path_factory):
    out = tmp_path_factory.mktemp("dints_ref") / "run"
    return out, search(volumes, out, **TINY)


def test_search_warms_up_then_searches_and_reports_a_finished_run(reference, volumes):
    out, summary = reference
    genotype = Genotype.load(out / "genotype.json")
    assert genotype.method == "dints" and (genotype.in_channels, genotype.out_channels) == (1, 3)
    result = json.loads((out / "dints_result.json").read_text())
    assert result["arch_loss"][:3] == [None] * 3 and all(isinstance(v, float) for v in result["arch_loss"][3:])
    assert genotype.spec["arch_code_a"] == result["arch_code_a"] and summary["params"] == genotype.provenance[
        "params"] == count_params(build_network(genotype))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    tic = time.perf_counter()
    assert search(volumes, out, **TINY) == summary  # reported, nothing rerun or rewritten
    assert time.perf_counter() - tic < 10
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(InputError, match="field 'ram_cost_factor': this output_dir holds"):
        search(volumes, out, **{**TINY, "ram_cost_factor": 0.5})


def test_the_step_trains_the_weights_in_warm_up_and_both_afterwards():
    cfg = DiNTSConfig.from_values({**{k: TINY[k] for k in ("patch_size", "channel_mul", "num_depths")},
                                   "num_blocks": 2, "epochs": 4, "warmup_epochs": 2})
    torch.manual_seed(0)
    model = supernet(cfg, 1, 3)
    weights = [p for n, p in model.named_parameters() if "log_alpha" not in n]
    space = model.dints_space
    optimizer = torch.optim.SGD(weights, lr=0.1)
    arch_optimizer = torch.optim.Adam([space.log_alpha_a, space.log_alpha_c], lr=0.1)
    batch = {"image": torch.randn(2, 1, 16, 16, 16), "label": torch.randint(0, 3, (2, 1, 16, 16, 16))}
    step = DiNTSStep(model, make_loss("dice_ce"), optimizer, arch_optimizer, lambda epoch: [batch], cfg,
                     torch.device("cpu"))

    def snapshot():
        return [space.log_alpha_a.detach().clone(), space.log_alpha_c.detach().clone(), weights[0].detach().clone()]

    for epoch, codes_move in ((1, False), (2, True)):
        before = snapshot()
        step.begin_epoch(epoch)
        step(batch["image"], batch["label"])
        after = snapshot()
        assert not torch.equal(before[2], after[2])  # the weights always train
        assert (not torch.equal(before[0], after[0])) is codes_move
        assert (not torch.equal(before[1], after[1])) is codes_move
        assert (step.take_arch_losses() is not None) is codes_move
    assert all(p.requires_grad for p in model.parameters())  # both steps hand the flags back


def test_too_much_memory_and_bad_settings_are_refused_before_anything_is_written(volumes, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InputError, match=r"field 'batch_size': the DiNTS supernet's training needs about .* lower "
                                         r"batch_size \(at most 1 fits\) or patch_size or samples_per_volume, or set "
                                         r"memory_limit_gb"):
        search(volumes, out, memory_limit_gb=0.065, **TINY)
    with pytest.raises(InputError, match=r"field 'patch_size\[0\]': 20 must be a multiple of 8"):
        search(volumes, out, **{**TINY, "patch_size": [20, 16, 16]})
    with pytest.raises(InputError, match=r"field 'warmup_epochs': 6 leaves no epoch"):
        search(volumes, out, **{**TINY, "warmup_epochs": 6})
    assert not out.exists()


def test_a_search_folder_of_another_method_is_refused(volumes, reference, tmp_path):
    out, _ = reference
    common = {k: v for k, v in TINY.items() if k in ("n_folds", "device", "num_threads")}
    with pytest.raises(InputError, match=r"search_method.json: field 'method': .* holds a DiNTS search: give the "
                                         r"C2FNAS search its own output_dir"):
        c2fnas_search(volumes, out, **common)
    with pytest.raises(InputError, match=r"field 'search#epochz': unknown key"):
        search(volumes, tmp_path / "x", config={"epochz": 3}, **common)
    assert not (tmp_path / "x").exists()


CHILD = """
import json, logging, sys
import torch
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO)
from nas_ops.dints.search import search
kwargs = json.loads(sys.argv[1])
search(kwargs.pop("dataset_dir"), kwargs.pop("output_dir"), **kwargs)
"""


def test_sigkill_mid_search_resumes_to_the_same_genotype(reference, volumes, tmp_path):
    ref_out, _ = reference
    out, log = tmp_path / "run", tmp_path / "child.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    argv = [sys.executable, "-c", CHILD, json.dumps({"dataset_dir": str(volumes), "output_dir": str(out), **TINY})]

    def start() -> subprocess.Popen:
        with log.open("ab") as fh:
            return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)

    proc = start()
    deadline = time.monotonic() + 150
    while not (out / "dints_state.pt").is_file():  # an epoch checkpointed, the search not finished
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "dints_result.json").exists()
    assert start().wait(timeout=300) == 0, log.read_text()[-3000:]
    assert "DiNTS search: resuming at epoch" in log.read_text()
    for name in ("genotype.json", "dints_result.json"):
        assert (out / name).read_bytes() == (ref_out / name).read_bytes(), name


def test_the_dints_overlay_of_the_bundle_searches_and_its_genotype_trains(tmp_path):
    data = make_mri_dataset(tmp_path / "Task900_TinyMRI", num_patients=6, shape=(32, 32, 32), seed=0)
    out = tmp_path / "dints"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MEDSEG_NAS_DEBUG", None)
    common = ["--dataset_dir", str(data), "--output_dir", str(out), "--device", "cpu", "--num_threads", "1",
              "--n_folds", "3"]

    def bundle(workflow: str, *args: str, overlay: str | None = None) -> subprocess.CompletedProcess:
        files = [f"bundles/c2fnas/configs/{name}.json" for name in (workflow, overlay) if name]
        return subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(files),
                               *common, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)

    done = bundle("search", "--search#patch_size", "[16,16,16]", "--search#batch_size", "2",
                  "--search#channel_mul", "0.25", "--search#num_blocks", "3", "--search#num_depths", "3",
                  "--search#epochs", "2", "--search#warmup_epochs", "1", overlay="dints")
    assert done.returncode == 0, done.stderr[-3000:]
    assert Genotype.load(out / "search" / "genotype.json").method == "dints"
    done = bundle("train", "--epochs", "1", "--patch_size", "[32,32,32]")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "train" / "models" / "genotype.json").read_text())["method"] == "dints"
    # the C2FNAS search into the same folder: refused in one line, nothing touched
    before = (out / "search" / "genotype.json").read_bytes()
    done = bundle("search")
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith(
        f"error: {out / 'search' / 'search_method.json'}: field 'method': ")
    assert (out / "search" / "genotype.json").read_bytes() == before
