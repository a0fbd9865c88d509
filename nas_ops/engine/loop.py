"""The run engine: the one training loop under every method (genotype training, MB-NAS candidates, both BiX-NAS
phases, and the one-shot stages to come).

An engine runs epochs of a :mod:`step <nas_ops.engine.steps>` over the batches of each epoch, steps the learning-
rate scheduler once per epoch, validates when asked, shows a progress bar per epoch and writes one log line per
epoch. The engine owns a run's resume and history (:meth:`RunEngine.fit`): it loads the run's checkpoint
(:class:`RunCheckpoint`) into the model, optimiser, scheduler and generators, continues after the last epoch of the
saved history, and after every epoch appends the epoch's row to the history, asks the caller's ``on_epoch`` for any
loop state of its own (a population, an initial entropy) and writes history, loop state, every stateful object and
every RNG state to the checkpoint, atomically, from rank 0 only. A run killed at any moment and started again
resumes after its last finished epoch and ends with the same numbers as an uninterrupted one.

Why a compact loop of our own rather than MONAI's ``SupervisedTrainer`` (ignite): resume must be bit-identical
after a SIGKILL, which needs the loader's generator, numpy's and python's RNGs and the method's loop state (a
search population, a Pareto front) in the same atomic file as the weights, written at the same moment; ignite's
``Checkpoint`` saves objects but not those states, and resuming a run mid-way in ignite re-enters its event loop
with an epoch counter only. The steps of the searches also train several networks per batch and score several
networks per validation, which is a step function and a validation callback here. MONAI still provides every
piece inside the loop: losses, metrics, inferers, transforms, datasets and the data loader.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch
from tqdm import tqdm

from nas_ops.engine.seeds import seed_epoch
from nas_ops.engine.steps import Step
from nas_ops.search_state import Generator, Resumed, SearchState

log = logging.getLogger(__name__)

Row = dict[str, Any]


@dataclass
class RunCheckpoint:
    """The checkpoint of a run: its :class:`~nas_ops.search_state.SearchState` (file and identity) and what it
    holds besides the loop state: the stateful objects (model, optimiser, scheduler) and the named generators."""

    state: SearchState
    objects: dict[str, Any] = field(default_factory=dict)
    generators: Mapping[str, Generator] = field(default_factory=dict)

    def resume(self) -> Resumed:
        """Load the checkpoint into the objects and generators (see :meth:`SearchState.resume`)."""
        return self.state.resume(self.objects, generators=self.generators)

    def save(self, loop_state: dict[str, Any]) -> None:
        """Write the loop state with every object and RNG state."""
        self.state.save(loop_state, objects=self.objects, generators=self.generators)


class RunEngine:
    """Epochs of ``step`` over ``batches(epoch)``; see the module docstring.

    Args:
        step: the optimisation step of one batch (its ``model`` is put in training mode for every epoch).
        batches: the batches of one epoch, ``batches(epoch) -> iterable of {"image", "label"}`` (re-seeds the
            epoch's augmentation; see :class:`EpochBatches`).
        device: where batches go.
        scheduler: stepped once after every epoch (None: no schedule).
        validate: ``validate(epoch) -> dict`` of scores merged into the epoch's row; None: no validation.
        validate_every: validate after epochs ``e`` with ``validate_every(e)`` true (0-based; default: every epoch).
        checkpoint: written after every epoch with the state ``on_epoch`` returns; None: nothing is written.
        desc: the name of the run in progress bars and log lines.
        num_batches: batches per epoch, for the progress bar.
    """

    def __init__(
        self,
        step: Step,
        batches: Callable[[int], Iterable[dict]],
        device: torch.device,
        *,
        scheduler: Any = None,
        validate: Callable[[int], dict[str, Any]] | None = None,
        validate_every: Callable[[int], bool] | None = None,
        checkpoint: RunCheckpoint | None = None,
        desc: str = "train",
        num_batches: int | None = None,
    ) -> None:
        self.step = step
        self.batches = batches
        self.device = device
        self.scheduler = scheduler
        self.validate = validate
        self.validate_every = validate_every or (lambda epoch: True)
        self.checkpoint = checkpoint
        self.desc = desc
        self.num_batches = num_batches
        self.history: list[Row] = []  # the rows of every epoch of the run so far (fit)

    def resume(self) -> Resumed:
        """Load the checkpoint into the objects and generators: what it held (fresh when there is none)."""
        return self.checkpoint.resume() if self.checkpoint is not None else Resumed(fresh=True)

    def fit(self, epochs: int, on_epoch: Callable[[Row], dict[str, Any] | None] | None = None,
            state: dict[str, Any] | None = None, tags: dict[str, Any] | None = None) -> list[Row]:
        """Train until the history holds ``epochs`` rows; returns the whole history.

        ``state``: the loop state to continue from (its ``"history"``, and the caller's keys); default: the
        checkpoint's, loaded now (:meth:`resume`). Every row starts with ``tags`` (e.g. the phase of a search). After
        each epoch ``on_epoch(row)`` may return loop state of its own, saved beside the history (``self.history``
        already holds the row).
        """
        loop = dict(self.resume().state if state is None else state)
        self.history = list(loop.pop("history", []))
        if self.history:
            where = f" from {self.checkpoint.state.path}" if self.checkpoint is not None else ""
            log.info("%s: resuming at epoch %d/%d%s", self.desc, len(self.history) + 1, epochs, where)

        def record(row: Row) -> dict[str, Any]:
            row = {**(tags or {}), **row}
            self.history.append(row)
            loop.update((on_epoch(row) if on_epoch is not None else None) or {})
            return {**loop, "history": self.history}

        self.run(range(len(self.history), epochs), record)
        return self.history

    def train_epoch(self, epoch: int) -> float:
        """One pass of the step over the epoch's batches; returns the mean loss per sample."""
        self.step.model.train()
        total, n = 0.0, 0
        bar = tqdm(self.batches(epoch), desc=f"{self.desc} epoch {epoch + 1}", total=self.num_batches, leave=False,
                   dynamic_ncols=True, mininterval=2.0)
        for batch in bar:
            image, label = batch["image"].to(self.device), batch["label"].to(self.device)
            loss = self.step(image, label)
            total += loss * image.shape[0]
            n += image.shape[0]
            bar.set_postfix(loss=f"{total / n:.4f}")
        return total / max(n, 1)

    def run_epoch(self, epoch: int) -> Row:
        """Train one epoch, step the scheduler, validate if due: the epoch's row (epoch is 1-based in the row)."""
        tic = time.perf_counter()
        row: Row = {"epoch": epoch + 1, "lr": self.step.optimizer.param_groups[0]["lr"]}
        row["loss"] = self.train_epoch(epoch)
        if self.scheduler is not None:
            self.scheduler.step()
        if self.validate is not None and self.validate_every(epoch):
            row.update(self.validate(epoch))
        row["seconds"] = round(time.perf_counter() - tic, 2)
        return row

    def run(self, epochs: range, on_epoch: Callable[[Row], dict[str, Any]] | None = None, total: int | None = None,
            ) -> list[Row]:
        """Run ``epochs`` (e.g. ``range(resumed_epoch, 100)``); after each, ``on_epoch(row)`` returns the loop state
        the checkpoint keeps. Returns the rows of the epochs run."""
        rows = []
        bar = tqdm(epochs, desc=self.desc, initial=epochs.start, total=total or epochs.stop, dynamic_ncols=True)
        for epoch in bar:
            row = self.run_epoch(epoch)
            rows.append(row)
            loop_state = on_epoch(row) if on_epoch is not None else {}
            if self.checkpoint is not None:
                self.checkpoint.save(loop_state)
            bar.set_postfix({k: f"{_mean(v):.4f}" for k, v in row.items() if k == "loss" or k.startswith("val_")})
            log.info("%s epoch %d/%d: %s (%.1fs)", self.desc, epoch + 1, total or epochs.stop, describe_row(row),
                     row["seconds"])
        return rows


def _mean(value: Any) -> float:
    """A score for the progress bar: a number, or the mean of a list of numbers (per class or per network)."""
    if isinstance(value, (list, tuple)):
        flat = [v for v in value if isinstance(v, (int, float))]
        return sum(flat) / len(flat) if flat else float("nan")
    return float(value) if isinstance(value, (int, float)) else float("nan")


def describe_row(row: Row) -> str:
    """The scores of an epoch's row, readable: ``loss 0.4123, dice 0.7012``."""
    parts = []
    for key, value in row.items():
        if key in ("epoch", "seconds"):
            continue
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif isinstance(value, list) and value and all(isinstance(v, float) for v in value) and len(value) <= 8:
            parts.append(f"{key} [{', '.join(f'{v:.4f}' for v in value)}]")
    return ", ".join(parts)


class EpochBatches:
    """The batches of each epoch from a data loader over a dataset with random transforms.

    ``batches(epoch_key)`` re-seeds the dataset's transforms for that epoch (:func:`nas_ops.engine.seeds.seed_epoch`)
    and yields at most ``limit`` batches; the loader shuffles with its own ``generator`` (checkpoint it).
    """

    def __init__(self, loader: Any, seed: int, limit: int | None = None) -> None:
        self.loader = loader
        self.seed = seed
        self.limit = limit

    def __call__(self, epoch_key: int) -> Iterable[dict]:
        seed_epoch(self.loader.dataset, self.seed, epoch_key)
        return islice(iter(self.loader), self.limit)

    def __len__(self) -> int:
        n = len(self.loader)
        return n if self.limit is None else min(n, self.limit)
