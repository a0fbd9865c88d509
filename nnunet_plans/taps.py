"""Feature taps: how the nnU-Net adapter reads logits and decoder features out of a searched network.

Deep supervision needs lower-resolution outputs; a searched network gives full-resolution logits. A *tap* runs
the network once and returns ``(logits, features)``: the full-resolution logits and a list of decoder feature
maps, deepest first, on which :class:`nnunet_plans.network.SearchedNetwork` puts 1x1 supervision heads.

Which tap a network gets, first match wins:

1. the protocol: a network method ``forward_with_features(x) -> (logits, [decoder features deepest first])``.
   A new method (MB-NAS, C2FNAS) plugs in by defining it next to ``forward``; nothing here changes.
2. a tap registered here for the genotype's method (:func:`register_tap`): ``unet`` reads
   ``UNet.decoder_features``; ``bixnet`` runs the extraction-stage engine and returns the four outputs of the
   last decoder stage (1/16 .. 1/2 of the input).
3. the generic fallback (``bionet``, ``mbnas``, ``resunet`` and any other network): the input of the final
   classifier (the last conv with ``num_classes`` outputs, checked to make the network's output), caught by a
   forward pre-hook. The supervision heads then sit on this full-resolution final feature map, average-pooled
   to each scale ("pooled final features").

(``forward_with_features`` rather than timm's ``forward_features``, which returns features only.)

A network's *total stride* (what every input size must be divisible by) comes from a ``total_stride``
attribute, the registered tap, or a probe of power-of-two input sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nas_ops.errors import GenotypeError
from nas_ops.genotype import Genotype

FeatureFn = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]
StrideFn = Callable[[nn.Module], int]
MAX_PROBED_STRIDE = 64  # the probe runs the network at sizes up to this: keep 3D memory small


@dataclass(frozen=True)
class Tap:
    """How to read one method's networks: ``features(net, x) -> (logits, decoder features deepest first)``."""

    name: str
    features: FeatureFn | None  # None: the generic fallback
    total_stride: StrideFn | None = None


_TAPS: dict[str, Tap] = {}


def register_tap(method: str, features: FeatureFn | None, total_stride: StrideFn | None = None) -> Tap:
    """Register the tap of a method (a name resolves to one tap: a second registration fails)."""
    if method in _TAPS:
        raise ValueError(f"a feature tap for method '{method}' is already registered")
    _TAPS[method] = Tap(name=method, features=features, total_stride=total_stride)
    return _TAPS[method]


# -- built-in taps ---------------------------------------------------------------------------------------------


def _unet_features(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    feats = net.decoder_features(x)
    return net.head(feats[-1]), feats


def _bixnet_features(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    # the same calls as BiXNet.forward; the last decoder stage's outputs run level 0 (1/16) to level 3 (1/2)
    state = net._run(net.begin(x), net.skip_sets, None, net.liveness.alive)
    return net.finish(state), [out for out in state.outputs if out is not None]


def _bixnet_stride(net: nn.Module) -> int:
    from nas_ops.bixnas.space import LEVELS

    return 2 ** (LEVELS + 1)  # stem pool, three encoder pools, the bridge's pool


def _bionet_stride(net: nn.Module) -> int:
    return 2 ** (net.levels + 1)  # stem pool, one pool per backbone level


register_tap("unet", _unet_features)
register_tap("bixnet", _bixnet_features, _bixnet_stride)
register_tap("bionet", None, _bionet_stride)  # features: the generic fallback (one monolithic forward)


# -- the generic fallback --------------------------------------------------------------------------------------


class ClassifierInputTap:
    """Fallback tap: the network's own forward, with the input of its final classifier caught by hooks.

    The classifier is the last ``Conv2d``/``Conv3d`` (in registration order) with ``num_classes`` outputs; every
    forward checks that it ran once and that its output is the network's output.
    """

    name = "classifier-input (pooled final features)"

    def __init__(self, classifier: nn.Module) -> None:
        self.classifier = classifier
        self._inputs: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []
        classifier.register_forward_pre_hook(lambda module, args: self._inputs.append(args[0]))
        classifier.register_forward_hook(lambda module, args, out: self._outputs.append(out))

    def __call__(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._inputs.clear(), self._outputs.clear()
        try:
            logits = net(x)
            if len(self._inputs) != 1:
                raise RuntimeError(f"the classifier ran {len(self._inputs)} times in one forward, expected once")
            out = self._outputs[0]
            if out is not logits and (out.shape != logits.shape or not torch.equal(out, logits)):
                raise RuntimeError("the last conv with num_classes outputs does not make the network's output: "
                                   "give the network a forward_with_features(x) method (nnunet_plans.taps)")
            return logits, [self._inputs[0]]
        finally:
            self._inputs.clear(), self._outputs.clear()


def find_classifier(net: nn.Module, num_classes: int) -> nn.Module | None:
    """The last conv with ``num_classes`` output channels, or None."""
    found = None
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.out_channels == num_classes:
            found = module
    return found


# -- resolution ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedTap:
    """The tap a network uses, under a readable name (logged and tested)."""

    name: str
    features: FeatureFn


def resolve_tap(net: nn.Module, genotype: Genotype, source: str | None = None) -> ResolvedTap:
    """Pick the tap of ``net`` (protocol, registered, fallback); see the module docstring."""
    if callable(getattr(net, "forward_with_features", None)):
        return ResolvedTap("forward_with_features", lambda n, x: n.forward_with_features(x))
    tap = _TAPS.get(genotype.method)
    if tap is not None and tap.features is not None:
        return ResolvedTap(f"registered:{tap.name}", tap.features)
    classifier = find_classifier(net, genotype.out_channels)
    if classifier is None:
        problem = (f"method '{genotype.method}': the network has no forward_with_features(x), no registered "
                   f"feature tap and no final conv with {genotype.out_channels} outputs for supervision heads")
        raise GenotypeError(source, "method", problem)
    fallback = ClassifierInputTap(classifier)
    return ResolvedTap(fallback.name, fallback)


def total_stride(net: nn.Module, genotype: Genotype, in_channels: int | None = None) -> int:
    """What every input size must be divisible by: attribute, registered tap, or a probe."""
    value = getattr(net, "total_stride", None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    tap = _TAPS.get(genotype.method)
    if tap is not None and tap.total_stride is not None:
        return tap.total_stride(net)
    return probe_total_stride(net, genotype.spatial_dims, in_channels or genotype.in_channels)


def probe_total_stride(net: nn.Module, spatial_dims: int, in_channels: int) -> int:
    """Smallest power of two ``p`` such that the network maps a ``p``-sized input to same-sized logits."""
    p = 1
    while p <= MAX_PROBED_STRIDE:
        try:
            out = dry_run(net, torch.zeros(1, in_channels, *([p] * spatial_dims)))
            if tuple(out.shape[2:]) == (p,) * spatial_dims:
                return p
        except (RuntimeError, ValueError):
            pass
        p *= 2
    raise ValueError(f"no power-of-two input size up to {MAX_PROBED_STRIDE} runs through the network")


def dry_run(net: nn.Module, x: torch.Tensor, fn: Callable[[nn.Module, torch.Tensor], object] | None = None) -> object:
    """``fn(net, x)`` (default ``net(x)``) in eval mode without gradients; the training flag is restored."""
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            return net(x) if fn is None else fn(net, x)
    finally:
        net.train(was_training)
