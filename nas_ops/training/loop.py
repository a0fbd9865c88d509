"""The training and validation steps every method shares (one epoch at a time, so searches can
checkpoint between epochs)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from torch import nn
from tqdm import tqdm


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is the GPU when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_optimiser(model: nn.Module, name: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0):
    """Adam (the papers' choice), AdamW or SGD with Nesterov momentum (nnU-Net's)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"unknown optimiser '{name}' (known: adam, adamw, sgd)")


def train_epoch(
    model: nn.Module,
    loader: Iterable[dict],
    optimiser: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    desc: str = "train",
) -> float:
    """One pass over ``loader``; returns the mean loss. Batches are dicts with ``image`` and ``label``."""
    model.train()
    total, n = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, mininterval=2.0)
    for batch in bar:
        image, label = batch["image"].to(device), batch["label"].to(device)
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(model(image), label)
        loss.backward()
        optimiser.step()
        total += loss.item() * image.shape[0]
        n += image.shape[0]
        bar.set_postfix(loss=f"{total / n:.4f}")
    return total / max(n, 1)


@torch.no_grad()
def validate_dice(
    model: nn.Module, loader: Iterable[dict], device: torch.device, roi_size: Sequence[int] | None = None
) -> list[float]:
    """Mean foreground Dice per class over the validation samples (2D slices, or 3D volumes by sliding windows of
    ``roi_size``); samples without a class in their reference are left out of that class's mean (MONAI's
    ``ignore_empty``)."""
    model.eval()
    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
    for batch in loader:
        image, label = batch["image"].to(device), batch["label"].to(device)
        logits = model(image) if roi_size is None else sliding_window_inference(image, roi_size, 2, model, 0.25)
        k = logits.shape[1]
        metric(one_hot(logits.argmax(1, keepdim=True), k), one_hot(label.long(), k))
    return [float(v) for v in torch.nan_to_num(metric.aggregate(), nan=0.0).cpu()]
