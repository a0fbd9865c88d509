"""DiNTS (He et al., CVPR 2021) through MONAI, a method of its own: :mod:`~nas_ops.dints.config` (its ``search``
block), :mod:`~nas_ops.dints.space` (the decoded topology as a genotype), :mod:`~nas_ops.dints.network` (MONAI's
DiNTS over it), :mod:`~nas_ops.dints.topology_search` (the differentiable search on the run engine) and
:mod:`~nas_ops.dints.search` (the searcher the harness runs). The C2FNAS bundle runs it with its ``dints.json``
overlay, as the comparison row of C2FNAS."""
