"""medseg-nas: neural architecture search for medical image segmentation.

Submodules load on first attribute access (``nas_ops.data``, ``nas_ops.training.artifacts``, ...), in this package
and its subpackages, so bundle configs need only ``"$import nas_ops"`` and importing the package stays cheap.
"""

import importlib
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"


def lazy_submodules(package: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``<package>.<name>`` on first access."""

    def __getattr__(name: str) -> Any:
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__


__getattr__ = lazy_submodules(__name__)
