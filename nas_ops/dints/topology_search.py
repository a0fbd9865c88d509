"""DiNTS's topology search through MONAI's ``TopologySearch``/``DiNTS``, on this project's run engine and data.

As in the DiNTS paper and MONAI's DiNTS bundle: the fold's training cases are halved, one half updates the
weights (SGD with polynomial decay), the other the architecture (``log_alpha_a`` for paths, ``log_alpha_c`` for
cell ops; Adam). The first ``warmup_epochs`` train the weights only; afterwards every weight step is followed by
an architecture step whose loss is the segmentation loss plus, growing linearly from 0 to 1 over the remaining
epochs, the entropies of both codes, the gap of the expected memory to ``ram_cost_factor`` of the full space's,
and 0.001 x the topology entropy. ``TopologySearch.decode()`` then gives the network, stored as a ``dints``
genotype (:mod:`nas_ops.dints.network`).

The checkpoint (``dints_state.pt``, every epoch, atomically: weights, both codes, both optimisers, the loaders'
generators) lets a killed search resume to the same genotype.
"""


from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import DiNTS, TopologySearch
from torch import nn

from nas_ops.data.loaders import make_3d_datasets
from nas_ops.data.setup import FoldData, load_checked_dataset, make_loaders
from nas_ops.data.splits import fold_items
from nas_ops.dints.config import DiNTSConfig
from nas_ops.dints.space import quiet
from nas_ops.engine.loop import EpochBatches, RunCheckpoint, RunEngine
from nas_ops.engine.seeds import seed_everything, stream_seed
from nas_ops.errors import InputError
from nas_ops.search_state import SearchState
from nas_ops.training.losses import make_loss
from nas_ops.training.metrics import sliding_window_dice

log = logging.getLogger(__name__)
STATE_FILE, RESULT_FILE = "dints_state.pt", "dints_result.json"


def supernet(cfg: DiNTSConfig, in_channels: int, out_channels: int) -> DiNTS:
    """MONAI's DiNTS over the full ``TopologySearch`` space of the config."""
    space = quiet(TopologySearch, channel_mul=cfg.channel_mul, num_blocks=cfg.num_blocks, num_depths=cfg.num_depths,
                  spatial_dims=3, use_downsample=True, device="cpu")
    return DiNTS(dints_space=space, in_channels=in_channels, num_classes=out_channels, spatial_dims=3,
                 use_downsample=True)


def weight_parameters(model: DiNTS) -> list[nn.Parameter]:
    """The weights of a DiNTS supernet without its architecture codes (MONAI's ``weight_parameters`` of ``DiNTS``
    includes ``log_alpha_a``/``log_alpha_c``)."""
    return [p for n, p in model.named_parameters() if "log_alpha" not in n]


@contextlib.contextmanager
def meta_parameters() -> Iterator[None]:
    """Create parameters on the meta device while the rest of a constructor runs on the CPU.

    MONAI's DiNTS spaces read their own code tensors while they build (which the meta device cannot); this lets
    the memory estimate build the supernet with no more than one layer's weights allocated at a time."""
    register = nn.Module.register_parameter

    def to_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = to_meta  # type: ignore[method-assign]
    try:
        with torch.device("cpu"):
            yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def halves(dataset_dir: str | Path, cfg: DiNTSConfig, seed: int, fold: int, n_folds: int, trusted: str | None
           ) -> tuple[FoldData, FoldData]:
    """The fold with its training cases halved: ``(weights half with the validation cases, architecture half)``."""
    ds = load_checked_dataset(dataset_dir, trusted=trusted)
    train_items, val_items = fold_items(ds, fold, n_folds, seed)
    if len(train_items) < 2:
        raise InputError(ds.json_path, "training", f"fold {fold} has {len(train_items)} training case(s): DiNTS "
                         "needs two or more (one half trains the weights, the other the architecture)")
    weight_items, arch_items = train_items[0::2], train_items[1::2]
    args = {"patch_size": cfg.patch_size, "samples_per_volume": cfg.samples_per_volume}
    w_train, val = make_3d_datasets(ds, weight_items, val_items, seed=seed, **args)
    a_train, _ = make_3d_datasets(ds, arch_items, [], seed=stream_seed(seed, 6_000), **args)
    return FoldData(ds, weight_items, val_items, w_train, val), FoldData(ds, arch_items, [], a_train, [])


