"""What nnU-Net imports from ``nnUNet_extTrainer``: the trainers of :mod:`nnunet_plans.trainers`, re-exported.

nnU-Net imports this file as a top-level module and forgets it afterwards; the classes stay those of
``nnunet_plans.trainers``, so training and ``nnUNetv2_predict`` resolve the same objects.
"""

from nnunet_plans.trainers import (  # noqa: F401
    nnUNetTrainerNAS,
    nnUNetTrainerNAS_AdamW,
    nnUNetTrainerNAS_AdamW_demo,
    nnUNetTrainerNAS_AdamW_smoke,
    nnUNetTrainerNAS_smoke,
)
