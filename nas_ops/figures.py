"""Figures as PNG files: matplotlib figures drawn by the Agg canvas (no pyplot, no global backend), written
atomically, so a plot never leaves a partial file and never changes another library's matplotlib state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nas_ops.atomic import atomic_write


def figure(**kwargs: Any) -> Figure:
    """A figure with its own Agg canvas."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG atomically."""
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    return path