class DiNTSStep:
    """One weight step on a batch of the weights half, then (after warm-up) one architecture step on a batch of
    the architecture half (see the module docstring). ``begin_epoch(epoch)`` starts the epoch's architecture
    batches; ``arch_losses`` collects the architecture losses since the last :meth:`take_arch_losses`."""

    def __init__(self, model: DiNTS, loss_fn: Any, optimizer: torch.optim.Optimizer,
                 arch_optimizer: torch.optim.Optimizer, arch_batches: EpochBatches, cfg: DiNTSConfig,
                 device: torch.device) -> None:
        self.model, self.loss_fn, self.optimizer, self.arch_optimizer = model, loss_fn, optimizer, arch_optimizer
        self.space: TopologySearch = model.dints_space
        self.alphas = [self.space.log_alpha_a, self.space.log_alpha_c]
        self.weights = weight_parameters(model)
        self.arch_batches, self.cfg, self.device = arch_batches, cfg, device
        self.epoch, self.arch_losses = 0, []
        self._arch: Iterator[dict] = iter(())

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._arch = iter(self.arch_batches(epoch)) if epoch >= self.cfg.warmup_epochs else iter(())

    def _next_arch_batch(self) -> dict:
        try:
            return next(self._arch)
        except StopIteration:  # fewer architecture batches than weight batches: go round again
            self._arch = iter(self.arch_batches(self.epoch))
            return next(self._arch)

    @staticmethod
    def _grad(params: list[nn.Parameter], on: bool) -> None:
        for p in params:
            p.requires_grad_(on)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> float:
        self._grad(self.alphas, False)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(image), label)
        loss.backward()
        self.optimizer.step()
        self._grad(self.alphas, True)
        if self.epoch >= self.cfg.warmup_epochs:
            self._arch_step(image.shape)
        return float(loss.detach())

    def _arch_step(self, shape: torch.Size) -> None:
        batch = self._next_arch_batch()
        image, label = batch["image"].to(self.device), batch["label"].to(self.device)
        self._grad(self.weights, False)
        self.arch_optimizer.zero_grad(set_to_none=True)
        space, cfg = self.space, self.cfg
        weight = (self.epoch - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs)
        probs_a, _ = space.get_prob_a(child=True)
        entropy_a = -(probs_a * torch.log(probs_a + 1e-5)).mean()
        entropy_c = -(F.softmax(space.log_alpha_c, -1) * F.log_softmax(space.log_alpha_c, -1)).mean()
        topology = space.get_topology_entropy(probs_a)
        ram = space.get_ram_cost_usage(shape) / space.get_ram_cost_usage(shape, full=True)
        loss = self.loss_fn(self.model(image), label)
        loss = loss + weight * (entropy_a + entropy_c + torch.abs(cfg.ram_cost_factor - ram) + 0.001 * topology)
        loss.backward()
        self.arch_optimizer.step()
        self._grad(self.weights, True)
        self.arch_losses.append(float(loss.detach()))

    def take_arch_losses(self) -> float | None:
        losses, self.arch_losses = self.arch_losses, []
        return float(np.mean(losses)) if losses else None


def train_and_decode(data: FoldData, arch: FoldData, cfg: DiNTSConfig, state: SearchState, seed: int,
                     device: torch.device) -> dict[str, Any]:
    """Search on the run engine (checkpointed every epoch), then decode; returns the result kept in ``state``."""
    ds = data.dataset
    seed_everything(stream_seed(seed, 7_000))  # the supernet's initial weights and codes
    model = supernet(cfg, ds.in_channels, ds.num_classes).to(device)
    optimizer = torch.optim.SGD(weight_parameters(model), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    arch_optimizer = torch.optim.Adam([model.dints_space.log_alpha_a, model.dints_space.log_alpha_c],
                                      lr=cfg.arch_lr, betas=(0.5, 0.999), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=cfg.epochs, power=0.9)
    loaders = make_loaders(data, cfg.batch_size, seed)
    arch_loaders = make_loaders(arch, cfg.batch_size, stream_seed(seed, 8_000))
    step = DiNTSStep(model, make_loss(cfg.loss), optimizer, arch_optimizer,
                     EpochBatches(arch_loaders.train, stream_seed(seed, 8_000), cfg.train_batches), cfg, device)
    checkpoint = RunCheckpoint(state, {"model": model, "optimiser": optimizer, "arch_optimiser": arch_optimizer,
                                       "scheduler": scheduler},
                               {"loader": loaders.generator, "arch_loader": arch_loaders.generator})
    weight_batches = EpochBatches(loaders.train, seed, cfg.train_batches)

    def batches(epoch: int):
        step.begin_epoch(epoch)
        return weight_batches(epoch)

    engine = RunEngine(step, batches, device, scheduler=scheduler, checkpoint=checkpoint, desc="DiNTS search",
                       num_batches=len(weight_batches))

    def on_epoch(row: dict[str, Any]) -> None:
        arch_loss = step.take_arch_losses()
        if arch_loss is not None:
            row["arch_loss"] = arch_loss

    log.info("DiNTS search: %d blocks x %d levels, %d epochs (%d warm-up)", cfg.num_blocks, cfg.num_depths,
             cfg.epochs, cfg.warmup_epochs)
    history = engine.fit(cfg.epochs, on_epoch)
    model.eval()
    with torch.no_grad():
        node_a, arch_code_a, arch_code_c, _ = model.dints_space.decode()
    dice = sliding_window_dice([model], data, cfg.patch_size, device, cfg.val_batches)[0]  # the relaxed supernet
    return {"node_a": node_a.tolist(), "arch_code_a": arch_code_a.astype(int).tolist(),
            "arch_code_c": arch_code_c.astype(int).tolist(), "supernet_dice": dice,
            "loss": [row["loss"] for row in history], "arch_loss": [row.get("arch_loss") for row in history]}
