"""Per-case segmentation metrics through MONAI: Dice, IoU, HD95 and surface Dice, in mm."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    MeanIoU,
    SurfaceDiceMetric,
)
from monai.networks.utils import one_hot

METRICS = ("dice", "iou", "hd95", "surface_dice")


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

