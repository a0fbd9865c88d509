"""Figures of a Local Search: the trajectory (score per evaluation, accepted moves, best so far) and a genotype
drawing (nodes at their resolution, block types, kernel sizes, skips)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from nas_ops.mbnas.space import STEM, Node, canonical, node_levels  # noqa: E402

BLOCK_COLOURS = {"vgg": "#9ecae1", "residual": "#fdae6b", "dense": "#a1d99b", "inception": "#bcbddc"}


def plot_trajectory(entries: Sequence[dict], path: str | Path, phase_starts: Sequence[int] = (0,),
                    title: str = "Local Search") -> Path:
    """Score of every evaluation in order, accepted moves marked, the best so far as a step line."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=120)
    n = [e["n"] for e in entries]
    ax.scatter(n, [e["score"] for e in entries], s=18, color="#888888", label="evaluated network", zorder=2)
    acc = [e for e in entries if e["accepted"]]
    ax.scatter([e["n"] for e in acc], [e["score"] for e in acc], s=90, marker="*", color="#d62728",
               label="accepted move (first: start)", zorder=3)
    ax.step(n, [e["best"] for e in entries], where="post", color="#1f77b4", lw=1.6, label="best so far", zorder=1)
    for i, start in enumerate(phase_starts[1:], start=2):
        ax.axvline(start + 0.5, color="k", ls="--", lw=0.8)
        ax.text(start + 0.7, ax.get_ylim()[0], f" phase {i}", va="bottom", fontsize=8)
    ax.set_xlabel("evaluation")
    ax.set_ylabel("score (validation Dice, last 20 % of epochs)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def draw_genotype(nodes: Sequence[Node], path: str | Path, title: str = "", base_channels: int | None = None) -> Path:
    """Nodes left to right, each at the height of its level (input resolution on top), labelled with its block type
    and kernel size; arrows for the chain, arcs for the skips."""
    nodes = canonical(nodes)
    levels = [0, *node_levels(nodes), 0]  # stem, nodes, head
    labels = ["stem\nvgg 3", *[f"{n.block}\n{n.kernel}x{n.kernel}" for n in nodes], "head\n1x1"]
    colours = [BLOCK_COLOURS["vgg"], *[BLOCK_COLOURS[n.block] for n in nodes], "#eeeeee"]
    xs = list(range(len(levels)))
    depth = max(levels)
    fig, ax = plt.subplots(figsize=(1.05 * len(levels) + 1.5, 1.1 * depth + 3.4), dpi=120)
    w, h = 0.78, 0.62
    for x, lev, lab, col in zip(xs, levels, labels, colours, strict=True):
        ax.add_patch(FancyBboxPatch((x - w / 2, -lev - h / 2), w, h, boxstyle="round,pad=0.02", fc=col, ec="k",
                                    lw=0.8, zorder=3))
        ax.text(x, -lev, lab, ha="center", va="center", fontsize=7.5, zorder=4)
    for i in range(len(xs) - 1):
        ax.add_patch(FancyArrowPatch((xs[i] + w / 2, -levels[i]), (xs[i + 1] - w / 2, -levels[i + 1]),
                                     arrowstyle="-|>", mutation_scale=9, lw=1.0, color="k", zorder=2))
    for i, node in enumerate(nodes):
        if node.skip is None:
            continue
        src = 0 if node.skip == STEM else node.skip + 1
        dst = i + 1
        ax.add_patch(FancyArrowPatch((xs[src], -levels[src] + h / 2), (xs[dst], -levels[dst] + h / 2),
                                     connectionstyle="arc3,rad=-0.35", arrowstyle="-|>", mutation_scale=9, lw=1.0,
                                     color="#d62728", zorder=1))
    for lev in range(depth + 1):
        width = f", {base_channels * 2**lev} ch" if base_channels else ""
        ax.text(-0.75, -lev, f"1/{2**lev}{width}", ha="right", va="center", fontsize=8, color="#555555")
        ax.axhline(-lev, color="#dddddd", lw=0.6, zorder=0)
    handles = [FancyBboxPatch((0, 0), 1, 1, fc=c, ec="k", label=b) for b, c in BLOCK_COLOURS.items()]
    handles.append(FancyArrowPatch((0, 0), (1, 1), color="#d62728", label="skip (concatenated)"))
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, fontsize=7.5, frameon=False)
    spans = [i + 1 - (0 if n.skip == STEM else n.skip + 1) for i, n in enumerate(nodes) if n.skip is not None]
    top = h / 2 + 0.35 * max(spans, default=0) / 2 + 0.3  # the peak of the widest skip arc
    ax.set_xlim(-2.1, len(levels) - 0.3)
    ax.set_ylim(-depth - 0.8, top)
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9, y=0.02, va="bottom")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
