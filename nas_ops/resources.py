"""Resource bounds checked before anything is trained: a sanity cap on parameters, and the memory a training step
needs at the configured input and batch against what the device has (``memory_limit_gb``).

Both are counted on PyTorch's ``meta`` device (the parameters with :func:`nas_ops.cost_model.count_params`, the
memory with :func:`nas_ops.cost_model.estimate_training_memory`), so a genotype too large for the machine is
refused with a message instead of taking the machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from nas_ops.cost_model import MemoryEstimate, count_params, estimate_training_memory
from nas_ops.errors import GenotypeError, InputError
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network

DEFAULT_MAX_PARAMS = 500_000_000  # 16 x nnU-Net's 3D U-Net (31 M): beyond it, a genotype is almost surely a typo
MEMORY_MARGIN = 0.8  # use at most this share of what the device has, by default


def device_memory_bytes(device: torch.device) -> int:
    """Memory of ``device``: the GPU's total, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _gib(n: float) -> str:
    """Bytes as GiB with enough digits to tell small figures apart (0.0042 GiB, 7.3 GiB)."""
    return f"{n / 2**30:.2g} GiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def check_parameters(genotype: Genotype, max_params: int = DEFAULT_MAX_PARAMS) -> int:
    """The genotype's parameter count (counted without allocating it); refused above ``max_params``."""
    with torch.device("meta"):
        params = count_params(build_network(genotype))
    if params > max_params:
        keys = ", ".join(sorted(genotype.spec)) or "its spec"
        raise GenotypeError(genotype.source, "spec", f"the network has {params:,} parameters, more than max_params "
                            f"= {max_params:,}: lower the widths or kernel sizes of the spec ({keys}), or raise "
                            "max_params")
    return params


def check_memory(genotype: Genotype, input_size: Sequence[int], batch_size: int, device: torch.device,
                 memory_limit_gb: float | None = None, size_key: str = "spatial_size",
                 source: str | None = None, batch_key: str = "batch_size", samples_per_item: int = 1
                 ) -> MemoryEstimate:
    """Refuse a training of ``genotype`` whose estimated memory exceeds ``memory_limit_gb`` (default: 80 % of the
    device's), naming the keys to lower and the largest batch that fits."""
    return check_network_memory(lambda: build_network(genotype), (genotype.in_channels, *input_size), batch_size,
                                device, memory_limit_gb, size_key, source, batch_key=batch_key,
                                samples_per_item=samples_per_item)


def check_network_memory(build: Callable[[], nn.Module], input_shape: Sequence[int], batch_size: int,
                         device: torch.device, memory_limit_gb: float | None = None, size_key: str = "spatial_size",
                         source: str | None = None, what: str = "training",
                         batch_key: str = "batch_size", samples_per_item: int = 1) -> MemoryEstimate:
    """Refuse a training step of ``build()`` (a network or a search's supernet) at ``batch_size`` items of
    ``samples_per_item`` inputs of ``input_shape`` each (3D training: ``samples_per_volume`` patches per volume)
    whose estimated memory exceeds ``memory_limit_gb`` (default: 80 % of the device's)."""
    input_size = list(input_shape[1:])
    inputs = batch_size * samples_per_item
    try:
        estimate = estimate_training_memory(build, input_shape, inputs)
    except (RuntimeError, ValueError) as err:  # the first training step would fail the same way
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(source, size_key, f"the network cannot run one step of {what} at batch {batch_size} and "
                         f"{size_key} {input_size} ({type(err).__name__}: {first}): use a larger {size_key} "
                         "or batch, or a network that downsamples less") from None
    limit = memory_limit_gb * 2**30 if memory_limit_gb is not None else MEMORY_MARGIN * device_memory_bytes(device)
    if estimate.total_bytes > limit:
        per_item = estimate.activation_bytes / batch_size
        fits = int((limit - estimate.parameter_bytes) // per_item) if limit > estimate.parameter_bytes else 0
        samples_key = batch_key.replace("batch_size", "samples_per_volume")
        smaller = f"{size_key}" + (f" or {samples_key}" if samples_per_item > 1 else "")
        if fits >= 1:
            fix = f"lower {batch_key} (at most {fits} fits) or {smaller}, or set memory_limit_gb"
        elif limit > estimate.parameter_bytes:
            fix = f"not even {batch_key} 1 fits: lower {smaller}, or set memory_limit_gb"
        else:
            fix = "the weights alone do not fit: use a smaller network, or set memory_limit_gb"
        at = f"batch {batch_size}" + (f" ({inputs} patches: {samples_per_item} per volume)" if samples_per_item > 1
                                      else "")
        raise InputError(source, batch_key, f"{what} needs about {_gib(estimate.total_bytes)} at {at} and "
                         f"{size_key} {input_size} (weights, gradients and Adam {_gib(estimate.parameter_bytes)}, "
                         f"activations {_gib(estimate.activation_bytes)}), more than the limit of {_gib(limit)}: "
                         f"{fix}")
    return estimate
