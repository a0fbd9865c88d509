"""C2FNAS (Yu et al., CVPR 2020): coarse-to-fine NAS for 3D segmentation.

The coarse stage searches the macro topology (a path of cells over four levels, :mod:`nas_ops.c2fnas.space`), the
fine stage the op of each cell (2D, 3D or P3D) on that topology; :mod:`nas_ops.c2fnas.network` builds the searched
network and the supernets of both stages from one grid of cells.
"""
