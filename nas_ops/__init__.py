"""medseg-nas: neural architecture search for medical image segmentation.

Submodules load on first attribute access (``nas_ops.data``, ``nas_ops.bundle``, ...), so bundle configs need
only ``"$import nas_ops"`` and importing the package stays cheap.
"""

import importlib

__version__ = "0.1.0"


def __getattr__(name: str):
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
