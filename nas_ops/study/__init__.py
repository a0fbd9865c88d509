"""The study: from a dataset to a table that says whether each search beat hand-design and chance.

- :mod:`~nas_ops.study.split`: held-out test cases and the development folds, shared with nnU-Net;
- :mod:`~nas_ops.study.workflows`: a bundle's workflows run as ``python -m monai.bundle run`` runs them;
- :mod:`~nas_ops.study.models`: what a study trains per method (the found network, baselines, random ones);
- :mod:`~nas_ops.study.jobs`: one training with its test-set evaluation, a job of the execution layer;
- :mod:`~nas_ops.study.statistics`: Friedman, Wilcoxon with Holm, the rank among random architectures;
- :mod:`~nas_ops.study.report`: ``results.csv``, ``summary.json``, ``report.md`` and the plots;
- :mod:`~nas_ops.study.run`: the whole study, resumable (``scripts/study.py``, ``medseg-nas-study``).
"""

from nas_ops import lazy_submodules

__getattr__ = lazy_submodules(__name__)
