"""Segmentation scores through MONAI, in one place: validation scores during training and search
(:class:`ValidationScores`, :func:`score_networks`), and the per-case evaluation table (:class:`CaseMetrics`: Dice,
IoU, HD95 and surface Dice, in mm)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    MeanIoU,
    SurfaceDiceMetric,
)
from monai.networks.utils import one_hot

METRICS = ("dice", "iou", "hd95", "surface_dice")


class ValidationScores:
    """Foreground Dice and IoU of one network over validation batches, per class and as one number.

    Per class: the mean over samples whose reference has that class (MONAI's ``ignore_empty``). ``dice``/``iou``:
    the mean over the classes some reference has (0 when none has any foreground); ``dice_per_class`` /
    ``iou_per_class``: every foreground class, 0 for one no reference has.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._iou = MeanIoU(include_background=False, reduction="mean_batch", ignore_empty=True)
        self._dice = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)

    def add(self, logits: torch.Tensor, label: torch.Tensor) -> None:
        """``(B, K, *S)`` logits and ``(B, 1, *S)`` integer labels."""
        k = self.num_classes
        pred, ref = one_hot(logits.argmax(1, keepdim=True), k), one_hot(label.long(), k)
        self._iou(pred, ref)
        self._dice(pred, ref)

    def result(self) -> dict[str, float | list[float]]:
        """``{"iou", "dice", "iou_per_class", "dice_per_class"}``."""
        out: dict[str, float | list[float]] = {}
        for name, metric in (("iou", self._iou), ("dice", self._dice)):
            per_class = metric.aggregate().cpu()
            ok = per_class[~torch.isnan(per_class)]
            out[name] = float(ok.mean()) if ok.numel() else 0.0
            out[f"{name}_per_class"] = [float(v) for v in torch.nan_to_num(per_class, nan=0.0)]
        return out


@torch.no_grad()
def score_networks(
    forwards: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    batches: Iterable[dict],
    num_classes: int,
    n: int,
    device: torch.device,
) -> list[dict[str, float | list[float]]]:
    """The :class:`ValidationScores` of ``n`` networks; ``forwards(image)`` returns their ``n`` logits for a batch."""
    scores = [ValidationScores(num_classes) for _ in range(n)]
    for batch in batches:
        image, label = batch["image"].to(device), batch["label"].to(device)
        for acc, logits in zip(scores, forwards(image), strict=True):
            acc.add(logits, label)
    return [acc.result() for acc in scores]


def sliding_window_dice(nets: Sequence[torch.nn.Module], data: Any, patch_size: Sequence[int],
                        device: torch.device, val_batches: int | None = None) -> list[float]:
    """Mean foreground validation Dice of each of ``nets`` on the whole validation volumes of ``data`` (a
    :class:`~nas_ops.data.setup.FoldData`; the first ``val_batches``, or all), through MONAI's sliding window at
    ``patch_size``: how the 3D searches score their supernets' paths."""
    from monai.inferers import SlidingWindowInferer

    from nas_ops.data.setup import make_loaders

    inferer = SlidingWindowInferer(roi_size=list(patch_size), sw_batch_size=2, overlap=0.25)
    val = make_loaders(data, 1, 0, val_batch_size=1).val
    batches = (b for i, b in enumerate(val) if val_batches is None or i < val_batches)
    with torch.no_grad():
        scores = score_networks(lambda x: [inferer(x, net) for net in nets], batches, data.dataset.num_classes,
                                len(nets), device)
    return [float(s["dice"]) for s in scores]


def case_means(metrics: dict, name: str) -> dict[str, float]:
    """Per case of an evaluation's ``metrics.json``: the mean over foreground classes of one metric (NaN classes
    skipped; NaN when every class is)."""
    return {c["case"]: float(np.nanmean(c[name])) if not np.all(np.isnan(c[name])) else float("nan")
            for c in metrics["per_case"]}


def score_network(
    model: torch.nn.Module, batches: Iterable[dict], num_classes: int, device: torch.device,
    inferer: Inferer | None = None,
) -> dict[str, float | list[float]]:
    """The :class:`ValidationScores` of one network in eval mode, through ``inferer`` (e.g. MONAI's sliding window
    for whole 3D volumes; default: the network on the batch)."""
    model.eval()
    run = (lambda x: [model(x)]) if inferer is None else (lambda x: [inferer(x, model)])
    return score_networks(run, batches, num_classes, 1, device)[0]


class CaseMetrics:
    """Scores one predicted label map against its reference, per foreground class.

    Label maps are integer tensors ``(*S)``; ``spacing`` (mm per voxel) makes HD95 and surface Dice
    physical. A class absent from both prediction and reference scores Dice/IoU 1 and distances 0;
    absent from only one of them, HD95 is NaN (MONAI's convention) and the aggregate skips it.
    """

    def __init__(self, num_classes: int, tolerance_mm: float = 2.0) -> None:
        self.num_classes = num_classes
        self.tolerance_mm = tolerance_mm
        fg = num_classes - 1
        self._dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
        self._iou = MeanIoU(include_background=False, reduction="none", ignore_empty=False)
        self._hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
        self._nsd = SurfaceDiceMetric([tolerance_mm] * fg, include_background=False, reduction="none")

    def __call__(self, pred: torch.Tensor, label: torch.Tensor, spacing: Sequence[float] | None = None) -> dict:
        """``{"dice": [per class], "iou": [...], "hd95": [...], "surface_dice": [...]}`` for one case."""
        p = one_hot(pred[None, None].long(), self.num_classes)
        y = one_hot(label[None, None].long(), self.num_classes)
        spacing = list(spacing) if spacing is not None else None
        out = {
            "dice": self._dice(p, y)[0],
            "iou": self._iou(p, y)[0],
            "hd95": self._hd95(p, y, spacing=spacing)[0],
            "surface_dice": self._nsd(p, y, spacing=spacing)[0],
        }
        scores = {k: [float(v) for v in t.cpu()] for k, t in out.items()}
        for c in range(self.num_classes - 1):  # both empty: a perfect prediction
            if not (p[0, c + 1].any() or y[0, c + 1].any()):
                scores["hd95"][c], scores["surface_dice"][c] = 0.0, 1.0
        return scores


def summarise(per_case: list[dict], class_names: Sequence[str]) -> dict:
    """Mean ± std per metric and class over cases (NaNs skipped, their count reported)."""
    summary: dict = {}
    for metric in METRICS:
        table = np.array([case[metric] for case in per_case], dtype=float).reshape(len(per_case), -1)
        summary[metric] = {}
        for c, name in enumerate(class_names):
            col = table[:, c]
            ok = col[~np.isnan(col)]
            summary[metric][name] = {
                "mean": float(ok.mean()) if ok.size else float("nan"),
                "std": float(ok.std()) if ok.size else float("nan"),
                "n": int(ok.size),
                "n_nan": int(col.size - ok.size),
            }
    return summary

