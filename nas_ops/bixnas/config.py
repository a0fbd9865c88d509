"""The ``search`` block of BiX-NAS (``bundles/bixnas/configs/search.json``): every knob of a search, checked by its
types (:mod:`nas_ops.config`, naming ``search#<key>``). Defaults are the paper's or, where it is silent, the
authors' code's (github.com/tiangexiang/BiX-NAS), except ``phase2_keep`` (ours; bundles/bixnas/docs/README.md marks
it); the bundle's block shows the same values (a test holds them together)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from nas_ops.bixnas.space import DEFAULT_STEM_WIDTH, DEFAULT_WIDTH
from nas_ops.config import ConfigBlock, Fraction, PositiveFloat, PositiveInt, Rule, SliceAxis

NET_DIVISOR = 32  # stem pool + 4 levels: every spatial size must be divisible by 2^5

PositiveOrAll = Annotated[int, Rule(min=1)] | None  # None: all batches


@dataclass(frozen=True)
class BiXNASConfig(ConfigBlock):
    """Every knob of a BiX-NAS search: the ``search`` block of ``configs/search.json``, checked by its types."""

    iterations: PositiveInt = 3  # T: 2T extraction stages
    width: PositiveInt = DEFAULT_WIDTH
    stem_width: PositiveInt = DEFAULT_STEM_WIDTH
    spatial_size: Annotated[tuple[int, ...], Rule(min=1, length=2, multiple_of=NET_DIVISOR,
                                                   why="stem pooling and 4 levels; [H, W] of 2D images or slices")
                            ] = (512, 512)
    slice_axis: SliceAxis = 2
    keep_empty_fraction: Fraction = 0.25
    batch_size: PositiveInt = 2
    loss: Literal["dice_ce", "dice", "foreground_dice"] = "dice_ce"
    train_batches: PositiveOrAll = None  # per epoch; None: the whole training set
    val_batches: PositiveOrAll = None  # None: the whole validation set
    phase1_epochs: PositiveInt = 300
    phase1_lr: PositiveFloat = 1e-3
    phase1_lr_decay: Annotated[float, Rule(min=0.0)] = 3e-3  # Keras-style per epoch: lr / (1 + decay * epoch)
    phase1_weight_decay: Annotated[float, Rule(min=0.0)] = 0.0  # on the weights only
    phase1_selection_lr: PositiveFloat | None = None  # lr of the selection matrices; None: phase1_lr
    phase2_epochs: Annotated[int, Rule(min=1, max=999)] = 40
    phase2_lr: PositiveFloat = 1e-3
    phase2_lr_step: PositiveInt = 10  # x phase2_lr_gamma every phase2_lr_step epochs
    phase2_lr_gamma: PositiveFloat = 0.1
    phase2_samples: PositiveInt = 15  # s
    phase2_keep: PositiveInt = 3  # at most this many of the Pareto front go on to the next stage
    phase2_init: Literal["fresh", "phase1", "continue"] = "fresh"  # per stage: fresh (authors), Phase 1's, previous
    phase2_sampler: Literal["paper", "authors"] = "authors"  # "paper": no special case for the last decoder
    phase2_score: Literal["best", "last"] = "best"  # IoU of a sample: best over the stage's epochs, or the last
    keep_dead_bridge: bool = False

    # the keys that decide Phase 1's result (with seed, fold and dataset)
    PHASE1_KEYS: ClassVar[tuple[str, ...]] = (
        "iterations", "width", "stem_width", "spatial_size", "slice_axis", "keep_empty_fraction", "batch_size",
        "loss", "train_batches", "val_batches", "phase1_epochs", "phase1_lr", "phase1_lr_decay",
        "phase1_weight_decay", "phase1_selection_lr",
    )

    def phase1_dict(self) -> dict[str, Any]:
        """The keys that decide Phase 1's result (a Phase 1 is reused when these match)."""
        d = self.as_dict()
        return {k: d[k] for k in self.PHASE1_KEYS}


# ----------------------------------------------------------------------------------------------------------
# one search
# ----------------------------------------------------------------------------------------------------------
