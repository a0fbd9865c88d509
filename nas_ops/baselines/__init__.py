"""Baselines every searched network is compared with: the plain U-Net, the ResU-Net and MONAI's SegResNet."""

from nas_ops import lazy_submodules

__getattr__ = lazy_submodules(__name__)
