"""Plots of a BiX-NAS search as PNG (matplotlib figures drawn by the Agg canvas; no pyplot, no global backend).

- :func:`plot_selection`: the selection probabilities of every searching block as heat maps (stages x levels).
- :func:`plot_phase1_history`: loss, validation IoU and mean selection entropy per Phase-1 epoch.
- :func:`plot_pareto`: per Phase-2 stage, validation IoU against MACs of every sample; front and kept marked.
- :func:`plot_architecture`: the blocks of a BiX-Net per extraction stage and resolution, its skips as edges,
  dead (pruned) blocks greyed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from nas_ops.bixnas.space import LEVELS, SEQUENTIAL, SkipSets, analyse, stage_kind, stage_name
from nas_ops.figures import figure, save_png

ENC_COLOUR, DEC_COLOUR, DEAD_COLOUR = "#4c72b0", "#dd8452", "#d0d0d0"


_figure, _save = figure, save_png


def _candidate_labels() -> list[str]:
    return ["0 seq"] + [f"{k} L{k - 1}" for k in range(1, LEVELS + 1)]


# ----------------------------------------------------------------------------------------------------------
# Phase 1
# ----------------------------------------------------------------------------------------------------------


def plot_selection(selection: dict[str, Any], path: str | Path) -> Path:
    """Heat maps of the selection probabilities: one ``N x (N-2)`` panel per searching block.

    Rows of the grid are extraction stages 1..2T-1, columns the levels; inside a panel, rows are the candidate
    inputs and columns the picks; each column's argmax (the candidate set) is outlined.
    """
    blocks = selection["blocks"]
    stages = sorted({b["stage"] for b in blocks.values()})
    fig = _figure(figsize=(2.3 * LEVELS + 1.2, 2.3 * len(stages) + 0.8), layout="constrained")
    axes = fig.subplots(len(stages), LEVELS, squeeze=False)
    image = None
    for r, s in enumerate(stages):
        for lv in range(LEVELS):
            ax = axes[r][lv]
            b = blocks[f"{stage_name(s)}_level{lv}"]
            probs = b["probabilities"]
            image = ax.imshow(probs, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
            n_rows, n_cols = len(probs), len(probs[0])
            for j in range(n_cols):
                i = max(range(n_rows), key=lambda row, col=j: probs[row][col])
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=2))
            ax.set_title(f"{stage_name(s)} L{lv}: {b['candidates']}  H={b['entropy']:.2f}", fontsize=8)
            ax.set_xticks(range(n_cols))
            ax.set_xticklabels([f"p{j}" for j in range(n_cols)], fontsize=7)
            ax.set_yticks(range(n_rows))
            ax.set_yticklabels(_candidate_labels() if lv == 0 else [""] * n_rows, fontsize=7)
    fig.suptitle(f"Phase 1 selection probabilities (softmax over candidate rows; outlined: argmax = candidate set; "
                 f"uniform entropy ln {len(_candidate_labels())} = {selection['ln_n']:.2f})", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="probability")
    return _save(fig, path)


def plot_phase1_history(
    history: Sequence[dict[str, Any]], path: str | Path, entropy_init: float | None = None
) -> Path:
    """Loss, validation IoU/Dice and mean selection entropy per Phase-1 epoch (epoch 0: at initialisation)."""
    epochs = [row["epoch"] for row in history]
    fig = _figure(figsize=(12, 3.2), layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].plot(epochs, [row["loss"] for row in history], marker=".")
    axes[0].set_title("training loss")
    axes[1].plot(epochs, [row["val_iou"] for row in history], marker=".", label="IoU")
    axes[1].plot(epochs, [row["val_dice"] for row in history], marker=".", label="Dice")
    axes[1].set_title("validation (mean foreground)")
    axes[1].legend(fontsize=8)
    entropy = [row["mean_entropy"] for row in history]
    if entropy_init is not None:
        epochs_h, entropy = [0, *epochs], [entropy_init, *entropy]
    else:
        epochs_h = epochs
    axes[2].plot(epochs_h, entropy, marker=".", color="C3")
    axes[2].set_title("mean selection entropy (nats)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle("BiX-NAS Phase 1", fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------------------
# Phase 2
# ----------------------------------------------------------------------------------------------------------


def plot_pareto(stages: Sequence[dict[str, Any]], path: str | Path, reference_macs: int | None = None) -> Path:
    """One panel per searched stage: validation IoU vs GMACs of every sample; Pareto front joined, kept starred.

    ``reference_macs`` (BiO-Net++, every block with every candidate) is drawn as a vertical line.
    """
    n = len(stages)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _figure(figsize=(4.2 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, st in zip(axes.flat, stages, strict=False):
        gmacs = [m / 1e9 for m in st["macs"]]
        iou = st["val_iou"]
        front = st["front"]
        ax.scatter(gmacs, iou, s=18, color="0.6", label=f"samples ({len(iou)})", zorder=2)
        pts = sorted((gmacs[i], iou[i]) for i in front)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color="C0", markersize=5, label="Pareto front",
                zorder=3)
        ax.scatter([gmacs[i] for i in st["kept"]], [iou[i] for i in st["kept"]], marker="*", s=170, color="C3",
                   edgecolor="k", linewidth=0.5, label=f"kept ({len(st['kept'])})", zorder=4)
        if reference_macs is not None:
            ax.axvline(reference_macs / 1e9, color="0.3", linestyle=":", linewidth=1, label="BiO-Net++")
        ax.set_title(f"stage {st['stage']} ({st['stage_name']})", fontsize=10)
        ax.set_xlabel("GMACs (pruned BiX-Net)")
        ax.set_ylabel("validation IoU")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("BiX-NAS Phase 2: samples per searched stage (last extraction stage first)", fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------------------
# the architecture
# ----------------------------------------------------------------------------------------------------------


def _row(stage: int, level: int) -> int:
    """Resolution row of a block: 0 is the finest (encoder level 0, decoder level 3), 3 the coarsest."""
    return level if stage_kind(stage) == "enc" else LEVELS - 1 - level


def plot_architecture(skip_sets: SkipSets, path: str | Path, title: str = "", keep_dead_bridge: bool = False) -> Path:
    """Blocks per extraction stage (columns) and resolution (rows), sequential paths and skips as edges.

    Alive blocks are coloured (encoder blue, decoder orange), dead ones grey and dashed; edges into dead blocks
    are grey. A level whose convs are dead in every iteration is marked "not built".
    """
    live = analyse(skip_sets)
    n = len(skip_sets)
    fig = _figure(figsize=(1.9 * n + 3.0, 5.6))
    ax = fig.subplots()
    x_of = {s: 1.5 + 1.9 * s for s in range(n)}
    y_of = {r: -1.2 * r for r in range(LEVELS + 1)}  # row LEVELS: the bridge
    w, h = 0.62, 0.42

    def box(x: float, y: float, text: str, colour: str, alive: bool) -> None:
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.03",
                                    facecolor=colour if alive else "white",
                                    edgecolor="k" if alive else DEAD_COLOUR,
                                    linestyle="-" if alive else "--", linewidth=1.2, zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=7, color="white" if alive else "0.6", zorder=4)

    def edge(a: tuple[float, float], b: tuple[float, float], alive: bool, rad: float = 0.0, seq: bool = False) -> None:
        colour = ("k" if seq else "C2") if alive else DEAD_COLOUR
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=8, linewidth=1.0 if alive else 0.7,
                                     color=colour, connectionstyle=f"arc3,rad={rad}", zorder=2 if alive else 1,
                                     shrinkA=9, shrinkB=9))

    # stem and head
    box(0.0, y_of[0], "stem", "0.35", True)
    box(x_of[n - 1] + 1.6, y_of[0], "head", "0.35", True)
    edge((x_of[n - 1], y_of[0]), (x_of[n - 1] + 1.6, y_of[0]), True, seq=True)
    for s in range(n):
        enc = stage_kind(s) == "enc"
        for lv in range(LEVELS):
            alive = live.alive[s][lv]
            x, y = x_of[s], y_of[_row(s, lv)]
            box(x, y, f"{stage_name(s)}\nL{lv}", ENC_COLOUR if enc else DEC_COLOUR, alive)
            for idx in skip_sets[s][lv]:
                if idx != SEQUENTIAL:  # level idx-1 of the preceding stage
                    src = (x_of[s - 1], y_of[_row(s - 1, idx - 1)])
                    edge(src, (x, y), alive, rad=0.12)
                elif lv > 0:  # the previous level of this stage
                    edge((x, y_of[_row(s, lv - 1)]), (x, y), alive, rad=0.0, seq=True)
                elif enc and s == 0:  # encoder level 0 reads the stem
                    edge((0.0, y_of[0]), (x, y), alive, seq=True)
                elif enc:  # later iterations: a short arrow tagged "stem" (a long edge would cross the figure)
                    start = (x - 0.55, y + 0.55)
                    ax.text(*start, "stem", fontsize=6, ha="right", va="bottom", color="k" if alive else "0.6")
                    edge(start, (x, y), alive, seq=True)
                else:  # decoder level 0 reads the bridge
                    edge((x_of[s] - 0.95, y_of[LEVELS]), (x, y), alive, seq=True)
        if not enc:  # the bridge between this iteration's encoder and decoder
            used = live.bridge[s // 2]
            bx = x_of[s] - 0.95
            box(bx, y_of[LEVELS], "bridge", "0.5", used or keep_dead_bridge)
            edge((x_of[s - 1], y_of[LEVELS - 1]), (bx, y_of[LEVELS]), used, seq=True)
    for kind in ("enc", "dec"):
        built = live.built_levels(kind)
        for lv in range(LEVELS):
            if lv not in built:
                first = 0 if kind == "enc" else 1
                ax.text(x_of[first] - 0.05, y_of[_row(first, lv)] - 0.36, f"{kind} L{lv}: not built", fontsize=6,
                        color="C3", ha="center")
    for r in range(LEVELS):
        ax.text(-0.9, y_of[r], f"1/{2 ** (r + 1)}", fontsize=8, ha="right", va="center", color="0.3")
    ax.text(-0.9, y_of[LEVELS], f"1/{2 ** (LEVELS + 1)}", fontsize=8, ha="right", va="center", color="0.3")
    n_dead = sum(not a for row in live.alive for a in row)
    ax.set_title((title + "\n" if title else "") + f"{n - 1} searched extraction stages; dead (pruned) blocks: "
                 f"{n_dead} of {n * LEVELS} (grey); black: sequential path, green: skips", fontsize=9)
    ax.set_xlim(-1.5, x_of[n - 1] + 2.3)
    ax.set_ylim(y_of[LEVELS] - 0.6, 0.9)
    ax.set_aspect("equal")
    ax.axis("off")
    return _save(fig, path)
