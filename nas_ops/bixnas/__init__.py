"""BiX-NAS (MICCAI 2021): BiO-Net, the BiO-Net++ search space and supernet, and the searched BiX-Net.

- :mod:`~nas_ops.bixnas.config`: the ``search`` block (every knob of a search, paper defaults).
- :mod:`~nas_ops.bixnas.space`: extraction stages, searching blocks, candidate inputs, the BiX-Net spec, its
  validation, dead-block analysis, and the space's genotypes (the released BiX-Net, BiO-Net++).
- :mod:`~nas_ops.bixnas.network`: the stage engine both networks run and the searched BiX-Net (method
  ``"bixnet"``); :mod:`~nas_ops.bixnas.bionet`: BiO-Net, the hand-designed parent (method ``"bionet"``).
- :mod:`~nas_ops.bixnas.supernet`: the Phase-1 supernet (selection matrices) with the shared-head API of Phase 2.
- :mod:`~nas_ops.bixnas.phase1` (selection matrices), :mod:`~nas_ops.bixnas.phase2` (progressive evolution with
  the shared head), :mod:`~nas_ops.bixnas.context` (what both phases share), :mod:`~nas_ops.bixnas.plots`.
- :mod:`~nas_ops.bixnas.search`: the searcher the harness runs (Phase 1 then Phase 2, resumable).
"""

from nas_ops import lazy_submodules

__getattr__ = lazy_submodules(__name__)
