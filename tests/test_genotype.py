"""Genotype documents: round trip, rebuild in another process, and refusal of bad input."""

import json
import subprocess
import sys

import pytest
import torch

from nas_ops.baselines.unet import unet_genotype
from nas_ops.cost_model import count_params
from nas_ops.errors import GenotypeError
from nas_ops.genotype import FORMAT, Genotype
from nas_ops.registry import build_network


def test_round_trip_rebuilds_identical_network(tmp_path):
    g = unet_genotype(spatial_dims=2, in_channels=3, out_channels=3, features=[8, 16, 32])
    g = g.replace(provenance={"seed": 1, "dataset": "demo", "scores": {"dice": 0.5}})
    path = g.save(tmp_path / "genotype.json")
    loaded = Genotype.load(path)
    assert loaded == g
    a, b = build_network(g), build_network(path)
    assert count_params(a) == count_params(b) == 29_643  # hand count: 824 + 3520 + 13952 + 9040 + 2280 + 27
    b.load_state_dict(a.state_dict(), strict=True)
    a.eval(), b.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), b(x))


def test_rebuild_in_another_process_has_same_parameter_count(tmp_path):
    g = unet_genotype(spatial_dims=3, in_channels=1, out_channels=3, features=[4, 8, 16])
    path = g.save(tmp_path / "g.json")
    code = "from nas_ops.registry import build_network;from nas_ops.cost_model import count_params;"
    code += f"print(count_params(build_network({str(path)!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == count_params(build_network(g))


def test_unet_parameter_count_matches_hand_formula():
    feats, k, d, cin, k_out = [32, 64, 128, 256, 512], 3, 2, 1, 2
    unit = lambda a, b: k**d * a * b + 2 * b  # noqa: E731  conv without bias + BN(scale, shift)
    expected = 0
    for i, f in enumerate(feats):
        expected += unit(cin if i == 0 else feats[i - 1], f) + unit(f, f)
    for i in range(len(feats) - 1):
        expected += 2**d * feats[i + 1] * feats[i] + feats[i]  # 2x2 transposed conv with bias
        expected += unit(2 * feats[i], feats[i]) + unit(feats[i], feats[i])
    expected += feats[0] * k_out + k_out  # 1x1 head
    assert count_params(build_network(unet_genotype(2, cin, k_out))) == expected == 7_762_498


def _doc():
    return unet_genotype(2, 1, 2, features=[4, 8]).to_dict()


def _bad(**changes):
    doc = _doc()
    for key, value in changes.items():
        if value is KeyError:
            del doc[key]
        else:
            doc[key] = value
    return doc


BAD_DOCUMENTS = {
    "missing method": (_bad(method=KeyError), "method", "missing"),
    "wrong type": (_bad(in_channels="3"), "in_channels", "expected int"),
    "bool for int": (_bad(out_channels=True), "out_channels", "expected int"),
    "unknown method": (_bad(method="darts"), "method", "unknown method 'darts'"),
    "unknown version": (_bad(version=99), "version", "reads versions"),
    "wrong format": (_bad(format="something-else"), "format", FORMAT),
    "bad spatial dims": (_bad(spatial_dims=4), "spatial_dims", "2 or 3"),
    "zero channels": (_bad(in_channels=0), "in_channels", ">= 1"),
    "unknown field": (_bad(extra=1), "extra", "unknown field"),
    "impossible spec": (_bad(spec={"features": [4, -8]}), r"spec.features\[1\]", "positive integer"),
    "even kernel": (_bad(spec={"features": [4, 8], "kernel_size": 2}), "spec.kernel_size", "odd"),
    "unknown spec key": (_bad(spec={"features": [4, 8], "depth": 3}), "spec.depth", "unknown key"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_bad_genotype_is_refused_naming_file_and_field(tmp_path, case):
    doc, field, problem = BAD_DOCUMENTS[case]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(GenotypeError, match=f"bad.json: field '{field}': .*{problem}"):
        Genotype.load(path)


def test_not_json_and_missing_file_are_refused(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(GenotypeError, match="broken.json: field '<root>': not valid JSON"):
        Genotype.load(path)
    with pytest.raises(GenotypeError, match="nowhere.json.*no such file"):
        Genotype.load(tmp_path / "nowhere.json")
    path.write_text("[1, 2]")
    with pytest.raises(GenotypeError, match="expected a JSON object"):
        Genotype.load(path)
