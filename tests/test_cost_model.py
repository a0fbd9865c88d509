"""Cost model against hand-counted small networks."""

import torch
from torch import nn

from nas_ops.baselines.unet import unet_genotype
from nas_ops.blocks import self_concat_conv_type
from nas_ops.cost_model import count_macs, count_params, measure_cost, peak_activation_memory
from nas_ops.registry import build_network


class Shared(nn.Module):
    """One conv applied three times, a module registered under two names, a transposed conv, a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)  # 4*4*9 + 4 = 148 params
        self.alias = self.conv  # registered twice: its parameters count once
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)  # 36 params
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)  # 4*2*4 + 2 = 34 params
        self.fc = nn.Linear(2, 5)  # 15 params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for _ in range(3):
            x = self.alias(x)
        x = self.up(x)
        return self.fc(x.mean(dim=(2, 3)))


def test_counts_shared_module_per_call_and_registered_twice_once():
    model = Shared()
    assert count_params(model) == 148 + 36 + 34 + 15
    h = w = 8
    stem = h * w * 4 * 1 * 9  # output elements x in x kernel volume
    conv = h * w * 4 * 4 * 9
    up = (h * w * 4) * 2 * 4  # input elements x out x kernel volume
    fc = 5 * 2
    assert count_macs(model, (1, h, w)) == stem + 3 * conv + up + fc


def test_grouped_and_3d_convs():
    model = nn.Sequential(nn.Conv3d(4, 8, 3, padding=1, groups=2), nn.ConvTranspose3d(8, 4, 2, stride=2, groups=4))
    macs = count_macs(model, (4, 4, 4, 4))
    assert macs == 64 * 8 * 2 * 27 + 64 * 8 * 1 * 8


def test_self_concat_conv_counts_the_channels_it_runs():
    """A conv over concat(x, skip) that folds concat(x, x) into one conv over x: MACs of what runs, same output."""
    torch.manual_seed(0)
    for spatial_dims, shape in ((2, (3, 8, 8)), (3, (3, 4, 4, 4))):
        conv = self_concat_conv_type(spatial_dims)(6, 5, 3, padding=1)
        assert isinstance(conv, (nn.Conv2d, nn.Conv3d)) and count_params(conv) == 6 * 5 * 3**spatial_dims + 5
        voxels = 8 * 8 if spatial_dims == 2 else 4 * 4 * 4
        assert count_macs(conv, shape) == voxels * 5 * 3 * 3**spatial_dims  # over x: half of its 6 channels
        assert count_macs(conv, (6, *shape[1:])) == voxels * 5 * 6 * 3**spatial_dims  # over concat(x, skip)
        x = torch.randn(2, *shape, dtype=torch.float64)
        conv = conv.double()
        torch.testing.assert_close(conv(x), conv(torch.cat([x, x], dim=1)))


def test_unet_macs_hand_count():
    model = build_network(unet_genotype(2, 1, 2, features=[4, 8]))
    h = 16
    expected = h * h * 4 * 1 * 9 + h * h * 4 * 4 * 9  # level 0 encoder
    expected += (h // 2) ** 2 * (8 * 4 * 9 + 8 * 8 * 9)  # level 1
    expected += (h // 2) ** 2 * 8 * 4 * 4  # transposed conv: input elements x out x 2x2
    expected += h * h * (4 * 8 * 9 + 4 * 4 * 9)  # decoder convs
    expected += h * h * 2 * 4  # 1x1 head
    cost = measure_cost(model, (1, h, h))
    assert cost.macs == expected
    assert cost.params == count_params(model)


def test_activation_memory_grows_with_batch_and_is_labelled():
    model = build_network(unet_genotype(2, 1, 2, features=[4, 8]))
    one = peak_activation_memory(model, (1, 32, 32), batch_size=1)
    four = peak_activation_memory(model, (1, 32, 32), batch_size=4)
    assert one.how == "estimated" and one.bytes > 32 * 32 * 4 * 4
    assert 3.5 < four.bytes / one.bytes < 4.5
    assert all(p.grad is None for p in model.parameters())
