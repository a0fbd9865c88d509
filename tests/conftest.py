"""Test-wide settings: one torch thread per process (2-core machines), quiet warnings."""

import torch

torch.set_num_threads(1)
