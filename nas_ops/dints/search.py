"""The DiNTS search through MONAI's ``TopologySearch``/``DiNTS``, on this project's run engine and data.

As in the DiNTS paper and MONAI's DiNTS bundle: the fold's training cases are halved, one half updates the
weights (SGD with polynomial decay), the other the architecture (``log_alpha_a`` for paths, ``log_alpha_c`` for
cell ops; Adam). The first ``warmup_epochs`` train the weights only; afterwards every weight step is followed by
an architecture step whose loss is the segmentation loss plus, growing linearly from 0 to 1 over the remaining
epochs, the entropies of both codes, the gap of the expected memory to ``ram_cost_factor`` of the full space's,
and 0.001 x the topology entropy. ``TopologySearch.decode()`` then gives the network, stored as a ``dints``
genotype (:mod:`nas_ops.dints.network`).

Writes into ``output_dir``: ``dints_state.pt`` (every epoch, atomically: weights, both codes, both optimisers,
the loaders' generators), ``dints_result.json``, ``genotype.json``. A killed search resumes to the same genotype;
a finished one is reported; one of another identity is refused, naming what changed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import DiNTS, TopologySearch
from torch import nn

from nas_ops.bundle import entry, prepare_process
from nas_ops.config import (
    ConfigBlock,
    Fraction,
    NFolds,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Rule,
    Size3D,
    check_output_dir,
)
from nas_ops.data.loaders import make_3d_datasets
from nas_ops.data.setup import FoldData, dataset_identity, load_checked_dataset, make_loaders
from nas_ops.data.splits import fold_items
from nas_ops.dints.network import dints_genotype, quiet
from nas_ops.engine.loop import EpochBatches, RunCheckpoint, RunEngine
from nas_ops.engine.seeds import seed_everything, stream_seed
from nas_ops.errors import InputError
from nas_ops.resources import check_network_memory
from nas_ops.search_state import SearchState
from nas_ops.training.losses import make_loss
from nas_ops.training.metrics import sliding_window_dice

log = logging.getLogger(__name__)
CONFIG_SOURCE = "search config"
STATE_FILE, RESULT_FILE, GENOTYPE_FILE = "dints_state.pt", "dints_result.json", "genotype.json"


@dataclass(frozen=True)
class DiNTSConfig(ConfigBlock):
    """Every knob of the DiNTS search: the ``dints`` block of the C2FNAS bundle's ``configs/search.json``.

    Defaults: MONAI's DiNTS bundle's space (12 blocks x 4 levels, channel_mul 0.5) and optimisers; the budget is
    the C2FNAS search's default supernet epochs (8 groups x 50 + 50), half of them warm-up.
    """

    patch_size: Size3D = (96, 96, 96)
    samples_per_volume: PositiveInt = 2
    batch_size: PositiveInt = 1
    loss: Literal["dice_ce", "dice", "foreground_dice"] = "dice_ce"
    lr: PositiveFloat = 0.025  # weights: SGD, momentum 0.9, polynomial decay
    weight_decay: Annotated[float, Rule(min=0.0)] = 4e-5
    arch_lr: PositiveFloat = 1e-3  # architecture codes: Adam
    channel_mul: Annotated[float, Rule(min=1 / 32, max=8.0)] = 0.5  # level l: 32 * channel_mul * 2**(l+1) channels
    num_blocks: Annotated[int, Rule(min=1, max=64)] = 12
    num_depths: Annotated[int, Rule(min=2, max=6)] = 4
    epochs: PositiveInt = 450
    warmup_epochs: NonNegativeInt = 225
    ram_cost_factor: Fraction = 0.8  # the architecture's expected memory, as a share of the full space's
    train_batches: PositiveInt | None = None
    val_batches: PositiveInt | None = None

    def check(self, source: str | None, prefix: str = "") -> None:
        stride = 2 ** self.num_depths  # the stem's 2 x the levels below the first
        for i, s in enumerate(self.patch_size):
            if s % stride or s < 2 * stride:
                raise InputError(source, f"{prefix}patch_size[{i}]", f"{s} must be a multiple of {stride} and at "
                                 f"least {2 * stride} with num_depths {self.num_depths}")
        if self.warmup_epochs >= self.epochs:
            raise InputError(source, f"{prefix}warmup_epochs", f"{self.warmup_epochs} leaves no epoch of the "
                             f"{self.epochs} to search the architecture: use fewer than epochs")
        if int(32 * self.channel_mul) < 1:
            raise InputError(source, f"{prefix}channel_mul", f"{self.channel_mul} gives no channel at level 0")


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
    history: list[dict[str, Any]] = checkpoint.resume().state.get("history", [])
    if history:
        log.info("DiNTS search: resuming at epoch %d/%d from %s", len(history) + 1, cfg.epochs, state.path)
    weight_batches = EpochBatches(loaders.train, seed, cfg.train_batches)

    def batches(epoch: int):
        step.begin_epoch(epoch)
        return weight_batches(epoch)

    engine = RunEngine(step, batches, device, scheduler=scheduler, checkpoint=checkpoint,
                       desc=f"DiNTS search ({cfg.num_blocks} blocks x {cfg.num_depths} levels)",
                       num_batches=len(weight_batches))

    def on_epoch(row: dict[str, Any]) -> dict[str, Any]:
        arch_loss = step.take_arch_losses()
        if arch_loss is not None:
            row["arch_loss"] = arch_loss
        history.append(row)
        return {"history": history}

    engine.run(range(len(history), cfg.epochs), on_epoch)
    model.eval()
    with torch.no_grad():
        node_a, arch_code_a, arch_code_c, _ = model.dints_space.decode()
    dice = sliding_window_dice([model], data, cfg.patch_size, device, cfg.val_batches)[0]  # the relaxed supernet
    return {"node_a": node_a.tolist(), "arch_code_a": arch_code_a.astype(int).tolist(),
            "arch_code_c": arch_code_c.astype(int).tolist(), "supernet_dice": dice,
            "loss": [row["loss"] for row in history], "arch_loss": [row.get("arch_loss") for row in history]}


@entry
def search(
    dataset_dir: str | Path,
    output_dir: str | Path,
    config: dict[str, Any] | None = None,
    seed: NonNegativeInt = 0,
    device: str = "auto",
    fold: NonNegativeInt = 0,
    n_folds: NFolds = 5,
    num_threads: PositiveInt | None = None,
    memory_limit_gb: PositiveFloat | None = None,
    config_source: str = CONFIG_SOURCE,
    prefix: str = "",
    **more: Any,
) -> dict[str, Any]:
    """Run (or resume, or report) the DiNTS search; returns its summary.

    ``config``: the ``dints`` block (:class:`DiNTSConfig`; ``prefix`` names its keys in messages, e.g.
    ``"dints#"``); its keys may also come as keyword arguments. Before anything is written, the supernet's training
    step at ``patch_size`` and ``batch_size`` must fit in ``memory_limit_gb`` (default: 80 % of the device's).
    """
    source = config_source
    if fold >= n_folds:
        raise InputError(source, "fold", f"must be < n_folds = {n_folds}, got {fold}")
    cfg = DiNTSConfig.from_values(config, source, prefix, **more)
    dev = prepare_process(device, num_threads, source)
    output_dir = check_output_dir(output_dir, source=source)
    ds = load_checked_dataset(dataset_dir)
    if not ds.is_3d:
        raise InputError(ds.json_path, "training", "holds 2D images: DiNTS searches 3D networks on volumes")

    def probe() -> DiNTS:
        with meta_parameters():
            return supernet(cfg, ds.in_channels, ds.num_classes)

    check_network_memory(probe, (ds.in_channels, *cfg.patch_size), cfg.batch_size, dev, memory_limit_gb,
                         f"{prefix}patch_size", source, what="the DiNTS supernet's training",
                         batch_key=f"{prefix}batch_size", samples_per_item=cfg.samples_per_volume)
    identity = {"seed": seed, "fold": fold, "n_folds": n_folds, "dataset": dataset_identity(dataset_dir),
                **cfg.as_dict()}
    state = SearchState(output_dir, STATE_FILE, RESULT_FILE, identity=identity, what="DiNTS search")
    if not state.inspect().finished:
        data, arch = halves(dataset_dir, cfg, seed, fold, n_folds, ds.fingerprint)
        output_dir.mkdir(parents=True, exist_ok=True)
        state.finish(train_and_decode(data, arch, cfg, state, seed, dev))
    return _write_genotype(output_dir, cfg, ds, dataset_dir, seed, state.result)


def _write_genotype(output_dir: Path, cfg: DiNTSConfig, ds, dataset_dir, seed: int, result: dict[str, Any]
                    ) -> dict[str, Any]:
    from nas_ops.cost_model import count_macs, count_params
    from nas_ops.registry import build_network

    provenance = {
        "method": "DiNTS through MONAI's TopologySearch/DiNTS: weights and architecture codes on halves of the "
                  "training cases, then TopologySearch.decode()",
        "dataset": ds.name, "dataset_dir": str(dataset_dir), "dataset_fingerprint": ds.fingerprint, "seed": seed,
        "search_config": cfg.as_dict(), "supernet_dice": result["supernet_dice"], "patch_size": list(cfg.patch_size),
    }
    genotype = dints_genotype(result["node_a"], result["arch_code_a"], result["arch_code_c"], ds.in_channels,
                              ds.num_classes, name="dints-searched", provenance=provenance,
                              channel_mul=cfg.channel_mul, num_blocks=cfg.num_blocks, num_depths=cfg.num_depths)
    with torch.device("meta"):
        net = build_network(genotype)
    params, macs = count_params(net), count_macs(net, (ds.in_channels, *cfg.patch_size), device="meta")
    genotype.provenance.update(params=params, macs=macs)
    path = output_dir / GENOTYPE_FILE
    summary = {"variant": "dints", "dice": result["supernet_dice"], "params": params, "macs": macs,
               "active_paths": int(np.asarray(result["arch_code_a"]).sum()), "genotype": str(path)}
    if genotype.matches_file(path):
        log.info("the DiNTS search in %s has finished: %s", output_dir, summary)
        return summary
    genotype.save(path)
    log.info("DiNTS search done: %s", summary)
    return summary
