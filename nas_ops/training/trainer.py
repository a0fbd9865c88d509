"""Train any genotype on one fold of an MSD dataset; resumable, with progress and a readable log.

Writes ``<output_dir>/model.pt`` (a state dict), ``<output_dir>/genotype.json`` (the genotype it
belongs to) and ``<output_dir>/train_log.json`` (loss and validation Dice per epoch). A checkpoint
(``train_state.pt``) is written every epoch: run the same command again after a kill and training
continues where it stopped, with the same result as an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data import DataLoader
from monai.utils import set_determinism

from nas_ops.atomic import atomic_write, write_json_atomic
from nas_ops.cost_model import measure_cost
from nas_ops.data.setup import prepare_fold
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network
from nas_ops.search_state import SearchState, refuse_other_settings
from nas_ops.training.loop import make_optimiser, resolve_device, train_epoch, validate_dice
from nas_ops.training.losses import make_loss

log = logging.getLogger(__name__)


def seed_epoch(dataset, seed: int, epoch: int) -> None:
    """Re-seed a dataset's random transforms for one epoch, so a resumed run augments as the uninterrupted one."""
    transform = getattr(dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=(seed * 100_003 + epoch) % 2**31)


def train(
    genotype_path: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    fold: int = 0,
    n_folds: int = 5,
    seed: int = 0,
    device: str = "auto",
    epochs: int = 100,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimiser: str = "adam",
    loss: str = "dice_ce",
    lr_power: float = 0.9,
    val_interval: int = 1,
    spatial_size: Sequence[int] = (256, 256),
    slice_axis: int = 2,
    patch_size: Sequence[int] = (64, 64, 64),
    samples_per_volume: int = 2,
    keep_empty_fraction: float = 0.25,
    num_workers: int = 0,
) -> dict:
    """Train the network of ``genotype_path`` on fold ``fold``; returns the summary written to train_log.json.

    Adam with polynomial decay (power ``lr_power``) by default; validation Dice every ``val_interval`` epochs.
    """
    genotype = Genotype.load(genotype_path)
    output_dir = Path(output_dir)
    set_determinism(seed)
    data = prepare_fold(
        dataset_dir, genotype.spatial_dims, fold, n_folds, seed, spatial_size, slice_axis, patch_size,
        samples_per_volume, keep_empty_fraction, genotype=genotype, genotype_source=genotype_path,
    )
    device = resolve_device(device)
    model = build_network(genotype).to(device)
    opt = make_optimiser(model, optimiser, lr, weight_decay)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=epochs, power=lr_power)
    loss_fn = make_loss(loss)
    loader_rng = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                              generator=loader_rng, drop_last=len(data.train) > batch_size)
    val_batch = batch_size if genotype.spatial_dims == 2 else 1
    val_loader = DataLoader(data.val, batch_size=val_batch, shuffle=False, num_workers=num_workers)
    roi = list(patch_size) if genotype.spatial_dims == 3 else None

    settings = {
        "genotype": {k: v for k, v in genotype.to_dict().items() if k != "provenance"}, "fold": fold,
        "n_folds": n_folds, "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "optimiser": optimiser, "loss": loss, "lr_power": lr_power,
        "val_interval": val_interval, "spatial_size": list(spatial_size), "slice_axis": slice_axis,
        "patch_size": list(patch_size), "samples_per_volume": samples_per_volume,
        "keep_empty_fraction": keep_empty_fraction,
    }
    state = SearchState(output_dir, "train_state.pt", "train_result.json")
    if state.exists():
        refuse_other_settings(state.load(restore_rng=False).get("settings", {}), settings, state.path, "training")
    output_dir.mkdir(parents=True, exist_ok=True)
    objects = {"model": model, "optimiser": opt, "scheduler": sched}
    resumed = state.resume(objects, generators={"loader": loader_rng})
    if resumed.finished:
        log.info("training in %s already finished: %s", output_dir, resumed.result)
        return resumed.result
    history: list[dict] = resumed.state.get("history", [])
    start = len(history)
    if start:
        log.info("resuming training at epoch %d/%d from %s", start + 1, epochs, state.path)
    for epoch in range(start, epochs):
        tic = time.perf_counter()
        seed_epoch(data.train, seed, epoch)
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
        row["loss"] = train_epoch(model, train_loader, opt, loss_fn, device, desc=f"epoch {epoch + 1}/{epochs}")
        sched.step()
        if (epoch + 1) % val_interval == 0 or epoch + 1 == epochs:
            row["val_dice"] = validate_dice(model, val_loader, device, roi)
        row["seconds"] = round(time.perf_counter() - tic, 2)
        history.append(row)
        log.info("epoch %d/%d loss %.4f val dice %s (%.1fs)", epoch + 1, epochs, row["loss"],
                 row.get("val_dice", "-"), row["seconds"])
        state.save({"history": history, "settings": settings}, objects=objects, generators={"loader": loader_rng})

    atomic_write(output_dir / "model.pt", lambda fh: torch.save(model.state_dict(), fh))
    genotype.save(output_dir / "genotype.json")
    input_shape = (genotype.in_channels, *(spatial_size if genotype.spatial_dims == 2 else patch_size))
    cost = measure_cost(model, input_shape)
    result = {
        "genotype": genotype.name, "fold": fold, "n_folds": n_folds, "seed": seed, "epochs": epochs,
        "final_val_dice": history[-1].get("val_dice"), "params": cost.params, "macs": cost.macs,
        "input_shape": list(input_shape), "history": history,
    }
    write_json_atomic(output_dir / "train_log.json", result)
    state.finish(result)
    return result
