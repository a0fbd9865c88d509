"""A third method plugs in from outside the project: declared by an entry point of its own distribution, it builds,
trains one epoch on the run engine and exports to nnU-Net, with no file of nas_ops or nnunet_plans changed."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest
import torch

from nas_ops.genotype import Genotype
from nas_ops.registry import ENTRY_POINT_GROUP, build_network, declared_methods

TOY_METHOD = '''
"""A toy third method: a two-level encoder-decoder, its spec {"width": int}."""
import torch
from torch import nn

from nas_ops.genotype import SpecError
from nas_ops.registry import register_method


class ToyNet(nn.Module):
    total_stride = 4

    def __init__(self, dims, in_channels, out_channels, width):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        self.down1 = conv(in_channels, width, 3, stride=2, padding=1)
        self.down2 = conv(width, width, 3, stride=2, padding=1)
        self.up2 = up(width, width, 2, stride=2)
        self.up1 = up(width, width, 2, stride=2)
        self.head = conv(width, out_channels, 1)

    def forward_with_features(self, x):
        coarse = torch.relu(self.down2(torch.relu(self.down1(x))))
        mid = torch.relu(self.up2(coarse))
        fine = torch.relu(self.up1(mid))
        return self.head(fine), [coarse, mid, fine]

    def forward(self, x):
        return self.forward_with_features(x)[0]


def validate(genotype):
    width = genotype.spec.get("width")
    if not isinstance(width, int) or width < 1:
        raise SpecError("width", f"must be a positive integer, got {width!r}")


register_method("toy3", validate=validate,
                build=lambda g: ToyNet(g.spatial_dims, g.in_channels, g.out_channels, g.spec["width"]))
'''


@pytest.fixture
def toy_distribution(tmp_path, monkeypatch):
    """An installed-looking distribution ``toy-method`` whose entry point declares the method ``toy3``."""
    site = tmp_path / "site"
    (site / "toy_method").mkdir(parents=True)
    (site / "toy_method" / "__init__.py").write_text(textwrap.dedent(TOY_METHOD))
    info = site / "toy_method-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntoy3 = toy_method\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("toy_method", None)
    from nas_ops import registry

    registry._METHODS.pop("toy3", None)


def test_a_method_declared_by_its_own_distribution_builds_trains_and_exports(toy_distribution, tmp_path,
                                                                             nnunet_dirs):
    from nas_ops.data import make_mri_dataset
    from nas_ops.data.geometry import DataGeometry
    from nas_ops.training.recipe import Recipe
    from nas_ops.training.trainer import train
    from nnunet_plans.export import export_plans
    from nnunet_plans.network import SearchedNetwork

    assert declared_methods()["toy3"] == "toy_method" and "toy_method" not in sys.modules
    doc = {"format": "medseg-nas-genotype", "version": 1, "name": "toy", "method": "toy3", "spatial_dims": 2,
           "in_channels": 1, "out_channels": 3, "spec": {"width": 4}}
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(doc))
    genotype = Genotype.load(path)  # the first lookup imports the declared module
    assert tuple(build_network(genotype)(torch.zeros(1, 1, 8, 8)).shape) == (1, 3, 8, 8)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**doc, "spec": {"width": 0}}))
    with pytest.raises(Exception, match=r"bad.json: field 'spec.width': must be a positive integer"):
        Genotype.load(bad)

    data = make_mri_dataset(tmp_path / "mri", num_patients=4, shape=(16, 16, 4), seed=0)
    # on the run engine, like every method
    result = train(path, data, tmp_path / "train", recipe=Recipe(epochs=1, batch_size=4),
                   geometry=DataGeometry(spatial_size=[16, 16]), n_folds=2, device="cpu")
    assert len(result["history"]) == 1 and (tmp_path / "train" / "models" / "model.pt").is_file()

    doc3 = {**doc, "spatial_dims": 3, "name": "toy3d"}
    path3 = tmp_path / "toy3d.json"
    path3.write_text(json.dumps(doc3))
    exported = export_plans(path3, 990, "3d_fullres")
    plans = json.loads(exported.plans_path.read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    assert arch["arch_kwargs"]["genotype"]["method"] == "toy3" and exported.patch_size == [20, 40, 36]
    assert exported.strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    # nnU-Net's own builder makes the network from the plans, deep supervision on
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 3,
                                 deep_supervision=True)
    assert isinstance(net, SearchedNetwork)
    outs = net(torch.randn(1, 1, 20, 40, 36))
    assert [tuple(o.shape[2:]) for o in outs] == [(20, 40, 36), (10, 20, 18)]
    assert [h.pool_size for h in net.decoder.heads] == [(1, 1, 1)]  # the toy's own 1/2 decoder feature
