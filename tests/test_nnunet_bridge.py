"""nnU-Net v2 bridge: the adapter's deep-supervision outputs, strict checkpoints, plans export and its refusals,
trainer lookup, the comparison harness on synthetic summaries, and one end-to-end run of the stock nnU-Net CLI."""

import csv
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import stats

from nas_ops.baselines.unet import unet_genotype
from nas_ops.bixnas.bionet import bionet_genotype
from nas_ops.bixnas.space import RELEASED_SKIP_SETS, bixnet_genotype
from nas_ops.c2fnas.space import C2FNAS_PANC_LEVELS, C2FNAS_PANC_OPS, c2fnas_genotype
from nas_ops.cost_model import count_macs
from nas_ops.dints.space import random_genotype
from nas_ops.errors import GenotypeError, InputError
from nnunet_plans.compare import (
    ModelResult,
    collect,
    compare,
    parse_models,
    write_report,
)
from nnunet_plans.export import export_plans, net_strides, round_patch
from nnunet_plans.network import SearchedNetwork
from nnunet_plans.plans import network_cost
from nnunet_plans.trainers import TRAINERS, ext_trainer_dir

torch.set_num_threads(1)


def small_bixnet(spatial_dims: int, in_channels: int = 1, out_channels: int = 3):
    return bixnet_genotype(RELEASED_SKIP_SETS, spatial_dims, in_channels, out_channels, name="bixnet_w8",
                           width=8, stem_width=8)


def nnunet_scales(strides):
    """nnU-Net's own formula (nnUNetTrainer._get_deep_supervision_scales)."""
    return [list(s) for s in 1 / np.cumprod(np.vstack(strides), axis=0)][:-1]


# -- the adapter ----------------------------------------------------------------------------------------------

