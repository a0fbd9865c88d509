"""MB-NAS (SPIE 2022): a mixed-block search space over cells and topology, searched by Local Search.

- :mod:`nas_ops.mbnas.config`: the ``search`` block (every knob of a Local Search, paper defaults).
- :mod:`nas_ops.mbnas.blocks`: the four block types (VGG, Residual, Dense, Inception), 2D and 3D.
- :mod:`nas_ops.mbnas.space`: nodes, validity rules, canonical form, the U-Net point, the size of the space,
  the Local Search variables and their neighbourhoods.
- :mod:`nas_ops.mbnas.network`: the network of a genotype (method ``"mbnas"``).
- :mod:`nas_ops.mbnas.local_search`: first-improvement Local Search with its cache and checkpoint; the variants
  MB-NAS, Macro-NAS, Micro-NAS and Bilevel-NAS.
- :mod:`nas_ops.mbnas.evaluate`: the evaluation protocol (k-fold x seeds, Dice over the last 20 % of epochs), one
  training as a pure function, a job of the execution layer (in process, on Ray or in subprocesses).
- :mod:`nas_ops.mbnas.search`: the searcher the harness runs (data, space, Local Search and outputs together).
- :mod:`nas_ops.mbnas.plots`: the search trajectory and a drawing of a genotype.
"""

from nas_ops import lazy_submodules

__getattr__ = lazy_submodules(__name__)
