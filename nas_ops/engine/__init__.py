"""The run engine every method trains on, and the execution layer that runs independent jobs.

- :mod:`~nas_ops.engine.loop`: :class:`RunEngine`, epochs of a pluggable step with a scheduler, validation through
  the one scorer, progress bars, log lines, and :class:`RunCheckpoint`, the per-epoch checkpoint with its run
  identity.
- :mod:`~nas_ops.engine.steps`: the steps: a plain supervised step and a sampled-path step for one-shot supernets
  (a method brings its own, e.g. BiX-NAS's shared-head step).
- :mod:`~nas_ops.engine.identity`: a run's identity, the config's components included.
- :mod:`~nas_ops.engine.seeds`: every derived seed of a run, in one place.
- :mod:`~nas_ops.engine.execution`: independent jobs in this process, on Ray or in subprocesses
  (:mod:`~nas_ops.engine.worker` runs one).
"""

from nas_ops import lazy_submodules

__getattr__ = lazy_submodules(__name__)