CASES = {
    "unet2d": (unet_genotype(2, 1, 3, features=[4, 8, 16, 32]), [[1, 1], [2, 2], [2, 2], [2, 2]], (32, 48)),
    "unet3d": (unet_genotype(3, 1, 3, features=[4, 8, 16, 32]), [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
               (16, 32, 24)),
    # nnU-Net-style anisotropic strides: heads pool the nearest finer decoder feature
    "unet3d_aniso": (unet_genotype(3, 1, 3, features=[4, 8, 16, 32]),
                     [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], (16, 32, 32)),
    "bixnet2d": (small_bixnet(2), [[1, 1]] + [[2, 2]] * 5, (64, 32)),
    "bixnet3d": (small_bixnet(3), [[1, 1, 1]] + [[2, 2, 2]] * 5, (32, 32, 64)),
    "bionet2d": (bionet_genotype(2, 1, 3, multiplier=0.25, iterations=2), [[1, 1]] + [[2, 2]] * 5, (64, 64)),
    "c2fnas3d": (c2fnas_genotype(C2FNAS_PANC_LEVELS, C2FNAS_PANC_OPS, 1, 3, base_channels=2, stem_channels=2),
                 [[1, 1, 1]] + [[2, 2, 2]] * 4, (32, 32, 32)),
    "dints3d": (random_genotype(0, 1, 3, channel_mul=0.125, num_blocks=4), [[1, 1, 1]] + [[2, 2, 2]] * 4,
                (32, 32, 32)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_deep_supervision_outputs_have_nnunet_sizes(case):
    genotype, strides, patch = CASES[case]
    net = SearchedNetwork(1, 3, genotype.to_dict(), strides, deep_supervision=True)
    outs = net(torch.randn(2, 1, *patch))
    scales = nnunet_scales(strides)
    assert len(outs) == len(scales) == len(strides) - 1
    for out, scale in zip(outs, scales, strict=True):
        assert tuple(out.shape) == (2, 3, *(round(p * s) for p, s in zip(patch, scale, strict=True)))
    net.decoder.deep_supervision = False
    assert tuple(net(torch.randn(1, 1, *patch)).shape) == (1, 3, *patch)


def test_supervision_heads_read_the_decoder_features_each_network_gives():
    unet = SearchedNetwork(1, 3, CASES["unet3d"][0].to_dict(), CASES["unet3d"][1])
    bix = SearchedNetwork(1, 3, CASES["bixnet3d"][0].to_dict(), CASES["bixnet3d"][1])
    bio = SearchedNetwork(1, 3, CASES["bionet2d"][0].to_dict(), CASES["bionet2d"][1])
    assert [h.pool_size for h in unet.decoder.heads] == [(1, 1, 1)] * 2
    # BiX-Net: the last decoder stage's outputs at 1/2 .. 1/16, no pooling
    assert [h.feature for h in bix.decoder.heads] == [3, 2, 1, 0]
    assert all(h.pool_size == (1, 1, 1) for h in bix.decoder.heads)
    # BiO-Net: pooled final features (the classifier's input)
    assert [h.pool_size for h in bio.decoder.heads] == [(2, 2), (4, 4), (8, 8), (16, 16)]
    assert (unet.total_stride, bix.total_stride, bio.total_stride) == (8, 32, 32)


class _ToyProtocolNet(torch.nn.Module):
    """A method's network implementing the protocol: ``forward_with_features(x) -> (logits, features)``."""

    total_stride = 2

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.down = torch.nn.Conv2d(in_channels, 6, 3, stride=2, padding=1)
        self.up = torch.nn.ConvTranspose2d(6, 5, 2, stride=2)
        self.head = torch.nn.Conv2d(5, out_channels, 1)

    def forward_with_features(self, x):
        coarse = torch.relu(self.down(x))
        fine = torch.relu(self.up(coarse))
        return self.head(fine), [coarse, fine]

    def forward(self, x):
        return self.forward_with_features(x)[0]


class _NoProtocolNet(torch.nn.Module):
    def forward(self, x):
        return x


def test_a_new_method_plugs_in_through_the_protocol_and_one_without_it_is_refused():
    from nas_ops.genotype import Genotype
    from nas_ops.registry import register_method

    for name, build in (("toy_protocol_net", lambda g: _ToyProtocolNet(g.in_channels, g.out_channels)),
                        ("toy_no_protocol", lambda g: _NoProtocolNet())):
        try:
            register_method(name, validate=lambda g: None, build=build)
        except ValueError:  # already registered by an earlier run in this process
            pass
    doc = Genotype("toy_protocol_net", 2, 1, 3, {}).to_dict()
    net = SearchedNetwork(1, 3, doc, [[1, 1], [2, 2], [2, 2]])
    assert net.total_stride == 2
    assert [(h.feature, h.pool_size) for h in net.decoder.heads] == [(0, (1, 1))]
    assert [tuple(o.shape) for o in net(torch.randn(2, 1, 16, 8))] == [(2, 3, 16, 8), (2, 3, 8, 4)]
    with pytest.raises(GenotypeError, match=r"field 'method': the network of method 'toy_no_protocol' "
                                            r"\(_NoProtocolNet\) lacks forward_with_features, total_stride"):
        SearchedNetwork(1, 3, Genotype("toy_no_protocol", 2, 1, 3, {}).to_dict(), [[1, 1], [2, 2]])


MBNAS_GENOTYPES = Path(__file__).resolve().parents[1] / "bundles" / "mbnas" / "genotypes"


@pytest.mark.parametrize("name", ["unet.json", "resunet.json"])
def test_mbnas_networks_and_resunet_supervise_their_pooled_final_features(name):
    """MB-NAS's networks and its ResU-Net baseline: a searched topology has no fixed decoder: pooled final
    features."""
    from nas_ops.genotype import Genotype

    genotype = Genotype.load(MBNAS_GENOTYPES / name)
    if genotype.method == "resunet":
        genotype = genotype.replace(spec={"backbone": "resnet10", "decoder_channels": [32, 16, 16, 8, 8]})
    strides = net_strides(32, 2)
    net = SearchedNetwork(genotype.in_channels, genotype.out_channels, genotype.to_dict(), strides)
    assert net.total_stride == 32 and all(h.feature == 0 for h in net.decoder.heads)
    assert [h.pool_size for h in net.decoder.heads] == [(2, 2), (4, 4), (8, 8), (16, 16)]
    outs = net(torch.randn(2, genotype.in_channels, 64, 32))
    assert [tuple(o.shape[2:]) for o in outs] == [(64, 32), (32, 16), (16, 8), (8, 4), (4, 2)]


@pytest.mark.parametrize("case", ["unet3d", "bixnet2d", "bionet2d"])
def test_state_dicts_load_strictly_with_supervision_on_and_off(case):
    genotype, strides, patch = CASES[case]
    torch.manual_seed(0)
    on = SearchedNetwork(1, 3, genotype.to_dict(), strides, deep_supervision=True)
    off = SearchedNetwork(1, 3, genotype.to_dict(), strides, deep_supervision=False)
    assert on.state_dict().keys() == off.state_dict().keys()
    off.load_state_dict(on.state_dict(), strict=True)
    on.load_state_dict(off.state_dict(), strict=True)
    on.eval(), off.eval()
    x = torch.randn(1, 1, *patch)
    with torch.no_grad():
        assert torch.equal(on(x)[0], off(x))
    # the network inside is the genotype's own: its weights load into a plain build of the genotype
    from nas_ops.registry import build_network

    plain = build_network(genotype)
    plain.load_state_dict({k.removeprefix("network."): v for k, v in on.state_dict().items()
                           if k.startswith("network.")}, strict=True)


def test_every_parameter_gets_a_gradient_with_deep_supervision():
    genotype, strides, patch = CASES["bixnet2d"]
    net = SearchedNetwork(1, 3, genotype.to_dict(), strides)
    sum(o.mean() for o in net(torch.randn(2, 1, *patch))).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing


def test_adapter_refuses_genotypes_that_do_not_fit_what_nnunet_passes():
    doc = unet_genotype(3, 1, 3, features=[4, 8, 16]).to_dict()
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    with pytest.raises(GenotypeError, match="field 'in_channels'.*nnU-Net passes 2"):
        SearchedNetwork(2, 3, doc, strides, genotype_source="plans.json")
    with pytest.raises(GenotypeError, match="field 'out_channels'.*needs 4"):
        SearchedNetwork(1, 4, doc, strides)
    with pytest.raises(GenotypeError, match=r"strides\[1\].*3D"):
        SearchedNetwork(1, 3, doc, [[1, 1, 1], [2, 2]])
    with pytest.raises(GenotypeError, match=r"strides\[0\].*must not downsample"):
        SearchedNetwork(1, 3, doc, [[2, 2, 2], [2, 2, 2]])
    with pytest.raises(GenotypeError, match="plans.json: field 'spec.features"):
        SearchedNetwork(1, 3, {**doc, "spec": {"features": [4]}}, strides, genotype_source="plans.json")


def test_macs_are_counted_small_and_scaled_exactly():
    genotype, strides, _ = CASES["bixnet3d"]
    net = SearchedNetwork(1, 3, genotype.to_dict(), strides)
    patch = (32, 64, 32)
    cost = network_cost(net, 1, patch, net.divisor)
    net.decoder.deep_supervision = False
    assert cost.macs == count_macs(net, (1, *patch))
    assert net.decoder.deep_supervision is False


def test_instance_norm_networks_probe_and_count_past_a_one_voxel_bottleneck(nnunet_dirs):
    from nnunet_plans.plans import build_planned_network, load_planned, strides_divisor

    net = SearchedNetwork(1, 3, unet_genotype(3, 1, 3, features=[4, 8, 16], norm="instance").to_dict(),
                          [[1, 1, 1], [2, 2, 2], [2, 2, 2]])
    assert len(net.decoder.heads) == 1
    config = load_planned(990).configuration("3d_fullres")  # nnU-Net's PlainConvUNet with InstanceNorm
    plain = build_planned_network(config, 1, 3)
    patch = (20, 40, 36)
    cost = network_cost(plain, 1, patch, strides_divisor(config["architecture"]["arch_kwargs"]["strides"]))
    assert cost.macs == count_macs(plain, (1, *patch))


def test_patch_rounding_and_strides():
    assert round_patch([20, 320, 256], 32) == [32, 320, 256]
    assert round_patch([20, 300, 250], 32, "down") == [32, 288, 224]
    assert round_patch([20, 300, 250], 32, "up") == [32, 320, 256]
    assert net_strides(8, 2) == [[1, 1], [2, 2], [2, 2], [2, 2]]
    with pytest.raises(GenotypeError, match="at least 3"):
        net_strides(2, 3)


# -- export ---------------------------------------------------------------------------------------------------


def test_export_writes_a_plans_variant_nnunet_builds(nnunet_dirs, tmp_path):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    path = small_bixnet(3).save(tmp_path / "bix.json")
    result = export_plans(path, 990, "3d_fullres", trainer="nnUNetTrainerNAS_smoke", device="cpu", folds=(0,))
    assert result.plans_path == nnunet_dirs["preprocessed"] / "Dataset990_Fake" / "nnUNetPlans_bixnet_w8.json"
    assert result.commands == [f"export nnUNet_extTrainer={ext_trainer_dir()}",
                               "nnUNetv2_train 990 3d_fullres 0 -p nnUNetPlans_bixnet_w8 -tr nnUNetTrainerNAS_smoke "
                               "-device cpu"]
    plans = json.loads(result.plans_path.read_text())
    assert plans["plans_name"] == "nnUNetPlans_bixnet_w8" and list(plans["configurations"]) == ["3d_fullres"]
    config = PlansManager(plans).get_configuration("3d_fullres")
    assert config.data_identifier == "nnUNetPlans_3d"  # reuses nnU-Net's preprocessed data
    assert config.patch_size == [32, 32, 32]  # [20, 40, 36] to the nearest multiples of 32
    assert config.pool_op_kernel_sizes == [[1, 1, 1]] + [[2, 2, 2]] * 5
    assert config.network_arch_init_kwargs["genotype"]["spec"]["width"] == 8
    # nnU-Net's own builder, as in training
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    net = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                 config.network_arch_init_kwargs_req_import, 1, 3, deep_supervision=True)
    outs = net(torch.randn(1, 1, *config.patch_size))
    assert [list(o.shape[2:]) for o in outs] == [[round(p * s) for p, s in zip(config.patch_size, scale, strict=True)]
                                                 for scale in nnunet_scales(config.pool_op_kernel_sizes)]
    assert plans["medseg_nas"]["params"] == result.params > 0 and result.macs > 0


def test_export_refuses_genotypes_that_do_not_fit_the_dataset(nnunet_dirs, tmp_path):
    dataset_json = nnunet_dirs["preprocessed"] / "Dataset990_Fake" / "dataset.json"
    two_d = unet_genotype(2, 1, 3, features=[4, 8, 16]).save(tmp_path / "unet2d.json")
    with pytest.raises(GenotypeError, match=rf"{tmp_path}/unet2d.json: field 'spatial_dims'.*'2d'"):
        export_plans(two_d, 990, "3d_fullres")
    rgb = unet_genotype(3, 3, 3, features=[4, 8, 16]).save(tmp_path / "rgb.json")
    with pytest.raises(GenotypeError, match=rf"rgb.json: field 'in_channels'.*needs 1 \(channel_names in "
                                            rf"{dataset_json}\)"):
        export_plans(rgb, 990, "3d_fullres")
    binary = unet_genotype(3, 1, 2, features=[4, 8, 16]).save(tmp_path / "binary.json")
    with pytest.raises(GenotypeError, match="field 'out_channels'.*needs 3 \\(labels"):
        export_plans(binary, 990, "3d_fullres")
    adapted = export_plans(rgb, 990, "3d_fullres", adapt_io=True, name="rgb_adapted")
    genotype = json.loads(adapted.plans_path.read_text())["configurations"]["3d_fullres"]["architecture"][
        "arch_kwargs"]["genotype"]
    assert genotype["in_channels"] == 1 and genotype["provenance"]["nnunet_adapt_io"] == {"in_channels": [3, 1]}
    folder = nnunet_dirs["preprocessed"] / "Dataset990_Fake"
    only_3d = json.loads((folder / "nnUNetPlans.json").read_text())
    del only_3d["configurations"]["2d"]
    (folder / "nnUNetPlansOnly3d.json").write_text(json.dumps(only_3d))
    with pytest.raises(InputError, match=r"nnUNetPlansOnly3d.json: field 'configurations.2d'.*not planned"):
        export_plans(two_d, 990, "2d", source_plans="nnUNetPlansOnly3d")
    with pytest.raises(InputError, match="^nnunet export: field 'configuration'.*export to one of"):
        export_plans(binary, 990, "3d_lowres")
    with pytest.raises(InputError, match=r"^nnunet export: field 'patch_size': \[30, 30, 30\] is not divisible"):
        export_plans(rgb, 990, "3d_fullres", adapt_io=True, name="odd", patch_size=[30, 30, 30])
    with pytest.raises(InputError, match=r"field 'dataset': 991: no dataset with this id in \$nnUNet_raw") as err:
        export_plans(rgb, 991, "3d_fullres", adapt_io=True)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="nnUNetResEncPlans.json: field '<file>'"):
        export_plans(rgb, 990, "3d_fullres", source_plans="nnUNetResEncPlans", adapt_io=True)
    with pytest.raises(InputError, match="field 'name'"):
        export_plans(rgb, 990, "3d_fullres", name="a__b", adapt_io=True)
    # a 12-level U-Net (total stride 2048) would grow the 40x36 patch to 2048x2048: refused, asks for --patch_size
    deep = unet_genotype(2, 1, 3, features=[2] * 12).save(tmp_path / "deep.json")
    with pytest.raises(InputError, match=r"deep.json: field 'patch_size': the network's total stride 2048 grows "
                                         r"nnU-Net's patch \[40, 36\] to \[2048, 2048\], more than twice"):
        export_plans(deep, 990, "2d")
    # a training step at the patch and the plans' batch that does not fit memory_limit_gb
    with pytest.raises(InputError, match=r"rgb.json: field 'batch_size': nnU-Net's 3d_fullres training needs about "
                                         r".* lower batch_size .* or patch_size, or set memory_limit_gb"):
        export_plans(rgb, 990, "3d_fullres", adapt_io=True, name="rgb_tight", memory_limit_gb=8e-3)
    assert not (folder / "nnUNetPlans_unet.json").exists()
    assert not (folder / "nnUNetPlans_rgb_tight.json").exists()


def test_export_refuses_a_huge_genotype_before_allocating_it(nnunet_dirs, tmp_path):
    """A 100000-channel C2FNAS genotype would ask for tens of GB: refused in one line, in seconds, small memory."""
    import resource

    huge = c2fnas_genotype(C2FNAS_PANC_LEVELS, C2FNAS_PANC_OPS, 1, 3, name="huge", base_channels=100000,
                           stem_channels=4).save(tmp_path / "huge.json")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tic = time.monotonic()
    with pytest.raises(InputError, match=r"huge.json: field 'batch_size': nnU-Net's 3d_fullres training needs about "
                                         r".*the weights alone do not fit"):
        export_plans(huge, 990, "3d_fullres", memory_limit_gb=16)
    assert time.monotonic() - tic < 20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 2**20  # KiB: under 1 GiB more
    assert not (nnunet_dirs["preprocessed"] / "Dataset990_Fake" / "nnUNetPlans_huge.json").exists()


# -- trainers -------------------------------------------------------------------------------------------------


def test_trainers_are_found_by_nnunet_and_keep_its_signature(monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", str(ext_trainer_dir()))
    for name, cls in TRAINERS.items():
        assert recursive_find_trainer_class_by_name(name) is cls
        ours, theirs = (inspect.signature(c.__init__).parameters.values() for c in (cls, nnUNetTrainer))
        assert [(p.name, p.kind, p.default) for p in ours] == [(p.name, p.kind, p.default) for p in theirs]


# -- the harness on synthetic summaries -----------------------------------------------------------------------


def _write_model(results: Path, folder: str, scores: dict[str, dict[str, float]], folds: dict[str, int]) -> None:
    for fold in sorted(set(folds.values())):
        entries = [{"metrics": {k: {"Dice": v} for k, v in d.items()},
                    "reference_file": f"/gt/{case}.nii.gz", "prediction_file": f"/pred/{case}.nii.gz"}
                   for case, d in scores.items() if folds[case] == fold]
        out = results / folder / f"fold_{fold}" / "validation"
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps({"metric_per_case": entries}))
    (results / folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "inner": 1, "outer": 2},
                                                               "channel_names": {"0": "T2"}}))


