"""Every seed a run derives from its ``seed``, in one place, so a resumed run draws the same numbers.

A run has one user seed. Everything random is derived from it here: the global RNGs at a run's start
(:func:`seed_everything`), the augmentation of each epoch (:func:`epoch_seed`), and independent streams for the
parts of a search that must not depend on what ran before them (:func:`stream_seed`).
"""

from __future__ import annotations

import numpy as np
from monai.utils import set_determinism

EPOCH_MULTIPLIER = 100_003  # epoch seeds of two run seeds do not collide for the first 100,003 epochs
SEED_MODULUS = 2**31


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (MONAI's ``set_determinism``) at the start of a run or of a part of it."""
    set_determinism(seed)


def epoch_seed(seed: int, epoch_key: int) -> int:
    """The augmentation seed of one epoch; ``epoch_key`` is unique per epoch within a run."""
    return (seed * EPOCH_MULTIPLIER + epoch_key) % SEED_MODULUS


def stream_seed(seed: int, offset: int) -> int:
    """The seed of an independent part of a run (e.g. BiX-NAS Phase 2), ``offset`` naming that part (any value
    below 2**32, what MONAI's ``set_determinism`` and numpy take)."""
    return (seed + offset) % 2**32


def stream_generator(seed: int, stream: int) -> np.random.Generator:
    """A numpy generator of its own for one use within a run (a sampler, a mutation), ``stream`` naming it."""
    return np.random.default_rng([seed, stream])


def stage_epoch_key(stage: int, epoch: int, base: int = 1_000_000) -> int:
    """The epoch key of epoch ``epoch`` of stage ``stage`` of a staged search: unique for fewer than 1,000 epochs
    per stage (checked), and apart from a plain run's keys (below ``base``)."""
    if not 0 <= epoch < 1_000:
        raise ValueError(f"a stage's epoch keys are unique for epochs 0..999, got {epoch}")
    return base + 1_000 * stage + epoch


def seed_epoch(dataset, seed: int, epoch_key: int) -> None:
    """Re-seed a dataset's random transforms for one epoch, so a resumed run augments as the uninterrupted one."""
    transform = getattr(dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=epoch_seed(seed, epoch_key))
