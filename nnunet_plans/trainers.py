"""nnU-Net trainers for searched networks, found by ``nnUNetv2_train -tr NAME`` through ``nnUNet_extTrainer``.

nnU-Net looks a trainer up by class name: first in its own package, then in the folders that the environment
variable ``nnUNet_extTrainer`` names. :func:`ext_trainer_dir` is the folder to name: it holds one module that
re-exports the classes below (so nnU-Net, the predictor and this package see the same class objects)::

    export nnUNet_extTrainer=$(python -c "from nnunet_plans.trainers import ext_trainer_dir; print(ext_trainer_dir())")

Every trainer keeps nnU-Net's ``__init__`` signature (nnU-Net re-instantiates trainers from their init arguments).
All of them work with any network the plans name, nnU-Net's own U-Net included, so a comparison can train every
model with the same trainer.

- :class:`nnUNetTrainerNAS`: nnU-Net's standard schedule (SGD, Nesterov momentum 0.99, lr 1e-2 with poly decay,
  1000 epochs x 250 iterations), and a log line naming the searched network.
- :class:`nnUNetTrainerNAS_AdamW`: AdamW, lr 1e-3, weight decay 1e-4, the same poly decay (MB-NAS trained its
  networks with Adam at 1e-3 and poly decay; BatchNorm networks off the nnU-Net recipe often prefer it to SGD 1e-2).
- :class:`nnUNetTrainerNAS_smoke` / :class:`nnUNetTrainerNAS_AdamW_smoke`: 2 epochs x 4 iterations, 2 validation
  iterations, no mirroring (training augmentation and test-time), one torch thread on a CPU: the whole path on a
  CPU in about a minute.
- :class:`nnUNetTrainerNAS_AdamW_demo`: AdamW for 20 epochs x 10 iterations, 2 validation iterations, no
  mirroring, one torch thread on a CPU: the study's ``--recipe nnunet --budget demo`` (networks that learn
  something in minutes on a 2-core machine; far from nnU-Net's budget, and said so in the study's report).
"""

from __future__ import annotations

from pathlib import Path

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring,
)

from nas_ops.cost_model import count_params


def ext_trainer_dir() -> Path:
    """The folder to put in ``nnUNet_extTrainer``."""
    return Path(__file__).resolve().parent / "ext_trainers"


class nnUNetTrainerNAS(nnUNetTrainer):
    """nnU-Net's standard schedule; logs which searched network (genotype) the plans name."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)

    def on_train_start(self):
        super().on_train_start()
        net = self.network.module if self.is_ddp else self.network
        net = getattr(net, "_orig_mod", net)
        describe = getattr(net, "describe", None)
        summary = describe() if callable(describe) else type(net).__name__
        self.print_to_log_file(f"network: {summary}\nparameters: {count_params(net):,}")


class _AdamWMixin:
    """AdamW with nnU-Net's poly decay."""

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class nnUNetTrainerNAS_AdamW(_AdamWMixin, nnUNetTrainerNAS):
    """AdamW, lr 1e-3, weight decay 1e-4, poly decay; nnU-Net's 1000 x 250 schedule."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-3
        self.weight_decay = 1e-4


class _SmokeMixin:
    """A short budget for smoke runs: 2 epochs of 4 iterations, 2 validation iterations, and one torch thread on a
    CPU (no mirroring comes from nnU-Net's ``nnUNetTrainerNoMirroring``, a base of every smoke trainer)."""

    smoke_epochs = 2
    smoke_iterations = 4
    smoke_val_iterations = 2

    def _smoke_budget(self) -> None:
        if self.device.type == "cpu":  # nnU-Net takes every core; smoke runs share small machines
            torch.set_num_threads(1)
        self.num_epochs = self.smoke_epochs
        self.num_iterations_per_epoch = self.smoke_iterations
        self.num_val_iterations_per_epoch = self.smoke_val_iterations


class nnUNetTrainerNAS_smoke(_SmokeMixin, nnUNetTrainerNAS, nnUNetTrainerNoMirroring):
    """Smoke run with nnU-Net's optimiser: 2 epochs x 4 iterations, no mirroring."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._smoke_budget()


class nnUNetTrainerNAS_AdamW_smoke(_SmokeMixin, nnUNetTrainerNAS_AdamW, nnUNetTrainerNoMirroring):
    """Smoke run with AdamW: 2 epochs x 4 iterations, no mirroring."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._smoke_budget()


class nnUNetTrainerNAS_AdamW_demo(_SmokeMixin, nnUNetTrainerNAS_AdamW, nnUNetTrainerNoMirroring):
    """The study's demo budget with AdamW: 20 epochs x 10 iterations, 2 validation iterations, no mirroring."""

    smoke_epochs = 20
    smoke_iterations = 10

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._smoke_budget()


TRAINERS = {cls.__name__: cls for cls in (nnUNetTrainerNAS, nnUNetTrainerNAS_AdamW, nnUNetTrainerNAS_smoke,
                                          nnUNetTrainerNAS_AdamW_smoke, nnUNetTrainerNAS_AdamW_demo)}