def test_harness_tables_and_statistics_on_synthetic_summaries(nnunet_dirs, tmp_path):
    rng = np.random.default_rng(0)
    cases = [f"case_{i:02d}" for i in range(10)]
    folds = {c: i % 2 for i, c in enumerate(cases)}
    results = nnunet_dirs["results"] / "Dataset990_Fake"
    truth = {}
    for label, shift in (("nnUNetPlans", 0.0), ("nnUNetPlans_a", 0.05), ("nnUNetPlans_b", -0.02)):
        scores = {c: {"1": float(np.clip(0.7 + shift + rng.normal(0, 0.05), 0, 1)),
                      "2": float(np.clip(0.6 + shift + rng.normal(0, 0.05), 0, 1))} for c in cases}
        scores["case_03"]["2"] = math.nan  # nnU-Net writes NaN for a class absent in reference and prediction
        truth[label] = scores
        _write_model(results, f"nnUNetTrainer__{label}__3d_fullres", scores, folds)

    models = parse_models("nnUNetPlans,nnUNetPlans_a,nnUNetPlans_b")
    assert [m.label for m in models] == ["nnU-Net", "a", "b"]
    collected = collect(990, "3d_fullres", models, [0, 1], costs=False)
    report = write_report(collected, tmp_path / "report", "synthetic", {"labels": {"inner": 1, "outer": 2}})

    def fg(scores, case):
        return float(np.nanmean([scores[case]["1"], scores[case]["2"]]))

    matrix = np.array([[fg(truth[p], c) for c in cases] for p in ("nnUNetPlans", "nnUNetPlans_a", "nnUNetPlans_b")])
    expected = stats.friedmanchisquare(*matrix)
    assert report.friedman.statistic == pytest.approx(expected.statistic)
    assert report.friedman.p == pytest.approx(expected.pvalue)
    assert report.wilcoxon[0].p == pytest.approx(stats.wilcoxon(matrix[1], matrix[0]).pvalue)
    assert report.wilcoxon[1].p == pytest.approx(stats.wilcoxon(matrix[2], matrix[0]).pvalue)

    with report.table_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == ["nnU-Net", "a", "b"]
    inner = [truth["nnUNetPlans_a"][c]["1"] for c in cases]
    assert float(rows[1]["dice_inner_mean"]) == pytest.approx(np.mean(inner))
    assert float(rows[1]["dice_inner_std"]) == pytest.approx(np.std(inner, ddof=1))
    outer = [v for v in (truth["nnUNetPlans_a"][c]["2"] for c in cases) if not math.isnan(v)]
    assert float(rows[1]["dice_outer_mean"]) == pytest.approx(np.mean(outer))
    assert rows[0]["wilcoxon_p_vs_reference"] == "" and float(rows[2]["wilcoxon_p_vs_reference"]) > 0
    md = report.markdown.read_text()
    assert "Friedman" in md and "Wilcoxon a vs nnU-Net" in md and "| nnU-Net |" in md
    assert report.boxplot.stat().st_size > 1000
    with report.per_case_csv.open() as fh:
        assert len(list(csv.reader(fh))) == 1 + 3 * len(cases)

    # two models: Friedman is reported as not applicable, Wilcoxon still runs
    two = write_report(collected[:2], tmp_path / "two", "two models")
    assert two.friedman.p is None and "needs >= 3 models" in two.friedman.text()
    assert two.wilcoxon[0].p is not None

    # a missing fold is named; print mode lists the commands
    with pytest.raises(InputError, match="fold_2/validation/summary.json"):
        collect(990, "3d_fullres", models, [0, 1, 2], costs=False)
    lines = compare(990, "nnUNetPlans,nnUNetPlans_a", folds="2", mode="print", device="cuda")
    assert lines[1:] == ["nnUNetv2_train 990 3d_fullres 2 -p nnUNetPlans -tr nnUNetTrainer -device cuda",
                         "nnUNetv2_train 990 3d_fullres 2 -p nnUNetPlans_a -tr nnUNetTrainer -device cuda"]


