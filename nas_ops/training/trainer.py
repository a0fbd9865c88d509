"""Train any genotype on one fold of an MSD dataset, on the run engine: resumable, with progress and a readable log.

``train(...)`` is what every bundle's ``train.json`` runs. The network, loss, optimiser, learning-rate scheduler,
per-sample pipelines and validation inferer are components the config builds (``network_def``, ``loss``,
``optimizer``, ``lr_scheduler``, ``train#preprocessing``, ``validate#preprocessing``, ``validate#inferer``); the
defaults here follow the papers (Adam 1e-3, polynomial decay 0.9, Dice + cross entropy). ``output_dir`` (a bundle's
``<output_dir>/train``) receives:

- ``models/model.pt``, ``models/genotype.json``, ``models/model_info.json`` (:mod:`nas_ops.training.artifacts`);
- ``train_log.json``: loss and validation Dice per epoch, params and MACs;
- ``train_state.pt``: the checkpoint written every epoch: the same command after a kill continues where it
  stopped, with the same result as an uninterrupted run. Its identity (genotype, dataset fingerprint, every
  setting and component) is checked first: another dataset or setting in the same folder is refused, and a
  finished training is reported, never run again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
from monai.inferers import Inferer
from monai.losses import DiceCELoss
from torch import nn

from nas_ops.bundle import entry
from nas_ops.config import (
    Fraction,
    NFolds,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Rule,
    Size2D,
    Size3D,
    SliceAxis,
    check_output_dir,
    check_value,
)
from nas_ops.cost_model import measure_cost
from nas_ops.data.loaders import train_transform_2d, train_transform_3d, val_transform_2d, val_transform_3d
from nas_ops.data.setup import FoldData, dataset_identity, make_loaders, prepare_fold
from nas_ops.engine.identity import component_identity
from nas_ops.engine.loop import EpochBatches, RunCheckpoint, RunEngine
from nas_ops.engine.seeds import seed_everything
from nas_ops.engine.steps import SupervisedStep
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.protocol import check_protocol
from nas_ops.registry import build_network
from nas_ops.resources import DEFAULT_MAX_PARAMS, check_memory, check_parameters
from nas_ops.search_state import SearchState
from nas_ops.training.artifacts import Geometry, save_model
from nas_ops.training.devices import resolve_device
from nas_ops.training.inferers import default_inferer
from nas_ops.training.metrics import score_network

log = logging.getLogger(__name__)

STATE_FILE, LOG_FILE, MODEL_DIR = "train_state.pt", "train_log.json", "models"


@entry
def train(
    genotype: Genotype | str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    network: nn.Module | None = None,
    loss: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: Any = None,
    train_transform: Callable | None = None,
    val_transform: Callable | None = None,
    inferer: Inferer | None = None,
    fold: NonNegativeInt = 0,
    n_folds: NFolds = 5,
    seed: NonNegativeInt = 0,
    device: str = "auto",
    epochs: PositiveInt = 100,
    batch_size: PositiveInt = 8,
    val_interval: PositiveInt = 1,
    spatial_size: Size2D = (256, 256),
    slice_axis: SliceAxis = 2,
    patch_size: Size3D = (64, 64, 64),
    samples_per_volume: PositiveInt = 2,
    keep_empty_fraction: Fraction = 0.25,
    num_workers: NonNegativeInt = 0,
    max_params: PositiveInt = DEFAULT_MAX_PARAMS,
    memory_limit_gb: PositiveFloat | None = None,
    config_source: str | None = None,
) -> dict:
    """Train ``network`` (default: built from ``genotype``) on fold ``fold``; returns what train_log.json holds.

    ``optimizer`` must hold the network's parameters (default Adam, lr 1e-3); ``lr_scheduler`` is stepped once
    per epoch (default polynomial decay over ``epochs``, power 0.9); validation Dice every ``val_interval`` epochs.
    Before any data is loaded: at most ``max_params`` parameters, and the estimated memory of a training step at
    ``batch_size`` within ``memory_limit_gb`` (default: 80 % of the device's; :mod:`nas_ops.resources`).
    A ``network`` built by the caller takes its initial weights from the global RNGs: seed them first with
    :func:`nas_ops.engine.seeds.seed_everything` (a bundle does so in ``initialize``). ``config_source``: the config
    file named in refusals.
    """
    genotype = genotype if isinstance(genotype, Genotype) else Genotype.load(genotype)
    genotype_source = genotype.source
    if fold >= n_folds:
        raise InputError(config_source, "fold", f"must be < n_folds = {n_folds}, got {fold}")
    output_dir = check_output_dir(output_dir, source=config_source)
    dev = resolve_device(device, config_source)
    check_parameters(genotype, max_params)
    input_size = list(spatial_size if genotype.spatial_dims == 2 else patch_size)
    if network is None:  # the network's initial weights come from the run's seed (a bundle seeds in `initialize`)
        seed_everything(seed)
        network = build_network(genotype)
    _check_built_from(network, genotype)
    stride = check_protocol(network, genotype.method, genotype_source).total_stride
    size_key = "spatial_size" if genotype.spatial_dims == 2 else "patch_size"
    check_value(size_key, input_size, Annotated[list[int], Rule(multiple_of=stride, why="the network's total stride")],
                config_source)
    check_memory(genotype, input_size, batch_size, dev, memory_limit_gb, size_key, config_source,
                 samples_per_item=samples_per_volume if genotype.spatial_dims == 3 else 1)
    loss = loss if loss is not None else DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = optimizer if optimizer is not None else torch.optim.Adam(network.parameters(), lr=1e-3)
    if lr_scheduler is None:
        lr_scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=epochs, power=0.9)
    if inferer is None:
        inferer = default_inferer(genotype.spatial_dims, spatial_size, slice_axis, patch_size, validation=True)
    if train_transform is None:
        train_transform = (train_transform_2d(spatial_size) if genotype.spatial_dims == 2
                           else train_transform_3d(patch_size, samples_per_volume))
    if val_transform is None:
        val_transform = val_transform_2d(spatial_size) if genotype.spatial_dims == 2 else val_transform_3d()
    identity = {
        "genotype": {k: v for k, v in genotype.to_dict().items() if k != "provenance"},
        "dataset": dataset_identity(dataset_dir),  # without reading the images: a finished run is only reported
        "fold": fold, "n_folds": n_folds, "seed": seed, "epochs": epochs, "batch_size": batch_size,
        "val_interval": val_interval, "geometry": {"spatial_size": list(spatial_size), "slice_axis": slice_axis,
                                                   "patch_size": list(patch_size)},
        "samples_per_volume": samples_per_volume, "keep_empty_fraction": keep_empty_fraction,
        "loss": component_identity(loss), "optimizer": component_identity(optimizer),
        "lr_scheduler": component_identity(lr_scheduler), "inferer": component_identity(inferer),
        "train_transform": component_identity(train_transform), "val_transform": component_identity(val_transform),
    }
    state = SearchState(output_dir, STATE_FILE, LOG_FILE, identity=identity, what="training")
    done = state.inspect()
    if done.finished:
        log.info("training in %s already finished: %s", output_dir, _brief(done.result))
        return done.result
    data = prepare_fold(
        dataset_dir, genotype.spatial_dims, fold, n_folds, seed, spatial_size, slice_axis, patch_size,
        samples_per_volume, keep_empty_fraction, genotype=genotype, genotype_source=genotype_source,
        train_transform=train_transform, val_transform=val_transform,
    )
    geometry = Geometry(genotype.spatial_dims, list(spatial_size), slice_axis, list(patch_size),
                        data.dataset.channel_names, [data.dataset.labels[c] for c in sorted(data.dataset.labels)])

    network.to(dev)
    val_batch = 1 if genotype.spatial_dims == 3 else None  # whole volumes one at a time
    loaders = make_loaders(data, batch_size, seed, num_workers, val_batch_size=val_batch)
    checkpoint = RunCheckpoint(state, {"model": network, "optimiser": optimizer, "scheduler": lr_scheduler},
                               {"loader": loaders.generator})
    resumed = checkpoint.resume()
    history: list[dict] = resumed.state.get("history", [])
    if history:
        log.info("resuming training at epoch %d/%d from %s", len(history) + 1, epochs, state.path)
    classes = data.dataset.num_classes
    engine = RunEngine(
        SupervisedStep(network, loss, optimizer), EpochBatches(loaders.train, seed), dev,
        scheduler=lr_scheduler,
        validate=lambda epoch: _validation_row(score_network(network, loaders.val, classes, dev, inferer)),
        validate_every=lambda epoch: (epoch + 1) % val_interval == 0 or epoch + 1 == epochs,
        checkpoint=checkpoint, desc=f"train {genotype.name or genotype.method}", num_batches=len(loaders.train),
    )

    def on_epoch(row: dict) -> dict:
        history.append(row)
        return {"history": history}

    engine.run(range(len(history), epochs), on_epoch)
    return _finish(state, network, genotype, geometry, data, history, output_dir, identity)


def _validation_row(scores: dict) -> dict:
    return {"val_dice": scores["dice_per_class"]}


def _check_built_from(network: nn.Module, genotype: Genotype) -> None:
    """Refuse a network whose weights would not load into the genotype's own network (models/ would lie)."""
    with torch.device("meta"):
        reference = build_network(genotype)
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    if want != got:
        raise InputError(None, "network_def", f"the network is not the one genotype '{genotype.name}' builds "
                         "(its weights would not load into that network): build network_def from @genotype")


def _finish(state: SearchState, network: nn.Module, genotype: Genotype, geometry: Geometry, data: FoldData,
            history: list[dict], output_dir: Path, identity: dict) -> dict:
    """Write models/ and the result; marks the training finished."""
    network.cpu()
    save_model(output_dir / MODEL_DIR, network, genotype, geometry,
               extra={"dataset": identity["dataset"], "fold": identity["fold"], "n_folds": identity["n_folds"],
                      "seed": identity["seed"], "epochs": identity["epochs"]})
    input_shape = (genotype.in_channels, *geometry.input_size)
    cost = measure_cost(network, input_shape)
    result = {
        "genotype": genotype.name, "model_dir": str(output_dir / MODEL_DIR), "dataset": data.dataset.name,
        "fold": identity["fold"], "n_folds": identity["n_folds"], "seed": identity["seed"],
        "epochs": identity["epochs"], "final_val_dice": history[-1].get("val_dice"), "params": cost.params,
        "macs": cost.macs, "input_shape": list(input_shape), "history": history,
    }
    state.finish(result)
    log.info("training done: %s", _brief(result))
    return result


def _brief(result: dict) -> str:
    return (f"{result['genotype']}: final validation Dice {result['final_val_dice']}, {result['params']:,} params, "
            f"model in {result['model_dir']}")
