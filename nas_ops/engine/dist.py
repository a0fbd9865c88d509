"""Which process of a run writes: rank 0 of a torch.distributed job, or the only process.

Every file a run writes goes through :func:`nas_ops.atomic.atomic_write`, which asks :func:`is_main_process`;
so a method runs unchanged under ``torchrun`` and only one rank writes its checkpoints, logs and genotypes.
"""

from __future__ import annotations

import os

import torch.distributed as dist


def rank() -> int:
    """This process's rank: the process group's once it exists, else ``$RANK`` (set by torchrun), else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process writes the run's files."""
    return rank() == 0
