"""The device a run uses, from the ``device`` config key: ``auto``, ``cpu``, ``cuda`` or ``cuda:<index>``."""

from __future__ import annotations

import re

import torch

from nas_ops.errors import InputError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device: str | torch.device = "auto", source: str | None = None) -> torch.device:
    """``"auto"`` is the GPU when there is one, else the CPU; a CUDA device must exist on this machine. ``source``:
    the config named in a refusal."""
    name = str(device)
    if not _DEVICE.match(name):
        raise InputError(source, "device", f"must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(source, "device", f"is {name!r} but this machine has no CUDA GPU: use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(source, "device", f"is {name!r} but this machine has {torch.cuda.device_count()} GPU(s)")
    return dev
