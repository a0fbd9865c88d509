"""Training, inference and evaluation of any genotype: the trainer, MONAI inferers, trained models on disk, scores."""

from nas_ops import lazy_submodules

__getattr__ = lazy_submodules(__name__)
