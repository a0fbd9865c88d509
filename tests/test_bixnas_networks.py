"""BiX-NAS networks: BiO-Net, the BiO-Net++ supernet and BiX-Net against the reference sizes, shapes,
gradients, dead-block analysis, genotype round trip, Phase-1 extraction, Phase-2 shared head, bad specs."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas_ops.bixnas.bionet import BiONet, bionet_genotype
from nas_ops.bixnas.network import BiXNet
from nas_ops.bixnas.space import (
    RELEASED_SKIP_SETS,
    analyse,
    bionet_pp_genotype,
    bixnet_genotype,
    full_skip_sets,
    make_spec,
    normalise_skip_sets,
    released_genotype,
    stage_name,
)
from nas_ops.bixnas.supernet import BiXSupernet, selection_fuse
from nas_ops.cost_model import count_macs, count_params
from nas_ops.errors import GenotypeError
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network

torch.set_num_threads(1)

GENOTYPES = Path(__file__).resolve().parents[1] / "bundles" / "bixnas" / "genotypes"
FULL = (3, 512, 512)


@pytest.fixture(scope="module")
def costs():
    """Params and conv MACs at 3x512x512, 1 class, each network built and run once."""
    released = Genotype.load(GENOTYPES / "bixnet_released.json").replace(out_channels=1)
    kept = released.replace(spec={**released.spec, "keep_dead_bridge": True})
    nets = {
        "bionet": build_network(Genotype.load(GENOTYPES / "bionet.json").replace(out_channels=1)),
        "supernet": BiXSupernet(2, 3, 1),
        "bixnet": build_network(released),
        "bixnet_dead_bridge": build_network(kept),
        "bionet_pp": build_network(Genotype.load(GENOTYPES / "bionet_pp.json").replace(out_channels=1)),
    }
    return {name: (count_params(net), count_macs(net, FULL)) for name, net in nets.items()}


# -- reference sizes ---------------------------------------------------------------------------------------


def test_bionet_reference_size(costs):
    params, macs = costs["bionet"]
    assert params == 14_996_289
    assert macs == 92_643_786_752 and round(macs / 1e9, 2) == 92.64
    # fold_first_skip: the 4 first-iteration convs over concat(x, x) run over x, half their MACs
    folded = BiONet(2, 3, 1, fold_first_skip=True)
    half = sum((256 // 2**lv) ** 2 * 9 * (32 * 2**lv) ** 2 for lv in range(4))
    assert count_macs(folded, FULL) == 92_643_786_752 - half == 90_227_867_648
    assert count_params(folded) == 14_996_289
    assert count_params(BiONet(2, 3, 1, iterations=3, integrate=False)) == 14_977_857


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_bionet_speed_choices_keep_the_function(spatial_dims):
    """fold_first_skip and the channels-last layout change neither outputs nor gradients (float64, eval mode)."""
    torch.manual_seed(0)
    shape = (2, 3, *[64] * spatial_dims) if spatial_dims == 2 else (2, 3, 32, 32, 32)
    x = torch.randn(*shape, dtype=torch.float64)
    reference = BiONet(spatial_dims, 3, 2, iterations=2, multiplier=0.25).double().eval()
    reference.channels_last = False
    want = reference(x)
    want.square().mean().backward()
    for fold in (False, True):
        for channels_last in ((False, True) if spatial_dims == 2 else (False,)):
            net = BiONet(spatial_dims, 3, 2, iterations=2, multiplier=0.25, fold_first_skip=fold).double().eval()
            net.load_state_dict(reference.state_dict())
            net.channels_last = channels_last
            got = net(x)
            assert got.is_contiguous()
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
            got.square().mean().backward()
            for p, q in zip(net.parameters(), reference.parameters(), strict=True):
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12)


def test_bixnet_and_supernet_layout_keeps_the_function():
    """2D BiX-Net and the supernet run channels-last; outputs and gradients equal the channels-first run (float64,
    eval mode)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    for make in (lambda: build_network(released_genotype()), lambda: BiXSupernet(2, 3, 2)):
        results = []
        reference = make().double().eval()
        for channels_last in (True, False):
            net = make().double().eval()
            net.load_state_dict(reference.state_dict())
            net.channels_last = channels_last
            state = net.begin(x)
            assert state.stem.is_contiguous(memory_format=torch.channels_last) == channels_last
            out = net(x) if isinstance(net, BiXNet) else net.forward_fixed(x, RELEASED_SKIP_SETS)
            assert out.is_contiguous()
            out.square().mean().backward()
            results.append((out, [p.grad for p in net.parameters() if p.grad is not None]))
        (a, grads_a), (b, grads_b) = results
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert len(grads_a) == len(grads_b) > 0
        for ga, gb in zip(grads_a, grads_b, strict=True):
            torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_bionet_2d_gradients_stay_channels_last():
    """Every batch norm of 2D BiO-Net gets a channels-last contiguous gradient (the CPU batch norm backward is
    ~10x slower on the strided channel slices a plain concatenation hands back)."""
    torch.manual_seed(0)
    net = BiONet(2, 3, 2, iterations=2, multiplier=0.25)
    layouts = []

    def record(module, grad_input, grad_output):
        layouts.append(grad_output[0].is_contiguous(memory_format=torch.channels_last))

    handles = [m.register_full_backward_hook(record) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    net(torch.randn(2, 3, 64, 64)).square().mean().backward()
    for h in handles:
        h.remove()
    assert len(layouts) == 2 * (4 * 6 + 3) + 3 + 2 and all(layouts)  # per iteration: levels, bridge; stem, head


def test_supernet_reference_size(costs):
    params, macs = costs["supernet"]
    net = BiXSupernet(2, 3, 1)
    selection = sum(p.numel() for p in net.selection.parameters())
    assert selection == 20 * 5 * 3  # the 20 searching blocks of stages 1..5
    # the authors' code also creates matrices for the 4 first-stage encoder blocks, which its forward never reads
    assert params == 425_676 and params + 4 * 5 * 3 == 425_736
    assert macs == 34_004_664_320


def test_bixnet_released_reference_size(costs):
    # the authors' count runs the bridge every iteration although no alive decoder block reads it
    assert costs["bixnet_dead_bridge"] == (381_984, 27_719_499_776)
    bridge_params, bridge_macs = 2 * (48 * 48 * 9 + 2 * 48), 3 * 2 * 16 * 16 * 48 * 48 * 9
    assert costs["bixnet"] == (381_984 - bridge_params, 27_719_499_776 - bridge_macs) == (340_320, 27_687_649_280)


def test_bionet_pp_plain_size(costs):
    assert costs["bionet_pp"] == (425_676 - 300, 34_004_664_320)


# -- shapes and gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 3, 64, 64)), (3, (2, 3, 32, 32, 32))])
def test_output_shapes_2d_and_3d(spatial_dims, shape):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    want = (shape[0], 2, *shape[2:])
    nets = [
        BiONet(spatial_dims, 3, 2, iterations=2, multiplier=0.25),
        build_network(released_genotype(spatial_dims=spatial_dims)),
        build_network(bionet_pp_genotype(spatial_dims=spatial_dims)),
    ]
    for net in nets:
        assert net(x).shape == want
    supernet = BiXSupernet(spatial_dims, 3, 2)
    assert supernet(x).shape == want
    assert supernet.forward_fixed(x, RELEASED_SKIP_SETS).shape == want


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    for net in (build_network(released_genotype()), BiXSupernet(2, 3, 2)):
        net(x).square().mean().backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert missing == []
        assert all(p.grad.abs().sum() > 0 for p in net.parameters())


# -- dead blocks -------------------------------------------------------------------------------------------


def test_released_dead_blocks_match_the_paper():
    live = analyse(normalise_skip_sets(RELEASED_SKIP_SETS, 3))
    assert live.dead() == {"enc0": (2, 3), "dec0": (1, 3), "enc1": (2, 3), "dec1": (0, 1), "enc2": (0, 3), "dec2": ()}
    assert live.built_levels("enc") == (0, 1, 2) and live.built_levels("dec") == (0, 1, 2, 3)
    assert live.bridge == (False, False, False)
    net = build_network(released_genotype())
    assert sorted(net.convs) == ["dec_level0", "dec_level1", "dec_level2", "dec_level3",
                                 "enc_level0", "enc_level1", "enc_level2"]
    assert len(net.norms) == 14 and net.bridge is None
    text = net.summary()
    assert "dead blocks: 10 of 24" in text and "enc levels built: 0, 1, 2 (not built: 3)" in text
    assert re.search(r"enc2\s+\[2,3,4\] dead\s+\[4\]\s", text)


def test_pruning_does_not_change_the_function():
    """BiX-Net with supernet weights == supernet with the same fixed skip sets; the dead bridge changes nothing."""
    torch.manual_seed(0)
    supernet = BiXSupernet(2, 3, 2).eval()
    x = torch.randn(1, 3, 64, 64)
    for sets in (RELEASED_SKIP_SETS, full_skip_sets(3)):
        for keep in (False, True):
            net = BiXNet(2, 3, 2, sets, keep_dead_bridge=keep).eval()
            sd = supernet.state_dict()
            net.load_state_dict({k: sd[k] for k in net.state_dict()}, strict=True)
            with torch.no_grad():
                assert torch.allclose(net(x), supernet.forward_fixed(x, sets), atol=1e-6)


# -- genotypes ---------------------------------------------------------------------------------------------


def test_shipped_genotypes_are_the_generated_ones():
    assert Genotype.load(GENOTYPES / "bixnet_released.json") == released_genotype()
    assert Genotype.load(GENOTYPES / "bionet_pp.json") == bionet_pp_genotype()
    assert Genotype.load(GENOTYPES / "bionet.json") == bionet_genotype()
    assert released_genotype().out_channels == 2


@pytest.mark.parametrize("genotype", [released_genotype(), bionet_genotype(multiplier=0.25, iterations=2)],
                         ids=["bixnet", "bionet"])
def test_genotype_round_trip(tmp_path, genotype):
    loaded = Genotype.load(genotype.save(tmp_path / "g.json"))
    assert loaded == genotype
    torch.manual_seed(0)
    a, b = build_network(genotype), build_network(loaded)
    assert count_params(a) == count_params(b)
    b.load_state_dict(a.state_dict(), strict=True)
    a.eval(), b.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


# -- Phase 1 -----------------------------------------------------------------------------------------------


def test_selection_matrix_extraction():
    net = BiXSupernet(2, 3, 2)
    picks = {(1, 0): [3, 0, 3], (2, 3): [4, 4, 4], (5, 2): [1, 2, 0]}
    with torch.no_grad():
        for s in range(1, 6):
            for lv in range(4):
                m = net.selection[f"{stage_name(s)}_level{lv}"]
                m.zero_()
                for col, row in enumerate(picks.get((s, lv), [0, 1, 2])):
                    m[row, col] = 1.0
    sets = net.candidate_sets()
    assert sets[0] == ((0,), (0,), (0,), (0,))
    assert sets[1][0] == (0, 3) and sets[2][3] == (4,) and sets[5][2] == (0, 1, 2) and sets[3][1] == (0, 1, 2)
    genotype = Genotype.from_dict(bixnet_genotype(sets).to_dict())
    assert genotype.spec["stages"][1]["inputs"][0] == [0, 3]
    assert build_network(genotype)(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_selection_fuse_matches_the_authors_formulation():
    """Stacked candidates x gumbel soft one-hots, unique picks averaged together with x (authors' Block)."""
    torch.manual_seed(1)
    tensors = [torch.randn(2, 4, 8, 8) for _ in range(5)]
    matrix = torch.randn(5, 3)
    matrix[:, 2] = matrix[:, 0] + 0.0  # two columns pick the same input
    torch.manual_seed(7)
    ours = selection_fuse(matrix, tensors)
    torch.manual_seed(7)
    score = F.gumbel_softmax(matrix, dim=0)
    mixed = torch.matmul(torch.stack(tensors, dim=-1), score)  # (B, C, H, W, 3)
    unique, inverse, counts = torch.unique(matrix.argmax(dim=0), return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse].float()
    ref = ((mixed * weights).sum(dim=-1) + tensors[0]) / (unique.numel() + 1)
    assert unique.numel() == 2
    assert torch.allclose(ours, ref, atol=1e-6)


# -- Phase 2 shared head -----------------------------------------------------------------------------------


def test_shared_head_equals_whole_network():
    torch.manual_seed(0)
    net = BiXSupernet(2, 3, 2).eval()
    x = torch.randn(2, 3, 64, 64)
    head_sets = full_skip_sets(3)
    tails = [RELEASED_SKIP_SETS, (((0,),) * 4,) + tuple(((0, 1), (3,), (2, 4), (0, 3)) for _ in range(5))]
    with torch.no_grad():
        for stage in (1, 3, 5):
            head = net.run_stages(net.begin(x), head_sets, end_stage=stage)
            for tail in tails:
                sets = head_sets[:stage] + tuple(tail[stage:])
                out = net.finish(net.run_stages(head, sets, prune=True))
                assert torch.allclose(out, net.forward_fixed(x, sets), atol=1e-6)


# -- bad specs ---------------------------------------------------------------------------------------------


def _bixnet_doc(edit):
    doc = released_genotype().to_dict()
    edit(doc["spec"])
    return doc


@pytest.mark.parametrize("edit, field, problem", [
    (lambda s: s["stages"][2]["inputs"][1].__setitem__(0, 5), "spec.stages[2].inputs[1][0]", "index out of range"),
    (lambda s: s["stages"][1]["inputs"][1].append(2), "spec.stages[1].inputs[1][2]", "duplicate input index 2"),
    (lambda s: s["stages"][3]["inputs"][2].clear(), "spec.stages[3].inputs[2]", "empty list"),
    (lambda s: s["stages"][0]["inputs"].__setitem__(1, [0, 4]), "spec.stages[0].inputs[1]", "must be [0]"),
    (lambda s: s["stages"][1].__setitem__("kind", "enc"), "spec.stages[1].kind", "must be 'dec'"),
    (lambda s: s["stages"][4].__setitem__("iteration", 1), "spec.stages[4].iteration", "iteration 2"),
    (lambda s: s["stages"][5].__setitem__("inputs", [[0]] * 3), "spec.stages[5].inputs", "list of 4 input lists"),
    (lambda s: s["stages"].pop(), "spec.stages", "expected 6 extraction stages"),
    (lambda s: s.__setitem__("width", 0), "spec.width", "positive integer"),
    (lambda s: s.__setitem__("keep_dead_bridge", 1), "spec.keep_dead_bridge", "true or false"),
    (lambda s: s.__setitem__("depth", 4), "spec.depth", "unknown key"),
])
def test_bad_bixnet_spec_is_refused_naming_the_field(edit, field, problem):
    with pytest.raises(GenotypeError, match=re.escape(f"field '{field}': ") + ".*" + re.escape(problem)):
        Genotype.from_dict(_bixnet_doc(edit))


@pytest.mark.parametrize("change, field", [
    ({"iterations": 0}, "spec.iterations"), ({"integrate": 1}, "spec.integrate"),
    ({"multiplier": 0.01}, "spec.multiplier"), ({"unit_order": "bn-conv"}, "spec.unit_order"),
    ({"levels": 4}, "spec.levels"), ({"fold_first_skip": "yes"}, "spec.fold_first_skip"),
])
def test_bad_bionet_spec_is_refused_naming_the_field(change, field):
    doc = bionet_genotype().to_dict()
    doc["spec"].update(change)
    with pytest.raises(GenotypeError, match=re.escape(f"field '{field}'")):
        Genotype.from_dict(doc)


def test_programmatic_skip_sets_are_checked():
    sets = [[list(ins) for ins in stage] for stage in RELEASED_SKIP_SETS]
    sets[1][2] = [7]
    with pytest.raises(ValueError, match=re.escape("skip_sets[1][2][0]: index out of range")):
        make_spec(sets)
    with pytest.raises(ValueError, match="expected 6 extraction stages"):
        BiXSupernet(2, 3, 2).forward_fixed(torch.randn(1, 3, 32, 32), RELEASED_SKIP_SETS[:4])