def test_model_results_score_cases_without_nan_classes():
    r = ModelResult(parse_models("nnUNetPlans,x")[0], [0], {"c": {"1": 0.5, "2": math.nan}}, {"c": 0})
    assert r.case_score("c", ["1", "2"]) == 0.5


# -- end to end: stock nnU-Net CLI on a generated MSD dataset -------------------------------------------------


def _cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name)) if Path(sys.executable).with_name(name).is_file() else name


def _run(cmd: list[str], env: dict, timeout: int, log: Path) -> float:
    start = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.run([_cli(cmd[0]), *cmd[1:]], env=env, stdout=fh, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
    tail = "\n".join(log.read_text().splitlines()[-30:])
    assert proc.returncode == 0, f"{' '.join(cmd)} failed; last lines of {log}:\n{tail}"
    return time.monotonic() - start


def _nnunet_workspace(tmp_path: Path, monkeypatch) -> tuple[dict[str, Path], dict[str, str], Path]:
    """nnU-Net's three folders under tmp_path, small-machine settings; returns (dirs, environment, log folder)."""
    dirs = {k: tmp_path / k for k in ("raw", "preprocessed", "results")}
    for key, path in dirs.items():
        monkeypatch.setenv(f"nnUNet_{key}", str(path))
    monkeypatch.setenv("nnUNet_def_n_proc", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("nnUNet_compile", raising=False)
    logs = tmp_path / "logs"
    logs.mkdir()
    return dirs, dict(os.environ), logs


def _planned_mri_task(tmp_path: Path, task_name: str, shape: tuple[int, int, int], configuration: str,
                      env: dict[str, str], logs: Path) -> dict[str, float]:
    """A generated 6-patient MRI task in MSD layout with one test case, converted and planned by nnU-Net's CLI
    for one configuration; returns the seconds of each step."""
    from nas_ops.data.demo import make_mri_dataset

    task = make_mri_dataset(tmp_path / "msd" / task_name, num_patients=6, shape=shape, seed=0)
    test_case = make_mri_dataset(tmp_path / "msd_test", num_patients=1, shape=shape, seed=1)
    (task / "imagesTs").mkdir()
    shutil.copy(test_case / "imagesTr" / "mri_000.nii.gz", task / "imagesTs" / "mri_test.nii.gz")
    dataset_id = task_name[4:7]
    timings = {"convert": _run(["nnUNetv2_convert_MSD_dataset", "-i", str(task), "-np", "2"], env, 300,
                               logs / "convert.log")}
    # planning sets torch threads to nnUNet_n_proc_DA: it must not be 0 there
    timings["plan_and_preprocess"] = _run(["nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", configuration,
                                           "-npfp", "2", "-np", "2"],
                                          {**env, "nnUNet_n_proc_DA": "1"}, 600, logs / "plan.log")
    return timings


def test_end_to_end_msd_to_nnunet_training_prediction_and_comparison(tmp_path, monkeypatch):
    """Generated MSD task -> convert -> plan+preprocess -> export 4 genotypes (U-Net, BiX-Net, C2FNAS, DiNTS) ->
    train 5 plans (the harness, stock nnUNetv2_train, smoke trainer, CPU) -> nnUNetv2_predict -> comparison table
    with both tests."""
    timings = {}
    start = time.monotonic()
    dirs, env, logs = _nnunet_workspace(tmp_path, monkeypatch)
    timings.update(_planned_mri_task(tmp_path, "Task902_DemoMRI", (32, 32, 16), "3d_fullres", env, logs))

    unet = unet_genotype(3, 1, 3, features=[8, 16, 32, 64]).replace(name="unet_tiny").save(tmp_path / "unet.json")
    bix = small_bixnet(3).save(tmp_path / "bixnet.json")
    c2f = c2fnas_genotype(C2FNAS_PANC_LEVELS, C2FNAS_PANC_OPS, 1, 3, name="c2fnas_w4", base_channels=4,
                          stem_channels=4).save(tmp_path / "c2fnas.json")
    dints = random_genotype(0, 1, 3, channel_mul=0.125, num_blocks=4, name="dints_w4").save(tmp_path / "dints.json")
    exports = [export_plans(g, 902, "3d_fullres", trainer="nnUNetTrainerNAS_AdamW_smoke", device="cpu", folds=(0,))
               for g in (unet, bix, c2f, dints)]
    # nnU-Net planned [16, 32, 32]: BiX-Net's stride 32 grows it, C2FNAS's and DiNTS's 16 keep it
    assert [e.patch_size for e in exports] == [[16, 32, 32], [32, 32, 32], [16, 32, 32], [16, 32, 32]]

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # training: batches in the main process
    t0 = time.monotonic()
    report = compare(902, ["nnUNetPlans", *(e.plans_name for e in exports)], folds=0, configuration="3d_fullres",
                     trainer="nnUNetTrainerNAS_AdamW_smoke", mode="local", device="cpu",
                     out_dir=tmp_path / "comparison", timeout_s=600, jobs=2)
    timings["train_5_plans_jobs2"] = time.monotonic() - t0
    model_dir = (dirs["results"] / "Dataset902_DemoMRI"
                 / "nnUNetTrainerNAS_AdamW_smoke__nnUNetPlans_bixnet_w8__3d_fullres")
    assert (model_dir / "fold_0" / "checkpoint_final.pth").is_file()

    timings["predict"] = _run(["nnUNetv2_predict", "-i", str(dirs["raw"] / "Dataset902_DemoMRI" / "imagesTs"),
                               "-o", str(tmp_path / "pred"), "-d", "902", "-c", "3d_fullres",
                               "-p", "nnUNetPlans_bixnet_w8", "-tr", "nnUNetTrainerNAS_AdamW_smoke", "-f", "0",
                               "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"],
                              {**env, "nnUNet_n_proc_DA": "0",
                               "nnUNet_extTrainer": str(ext_trainer_dir())}, 300, logs / "predict.log")
    pred = nib.load(tmp_path / "pred" / "mri_test.nii.gz")
    assert pred.shape == (32, 32, 16) and set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}

    rows = list(csv.DictReader(report.table_csv.open()))
    assert [r["model"] for r in rows] == ["nnU-Net", "unet_tiny", "bixnet_w8", "c2fnas_w4", "dints_w4"]
    assert all(int(r["cases"]) == 2 and int(r["params"]) > 0 and int(r["macs"]) > 0 for r in rows)
    assert rows[1]["patch_size"] == "16x32x32" and rows[2]["patch_size"] == "32x32x32"
    assert rows[3]["patch_size"] == rows[4]["patch_size"] == "16x32x32"
    for name in ("c2fnas_w4", "dints_w4"):  # trained by the stock nnUNetv2_train
        assert (dirs["results"] / "Dataset902_DemoMRI" / f"nnUNetTrainerNAS_AdamW_smoke__nnUNetPlans_{name}__3d_fullres"
                / "fold_0" / "checkpoint_final.pth").is_file()
    md = report.markdown.read_text()
    assert "Friedman (models x cases)" in md and "Wilcoxon unet_tiny vs nnU-Net" in md
    assert "Wilcoxon bixnet_w8 vs nnU-Net" in md and report.boxplot.is_file()
    timings["total"] = time.monotonic() - start
    (tmp_path / "timings.json").write_text(json.dumps(timings, indent=1))
    print("end-to-end timings (s):", json.dumps({k: round(v, 1) for k, v in timings.items()}),
          "train:", {k: round(v, 1) for k, v in report.train_seconds.items()})


def test_end_to_end_2d_configuration_trains_and_predicts_a_bixnet(tmp_path, monkeypatch):
    """BiX-NAS is 2D: its network trains in nnU-Net's ``2d`` configuration (slices of a generated MSD task) with
    the stock nnUNetv2_train and predicts whole volumes slice by slice with nnUNetv2_predict."""
    dirs, env, logs = _nnunet_workspace(tmp_path, monkeypatch)
    _planned_mri_task(tmp_path, "Task903_DemoMRI", (64, 64, 8), "2d", env, logs)

    export = export_plans(small_bixnet(2).save(tmp_path / "bixnet2d.json"), 903, "2d",
                          trainer="nnUNetTrainerNAS_AdamW_smoke", device="cpu", folds=(0,))
    assert export.patch_size == [64, 64]
    run_env = {**env, "nnUNet_n_proc_DA": "0", "nnUNet_extTrainer": str(ext_trainer_dir())}
    _run(["nnUNetv2_train", "903", "2d", "0", "-p", export.plans_name, "-tr", "nnUNetTrainerNAS_AdamW_smoke",
          "-device", "cpu"], run_env, 600, logs / "train.log")
    model_dir = dirs["results"] / "Dataset903_DemoMRI" / f"nnUNetTrainerNAS_AdamW_smoke__{export.plans_name}__2d"
    assert (model_dir / "fold_0" / "checkpoint_final.pth").is_file()
    summary = json.loads((model_dir / "fold_0" / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}  # both foreground classes scored on the validation cases

    _run(["nnUNetv2_predict", "-i", str(dirs["raw"] / "Dataset903_DemoMRI" / "imagesTs"), "-o", str(tmp_path / "pred"),
          "-d", "903", "-c", "2d", "-p", export.plans_name, "-tr", "nnUNetTrainerNAS_AdamW_smoke", "-f", "0",
          "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"], run_env, 300, logs / "predict.log")
    pred = nib.load(tmp_path / "pred" / "mri_test.nii.gz")
    assert pred.shape == (64, 64, 8) and set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}
