"""BiX-NAS (MICCAI 2021): BiO-Net, the BiO-Net++ search space and supernet, and the searched BiX-Net.

- :mod:`nas_ops.bixnas.bionet`: BiO-Net, the hand-designed parent (method ``"bionet"``).
- :mod:`nas_ops.bixnas.space`: extraction stages, searching blocks, candidate inputs, the BiX-Net spec,
  dead-block analysis and the building blocks shared by the supernet and BiX-Net.
- :mod:`nas_ops.bixnas.supernet`: the Phase-1 supernet (selection matrices) with the shared-head API of Phase 2.
- :mod:`nas_ops.bixnas.bixnet`: the searched network built from a genotype (method ``"bixnet"``).
- :mod:`nas_ops.bixnas.search`: the search end to end (Phase 1 then Phase 2, resumable), run by ``search.json``;
  :mod:`~nas_ops.bixnas.phase1` (selection matrices), :mod:`~nas_ops.bixnas.phase2` (progressive evolution with
  the shared head), :mod:`~nas_ops.bixnas.context` (config, data, scoring), :mod:`~nas_ops.bixnas.plots`.
"""

from nas_ops import lazy_submodules

__getattr__ = lazy_submodules(__name__)
