"""Train any genotype on one fold of an MSD dataset, on the run engine: resumable, with progress and a readable log.

``train(...)`` is what every bundle's ``train.json`` runs. The network, loss, optimiser, learning-rate scheduler,
per-sample pipelines and validation inferer are components the config builds (``network_def``, ``loss``,
``optimizer``, ``lr_scheduler``, ``train#preprocessing``, ``validate#preprocessing``, ``validate#inferer``), the
settings two typed objects (``recipe``, ``geometry``); without a bundle the components default to Adam 1e-3,
polynomial decay 0.9 and Dice + cross entropy. ``output_dir`` (a bundle's
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

from nas_ops.config import NFolds, NonNegativeInt, PositiveFloat, PositiveInt, Rule, check_output_dir, check_value
from nas_ops.cost_model import measure_cost
from nas_ops.data.geometry import DataGeometry
from nas_ops.data.loaders import train_transform_2d, train_transform_3d, val_transform_2d, val_transform_3d
from nas_ops.data.setup import FoldData, dataset_identity, make_loaders, prepare_fold
from nas_ops.engine.identity import component_identity
from nas_ops.engine.loop import EpochBatches, RunCheckpoint, RunEngine
from nas_ops.engine.seeds import seed_everything
from nas_ops.engine.steps import SupervisedStep
from nas_ops.entry import entry
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.process import resolve_device
from nas_ops.protocol import check_protocol
from nas_ops.registry import build_network
from nas_ops.resources import DEFAULT_MAX_PARAMS, check_memory, check_parameters
from nas_ops.search_state import SearchState
from nas_ops.training.artifacts import Geometry, save_model
from nas_ops.training.inferers import default_inferer
from nas_ops.training.metrics import score_network
from nas_ops.training.recipe import Recipe

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
    recipe: Recipe | None = None,
    geometry: DataGeometry | None = None,
    fold: NonNegativeInt = 0,
    n_folds: NFolds = 5,
    seed: NonNegativeInt = 0,
    device: str = "auto",
    num_workers: NonNegativeInt = 0,
    max_params: PositiveInt = DEFAULT_MAX_PARAMS,
    memory_limit_gb: PositiveFloat | None = None,
    allow_outside_dataset_dir: bool = False,
    config_source: str | None = None,
) -> dict:
    """Train ``network`` (default: built from ``genotype``) on fold ``fold``; returns what train_log.json holds.

    ``recipe`` (:class:`~nas_ops.training.recipe.Recipe`: epochs, batch size, validation interval) and ``geometry``
    (:class:`~nas_ops.data.geometry.DataGeometry`: 2D size and slicing, 3D patches) hold the settings, each with
    its defaults in one place. ``optimizer`` must hold the network's parameters (default Adam, lr 1e-3);
    ``lr_scheduler`` is stepped once per epoch (default polynomial decay over the epochs, power 0.9). Before any
    data is loaded: at most ``max_params`` parameters, and the estimated memory of a training step within
    ``memory_limit_gb`` (default: 80 % of the device's; :mod:`nas_ops.resources`). A ``network`` built by the caller
    takes its initial weights from the global RNGs: seed them first with
    :func:`nas_ops.engine.seeds.seed_everything` (a bundle does so in ``initialize``). ``config_source``: the config
    file named in refusals.
    """
    genotype = genotype if isinstance(genotype, Genotype) else Genotype.load(genotype)
    recipe = (recipe if recipe is not None else Recipe()).checked(config_source)
    geometry = (geometry if geometry is not None else DataGeometry()).checked(config_source)
    dims = genotype.spatial_dims
    if fold >= n_folds:
        raise InputError(config_source, "fold", f"must be < n_folds = {n_folds}, got {fold}")
    output_dir = check_output_dir(output_dir, source=config_source)
    dev = resolve_device(device, config_source)
    check_parameters(genotype, max_params)
    input_size = geometry.input_size(dims)
    if network is None:  # the network's initial weights come from the run's seed (a bundle seeds in `initialize`)
        seed_everything(seed)
        network = build_network(genotype)
    _check_built_from(network, genotype)
    stride = check_protocol(network, genotype.method, genotype.source).total_stride
    size_key = "spatial_size" if dims == 2 else "patch_size"
    check_value(size_key, input_size, Annotated[list[int], Rule(multiple_of=stride, why="the network's total stride")],
                config_source)
    check_memory(genotype, input_size, recipe.batch_size, dev, memory_limit_gb, size_key, config_source,
                 samples_per_item=geometry.samples_per_item(dims))
    epochs = recipe.epochs
    loss = loss if loss is not None else DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = optimizer if optimizer is not None else torch.optim.Adam(network.parameters(), lr=1e-3)
    if lr_scheduler is None:
        lr_scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=epochs, power=0.9)
    if inferer is None:
        inferer = default_inferer(dims, geometry.spatial_size, geometry.slice_axis, geometry.patch_size,
                                  validation=True)
    if train_transform is None:
        train_transform = (train_transform_2d(geometry.spatial_size) if dims == 2
                           else train_transform_3d(geometry.patch_size, geometry.samples_per_volume))
    if val_transform is None:
        val_transform = val_transform_2d(geometry.spatial_size) if dims == 2 else val_transform_3d()
    identity = {
        "genotype": {k: v for k, v in genotype.to_dict().items() if k != "provenance"},
        "dataset": dataset_identity(dataset_dir),  # without reading the images: a finished run is only reported
        "fold": fold, "n_folds": n_folds, "seed": seed, "epochs": epochs, "batch_size": recipe.batch_size,
        "val_interval": recipe.val_interval,
        "geometry": {"spatial_size": list(geometry.spatial_size), "slice_axis": geometry.slice_axis,
                     "patch_size": list(geometry.patch_size)},
        "samples_per_volume": geometry.samples_per_volume, "keep_empty_fraction": geometry.keep_empty_fraction,
        "loss": component_identity(loss), "optimizer": component_identity(optimizer),
        "lr_scheduler": component_identity(lr_scheduler), "inferer": component_identity(inferer),
        "train_transform": component_identity(train_transform), "val_transform": component_identity(val_transform),
    }
    state = SearchState(output_dir, STATE_FILE, LOG_FILE, identity=identity, what="training")
    done = state.inspect()
    if done.finished:
        log.info("training in %s already finished: %s", output_dir, _brief(done.result))
        return done.result
    data = prepare_fold(dataset_dir, dims, geometry, fold, n_folds, seed, genotype=genotype,
                        train_transform=train_transform, val_transform=val_transform,
                        allow_outside=allow_outside_dataset_dir)
    trained_at = Geometry(dims, list(geometry.spatial_size), geometry.slice_axis, list(geometry.patch_size),
                          data.dataset.channel_names, [data.dataset.labels[c] for c in sorted(data.dataset.labels)])

    network.to(dev)
    val_batch = 1 if dims == 3 else None  # whole volumes one at a time
    loaders = make_loaders(data, recipe.batch_size, seed, num_workers, val_batch_size=val_batch)
    classes = data.dataset.num_classes
    engine = RunEngine(
        SupervisedStep(network, loss, optimizer), EpochBatches(loaders.train, seed), dev,
        scheduler=lr_scheduler,
        validate=lambda epoch: _validation_row(score_network(network, loaders.val, classes, dev, inferer)),
        validate_every=lambda epoch: (epoch + 1) % recipe.val_interval == 0 or epoch + 1 == epochs,
        checkpoint=RunCheckpoint(state, {"model": network, "optimiser": optimizer, "scheduler": lr_scheduler},
                                 {"loader": loaders.generator}),
        desc=f"train {genotype.name or genotype.method}", num_batches=len(loaders.train),
    )
    history = engine.fit(epochs)
    return _finish(state, network, genotype, trained_at, data, history, output_dir, identity)


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
