"""Cost model: parameters, MACs and peak activation memory of a network for one input shape.

MACs are counted by forward hooks on every conv, transposed conv and linear *call*: a module
called three times (weights shared across iterations) counts three times, and a module registered
under two names still has one hook, so it is not counted twice per call. Per call:

- conv: output elements x (input channels / groups) x kernel volume (the channels of the input it was
  given: a conv that folds a self-concatenated input runs over half its ``in_channels``)
- transposed conv: input elements x (out_channels / groups) x kernel volume (counting it by output
  size would overcount a stride-2 one 2^d times)
- linear: output elements x in_features

Norms, activations, pooling and resizing are not counted (as in the papers' conv-only figures).
Parameters are the unique parameter tensors of the module (shared ones once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass(frozen=True)
class Cost:
    """What one forward of a single sample costs."""

    params: int
    macs: int
    input_shape: tuple[int, ...]

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict:
        return {**asdict(self), "input_shape": list(self.input_shape)}


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of unique parameter entries (a tensor shared by two modules counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    batch = inp.shape[0]
    if isinstance(module, _TRANSPOSED):
        per_elem = module.out_channels // module.groups * math.prod(module.kernel_size)
        return inp.numel() // batch * per_elem
    if isinstance(module, _CONVS):
        return out.numel() // batch * (inp.shape[1] // module.groups) * math.prod(module.kernel_size)
    return out.numel() // batch * module.in_features  # nn.Linear


def count_macs(model: nn.Module, input_shape: Sequence[int], device: torch.device | str | None = None) -> int:
    """MACs of one forward of one sample of shape ``(C, *spatial)`` (batch dimension excluded)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    total = [0]

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        total[0] += _layer_macs(module, args[0], out)

    counted = (*_CONVS, *_TRANSPOSED, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0]


def measure_cost(model: nn.Module, input_shape: Sequence[int]) -> Cost:
    """Parameters and MACs for one input shape ``(C, *spatial)``."""
    return Cost(params=count_params(model), macs=count_macs(model, input_shape), input_shape=tuple(input_shape))


@dataclass(frozen=True)
class ActivationMemory:
    """Peak memory of the activations of one forward + backward at a batch size."""

    bytes: int
    how: str  # "measured" (CUDA allocator peak) or "estimated" (tensors saved for backward)

    @property
    def mib(self) -> float:
        return self.bytes / 2**20


def peak_activation_memory(
    model: nn.Module, input_shape: Sequence[int], batch_size: int = 1, device: torch.device | str | None = None
) -> ActivationMemory:
    """Peak activation memory of a training step (forward + backward) at ``batch_size``.

    On a GPU it is measured: the CUDA allocator's peak during the step minus what was allocated
    before it (weights) and the gradients. On the CPU it is estimated: the bytes of every distinct
    tensor storage that autograd saves for the backward pass (the activations alive at the peak,
    which sits at the start of the backward), plus the input and the output; the allocator's
    temporaries (e.g. im2col buffers) are not included, so it is a lower bound.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = torch.randn(batch_size, *input_shape, device=device)
    was_training = model.training
    model.train()
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            model(x).float().mean().backward()
            torch.cuda.synchronize(device)
            grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.grad is not None)
            peak = torch.cuda.max_memory_allocated(device) - base - grads
            model.zero_grad(set_to_none=True)
            return ActivationMemory(bytes=int(peak), how="measured")
        seen: dict[tuple[int, int], int] = {}
        params = {p.data_ptr() for p in model.parameters()}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
        total = sum(seen.values()) + x.numel() * x.element_size() + out.numel() * out.element_size()
        out.float().mean().backward()
        model.zero_grad(set_to_none=True)
        return ActivationMemory(bytes=int(total), how="estimated")
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class MemoryEstimate:
    """What training a network costs in memory, estimated without allocating it (on PyTorch's ``meta`` device)."""

    params: int
    parameter_bytes: int  # weights, gradients and Adam's two moments, float32
    activation_bytes: int  # the tensors autograd saves for the backward pass at the batch, plus input and output

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.activation_bytes


def estimate_training_memory(build: Callable[[], nn.Module], input_shape: Sequence[int],
                             batch_size: int = 1) -> MemoryEstimate:
    """Estimate the memory of a training step of ``build()`` at ``(batch_size, *input_shape)``.

    The network is built and run on the ``meta`` device (shapes only: nothing is allocated, a network too large for
    the machine is measured safely). Activations are the bytes of every distinct tensor saved for backward; the
    allocator's temporaries are not counted, so real peaks are somewhat higher (a GPU run measures them:
    :func:`peak_activation_memory`).
    """
    with torch.device("meta"):
        net = build()
    params = count_params(net)
    weights = {id(p) for p in net.parameters()}  # counted in parameter_bytes
    saved: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in weights:
            saved.setdefault(id(t), t)
        return t

    x = torch.zeros(batch_size, *input_shape, device="meta")
    net.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
    activations = sum(t.numel() * t.element_size() for t in saved.values())
    activations += x.numel() * x.element_size() + out.numel() * out.element_size()
    return MemoryEstimate(params=params, parameter_bytes=params * 4 * 4, activation_bytes=int(activations))


def time_training_step(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1, repeats: int = 5,
                       warmup: int = 1) -> float:
    """Median seconds of one training step of ``model`` on its device (forward, a mean loss, backward, an Adam
    step) at ``(batch_size, *input_shape)`` on random data; no data loading. Absolute figures depend on the
    machine and on what else runs: compare models timed side by side."""
    device = next(model.parameters()).device
    x = torch.randn(batch_size, *input_shape, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(warmup + repeats):
        tic = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(x).float().mean().backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - tic)
    return float(sorted(times)[len(times) // 2])
