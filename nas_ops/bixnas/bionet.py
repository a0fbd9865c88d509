"""BiO-Net (Xiang et al., MICCAI 2020): the hand-designed bi-directional parent of BiX-NAS (method ``"bionet"``).

spec = {"iterations": 3, "integrate": true, "multiplier": 1.0, "backbone_levels": 4, "unit_order": "conv-relu-bn",
        "fold_first_skip": false}

Widths ``32 * 2**i * multiplier`` for i in 0..backbone_levels. Stem: three conv units at full size, max pool.
Encoder level l (T iterations): concat(x, backward skip) -> unit -> unit (the forward skip) -> unit to the next
width -> max pool; in the first iteration the backward skip is x itself. Bridge: two units and a 3x3 stride-2
transposed-conv unit. Decoder level: concat(x, forward skip) -> unit -> unit (the backward skip of the next
iteration) -> 3x3 stride-2 transposed-conv unit. Convs (with bias) are shared across iterations, BatchNorms
are not (the bridge's are, as in the authors' code). ``integrate`` concatenates the last decoder output of
every iteration before the head (unit, unit, 1x1 conv to classes).

A unit is conv -> ReLU -> BN in the authors' released Keras and PyTorch code (``unit_order``
``"conv-relu-bn"``, the default) or conv -> BN -> ReLU (``"conv-bn-relu"``); the parameter count is the
same. Reference at 3x512x512, 1 class, T=3: 14,996,289 parameters with integrate (14,977,857 without).

Two implementation choices make a training step cheaper without changing the function or the parameters:

- ``fold_first_skip`` (default false): in the first iteration an encoder level's first conv sees concat(x, x);
  with true it runs as one conv over x with the two input halves of its weight summed. Same output and
  gradients, half that conv's MACs: 90,227,867,648 conv MACs at 3x512x512 instead of the authors'
  92,643,786,752, which the default reproduces.
- 2D BiO-Net on the CPU runs in channels-last memory layout (the input is converted, the output is
  channels-first again), with concatenations whose gradients stay channels-last: a training step takes about
  10 % less time than in channels-first layout. 3D runs channels-first (channels-last 3D gave no clear gain), and
  so does the GPU (not measured; PyTorch's default). ``channels_last = False`` turns it off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas_ops.blocks import channels_last_on_cpu, conv_type, max_pool, norm_layer, self_concat_conv_type
from nas_ops.genotype import Genotype, SpecError
from nas_ops.registry import register_method

UNIT_ORDERS = ("conv-relu-bn", "conv-bn-relu")
DEFAULT_SPEC = {"iterations": 3, "integrate": True, "multiplier": 1.0, "backbone_levels": 4,
                "unit_order": "conv-relu-bn", "fold_first_skip": False}


class _ConcatLastGrad(torch.autograd.Function):
    """``torch.cat`` along channels of channels-last tensors, whose backward hands each input a channels-last
    contiguous gradient: the plain cat hands out strided channel slices, and the CPU batch norm backward is
    about 10x slower on those than on contiguous ones."""

    @staticmethod
    def forward(ctx, *xs: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [x.shape[1] for x in xs]
        return torch.cat(xs, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(g.contiguous(memory_format=torch.channels_last) for g in grad.split(ctx.sizes, dim=1))


class BiONet(nn.Module):
    """BiO-Net; ``(B, C_in, *S) -> (B, K, *S)`` logits with every size in S divisible by ``2**(backbone_levels+1)``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        iterations: int = 3,
        integrate: bool = True,
        multiplier: float = 1.0,
        backbone_levels: int = 4,
        unit_order: str = "conv-relu-bn",
        fold_first_skip: bool = False,
    ) -> None:
        super().__init__()
        if unit_order not in UNIT_ORDERS:
            raise ValueError(f"unit_order must be one of {UNIT_ORDERS}, got {unit_order!r}")
        self.iterations = iterations
        self.integrate = integrate
        self.levels = backbone_levels
        self.total_stride = 2 ** (backbone_levels + 1)  # stem pool, one pool per backbone level
        self.relu_first = unit_order == "conv-relu-bn"
        self.fold_first_skip = fold_first_skip
        self.channels_last = spatial_dims == 2
        f = [int(32 * 2**i * multiplier) for i in range(backbone_levels + 1)]
        self.features = f
        conv = conv_type(spatial_dims)
        up = conv_type(spatial_dims, transposed=True)

        def conv3(c_in: int, c_out: int) -> nn.Module:
            return conv(c_in, c_out, 3, padding=1)

        def skip_conv3(c_in: int, c_out: int) -> nn.Module:  # its input is concat(x, skip); skip is x at first
            return self_concat_conv_type(spatial_dims)(c_in, c_out, 3, padding=1)

        def up3(c: int) -> nn.Module:
            return up(c, c, 3, stride=2, padding=1, output_padding=1)

        def norms(*channels: int) -> nn.ModuleList:
            return nn.ModuleList(norm_layer("batch", spatial_dims, c) for c in channels)

        self.stem_convs = nn.ModuleList([conv3(in_channels, f[0]), conv3(f[0], f[0]), conv3(f[0], f[0])])
        self.stem_norms = norms(f[0], f[0], f[0])
        self.pool = max_pool(spatial_dims)
        # encoder level l: [concat(x, back) -> f_l, f_l -> f_l, f_l -> f_{l+1}]
        self.enc_convs = nn.ModuleList(
            nn.ModuleList([skip_conv3(2 * f[lv], f[lv]), conv3(f[lv], f[lv]), conv3(f[lv], f[lv + 1])])
            for lv in range(backbone_levels)
        )
        self.enc_norms = nn.ModuleList(
            nn.ModuleList(norms(f[lv], f[lv], f[lv + 1]) for lv in range(backbone_levels)) for _ in range(iterations)
        )
        top = f[backbone_levels]
        self.bridge_convs = nn.ModuleList([conv3(top, top), conv3(top, top), up3(top)])
        self.bridge_norms = norms(top, top, top)
        # decoder, indexed by the encoder level it meets: [concat(x, fwd) -> f_l, f_l -> f_l, up f_l]
        self.dec_convs = nn.ModuleList(
            nn.ModuleList([conv3(f[lv + 1] + f[lv], f[lv]), conv3(f[lv], f[lv]), up3(f[lv])])
            for lv in range(backbone_levels)
        )
        self.dec_norms = nn.ModuleList(
            nn.ModuleList(norms(f[lv], f[lv], f[lv]) for lv in range(backbone_levels)) for _ in range(iterations)
        )
        self.head_convs = nn.ModuleList([conv3(f[0] * (iterations if integrate else 1), f[0]), conv3(f[0], f[0])])
        self.head_norms = norms(f[0], f[0])
        self.classifier = conv(f[0], out_channels, 1)

    def _unit(self, conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.relu_first:
            return norm(F.relu(conv(x), inplace=True))
        return F.relu(norm(conv(x)), inplace=True)

    def _first_unit(self, conv: nn.Module, norm: nn.Module, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """The unit over concat(x, skip); without a skip (first iteration) over concat(x, x), folded if asked."""
        if skip is not None or not self.fold_first_skip:
            return self._unit(conv, norm, self._cat([x, x if skip is None else skip]))
        return self._unit(conv, norm, x)  # conv is a SelfConcatConv: given C of its 2C channels it folds

    @staticmethod
    def _cat(xs: list[torch.Tensor]) -> torch.Tensor:
        if any(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() for x in xs):
            return _ConcatLastGrad.apply(*xs)
        return torch.cat(xs, dim=1)

    def _units(self, convs: nn.ModuleList, norms: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(convs, norms, strict=True):
            x = self._unit(conv, norm, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *S) -> (B, K, *S)`` logits."""
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C_in, *S) ->`` logits and ``[the classifier's input (B, 32 m, *S)]`` (``nas_ops.protocol``): the
        recurrent decoder's outputs are integrated at full resolution, so deep supervision pools these."""
        stride = self.total_stride
        if any(d % stride for d in x.shape[2:]):
            raise ValueError(f"BiO-Net needs spatial sizes divisible by {stride}, got {tuple(x.shape[2:])}")
        if self.channels_last:
            x = channels_last_on_cpu(x)
        x = self.pool(self._units(self.stem_convs, self.stem_norms, x))
        back: list[torch.Tensor | None] = [None] * self.levels  # backward skips, by level
        outs = []
        for t in range(self.iterations):
            h, fwd = x, []
            for lv in range(self.levels):
                convs, norms = self.enc_convs[lv], self.enc_norms[t][lv]
                h = self._unit(convs[1], norms[1], self._first_unit(convs[0], norms[0], h, back[lv]))
                fwd.append(h)
                h = self.pool(self._unit(convs[2], norms[2], h))
            h = self._units(self.bridge_convs, self.bridge_norms, h)
            for lv in reversed(range(self.levels)):
                convs, norms = self.dec_convs[lv], self.dec_norms[t][lv]
                h = self._cat([h, fwd[lv]])
                h = self._unit(convs[1], norms[1], self._unit(convs[0], norms[0], h))
                back[lv] = h
                h = self._unit(convs[2], norms[2], h)
            outs.append(h)
        h = self._cat(outs) if self.integrate else outs[-1]
        features = self._units(self.head_convs, self.head_norms, h)
        return self.classifier(features).contiguous(), [features]


def validate(genotype: Genotype) -> None:
    """Check a BiO-Net spec: positive iterations and levels, boolean integrate, positive multiplier."""
    spec = genotype.spec
    for key in spec:
        if key not in DEFAULT_SPEC:
            raise SpecError(key, f"unknown key (known: {sorted(DEFAULT_SPEC)})")
    for key in ("iterations", "backbone_levels"):
        value = spec.get(key, DEFAULT_SPEC[key])
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(key, f"must be a positive integer, got {value!r}")
    if not isinstance(spec.get("integrate", True), bool):
        raise SpecError("integrate", f"must be true or false, got {spec['integrate']!r}")
    m = spec.get("multiplier", 1.0)
    if not isinstance(m, (int, float)) or isinstance(m, bool) or int(32 * m) < 1:
        raise SpecError("multiplier", f"must be a number with int(32 * multiplier) >= 1, got {m!r}")
    if not isinstance(spec.get("fold_first_skip", False), bool):
        raise SpecError("fold_first_skip", f"must be true or false, got {spec['fold_first_skip']!r}")
    if spec.get("unit_order", "conv-relu-bn") not in UNIT_ORDERS:
        raise SpecError("unit_order", f"must be one of {list(UNIT_ORDERS)}, got {spec.get('unit_order')!r}")


def build(genotype: Genotype) -> BiONet:
    """The BiO-Net of a genotype."""
    return BiONet(genotype.spatial_dims, genotype.in_channels, genotype.out_channels,
                  **{**DEFAULT_SPEC, **genotype.spec})


def bionet_genotype(spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 2, **spec) -> Genotype:
    """A BiO-Net genotype (defaults: T=3, integrate, multiplier 1, 4 levels, the authors' unit order)."""
    provenance = {"paper": "Xiang et al., BiO-Net: Learning Recurrent Bi-directional Connections for "
                           "Encoder-Decoder Architecture, MICCAI 2020",
                  "source": "hand-designed; structure from the authors' code github.com/tiangexiang/BiO-Net"}
    return Genotype(method="bionet", spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                    spec={**DEFAULT_SPEC, **spec}, name="bionet", provenance=provenance)


register_method("bionet", validate=validate, build=build)
