"""This process: the device it computes on, its torch CPU threads, and its rank in a distributed run.

The floor of the library (it imports nothing of ``nas_ops`` but the errors): atomic writes ask :func:`is_main_process`
so that only rank 0 of a ``torchrun`` job writes, and every entry resolves its ``device`` key here.
"""

from __future__ import annotations

import os
import re

import torch
import torch.distributed as dist

from nas_ops.errors import InputError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def rank() -> int:
    """This process's rank: the process group's once it exists, else ``$RANK`` (set by torchrun), else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process writes the run's files."""
    return rank() == 0


def resolve_device(device: str | torch.device = "auto", source: str | None = None) -> torch.device:
    """The ``device`` key (``auto``, ``cpu``, ``cuda``, ``cuda:<index>``) as a torch device: ``auto`` is the GPU when
    there is one, else the CPU; a CUDA device must exist on this machine. ``source``: the config named in a refusal."""
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


def set_threads(num_threads: int | None, source: str | None = None) -> None:
    """torch's CPU threads for this process (None: torch's default)."""
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise InputError(source, "num_threads", f"must be a positive integer or null, got {num_threads!r}")
        torch.set_num_threads(num_threads)


def prepare_process(device: str, num_threads: int | None, source: str | None = None) -> torch.device:
    """A run's device (checked: known, and present on this machine) and torch's CPU threads."""
    dev = resolve_device(device, source)
    set_threads(num_threads, source)
    return dev
