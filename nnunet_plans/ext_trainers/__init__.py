"""The folder to name in ``nnUNet_extTrainer`` (see :func:`nnunet_plans.trainers.ext_trainer_dir`)."""
