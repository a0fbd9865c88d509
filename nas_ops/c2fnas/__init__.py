"""C2FNAS (Yu et al., CVPR 2020): coarse-to-fine NAS for 3D segmentation.

The coarse stage searches the macro topology (a path of cells over four levels, :mod:`nas_ops.c2fnas.space`), the
fine stage the op of each cell (2D, 3D or P3D) on that topology; :mod:`nas_ops.c2fnas.network` builds the searched
network and the supernets of both stages from one grid of cells. :mod:`~nas_ops.c2fnas.config` holds the ``search``
block, :mod:`~nas_ops.c2fnas.one_shot` trains and scores the weight-sharing supernets, :mod:`~nas_ops.c2fnas.coarse`
and :mod:`~nas_ops.c2fnas.fine` are the two stages (:mod:`~nas_ops.c2fnas.evolution` the fine stage's search), and
:mod:`~nas_ops.c2fnas.search` is the searcher the harness runs.
"""
