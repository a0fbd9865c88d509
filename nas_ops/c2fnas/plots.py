"""Plots of a C2FNAS search as PNG.

- :func:`plot_coarse`: per k-means group, the validation Dice of every scored topology; the best marked.
- :func:`plot_evolution`: best and mean fitness of the population per generation.
- :func:`plot_topology`: the cells of a network on the (cell, level) grid, each labelled with its op, the skips
  of the upsampling cells drawn as arcs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas_ops.c2fnas.space import NUM_LEVELS, skip_sources
from nas_ops.figures import figure, save_png

OP_COLOURS = {"2d": "#55a868", "3d": "#4c72b0", "p3d": "#dd8452"}


def plot_coarse(result: dict[str, Any], path: str | Path) -> Path:
    """Dice of the scored topologies of each group (a column of dots per group), the stage's choice circled."""
    fig = figure(figsize=(1.0 + 0.6 * len(result["groups"]), 3.6), layout="constrained")
    ax = fig.subplots()
    for g in result["groups"]:
        values = list(g["scores"].values())
        ax.scatter([g["group"]] * len(values), values, s=14, alpha=0.6, color="#4c72b0")
        ax.scatter([g["group"]], [g["best_dice"]], s=30, color="#4c72b0")
    ax.scatter([result["group"]], [result["dice"]], s=160, facecolors="none", edgecolors="#c44e52", linewidths=2,
               label=f"chosen {result['code']}")
    ax.set_xlabel("k-means group of topologies")
    ax.set_ylabel("validation Dice (shared weights)")
    ax.set_xticks([g["group"] for g in result["groups"]],
                  [f"{g['group']}\n({g['size']})" for g in result["groups"]])
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("C2FNAS coarse stage")
    return save_png(fig, path)


def plot_evolution(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Best and mean validation Dice of the population per generation."""
    fig = figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.subplots()
    gens = [row["generation"] for row in history]
    ax.plot(gens, [row["best"] for row in history], marker="o", label="best")
    ax.plot(gens, [row["mean"] for row in history], marker=".", label="population mean")
    ax.set_xlabel("generation")
    ax.set_ylabel("validation Dice (shared weights)")
    ax.set_title("C2FNAS fine stage: evolution")
    ax.legend(fontsize=8)
    return save_png(fig, path)


def plot_topology(levels: Sequence[int], ops: Sequence[str], path: str | Path, title: str = "") -> Path:
    """The network's cells at (cell index, level), coloured and labelled by op; level 0 (1/2) on top."""
    fig = figure(figsize=(1.0 + 0.7 * len(levels), 3.2), layout="constrained")
    ax = fig.subplots()
    xs = list(range(-1, len(levels)))
    ys = [0, *levels]
    ax.plot(xs, ys, color="#999999", zorder=1)
    for i, skip in enumerate(skip_sources(levels)):
        if skip is not None:
            ax.annotate("", xy=(i, levels[i]), xytext=(skip, levels[i]),
                        arrowprops={"arrowstyle": "->", "color": "#c44e52", "connectionstyle": "arc3,rad=0.3"})
    ax.scatter([-1], [0], s=260, marker="s", color="#cccccc", zorder=2)
    ax.text(-1, 0, "stem", ha="center", va="center", fontsize=7)
    for i, (level, op) in enumerate(zip(levels, ops, strict=True)):
        ax.scatter([i], [level], s=420, color=OP_COLOURS[op], zorder=2)
        ax.text(i, level, op.upper(), ha="center", va="center", fontsize=7, color="white", zorder=3)
    ax.set_yticks(range(NUM_LEVELS), [f"1/{2 ** (level + 1)}" for level in range(NUM_LEVELS)])
    ax.set_ylim(NUM_LEVELS - 0.5, -0.7)
    ax.set_xticks(range(len(levels)))
    ax.set_xlabel("cell")
    ax.set_title(title or "C2FNAS network")
    return save_png(fig, path)
