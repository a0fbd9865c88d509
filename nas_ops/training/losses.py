"""Segmentation losses from MONAI, chosen by name in configs."""

from __future__ import annotations

from monai.losses import DiceCELoss, DiceLoss
from torch import nn

LOSSES = ("dice_ce", "dice", "foreground_dice")


def make_loss(name: str = "dice_ce") -> nn.Module:
    """A loss on ``(B, K, *S)`` logits and ``(B, 1, *S)`` integer labels.

    ``dice_ce``: Dice + cross entropy (nnU-Net's default); ``dice``: soft Dice over all classes;
    ``foreground_dice``: soft Dice over the foreground classes only (MB-NAS's training loss).
    """
    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True)
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True)
    if name == "foreground_dice":
        return DiceLoss(to_onehot_y=True, softmax=True, include_background=False)
    raise ValueError(f"unknown loss '{name}' (known: {LOSSES})")
