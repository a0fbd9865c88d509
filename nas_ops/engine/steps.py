"""Steps: what the run engine does with one batch. A method that trains differently brings its own step.

A step is a callable ``step(image, label) -> loss``: it runs the forward and backward passes and the optimiser
update for one batch and returns the loss as a float (for several networks trained at once, their mean).
It exposes ``model`` (the engine switches it to training mode) and ``optimizer`` (the engine reads its learning
rate for the log). Here: :class:`SupervisedStep` (one network) and :class:`SampledPathStep` (one-shot supernets:
one path per batch); BiX-NAS's Phase 2 brings its shared-head step (:mod:`nas_ops.bixnas.phase2`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn


class Step(Protocol):
    """One optimisation step on one batch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> float: ...


class SupervisedStep:
    """``loss(model(image), label)``, backward, optimiser step."""

    def __init__(self, model: nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(image), label)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


class SampledPathStep:
    """One-shot supernet training with uniform path sampling: each batch trains the path ``sample(rng)``.

    ``model(image, path)`` runs one path of the supernet; ``rng`` is the step's own generator (checkpoint it with
    the run, so a resumed run samples the same paths). ``last_path`` is the path of the latest batch.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        optimizer: torch.optim.Optimizer,
        sample: Callable[[np.random.Generator], Any],
        rng: np.random.Generator,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.sample = sample
        self.rng = rng
        self.last_path: Any = None

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> float:
        self.last_path = self.sample(self.rng)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(image, self.last_path), label)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())
