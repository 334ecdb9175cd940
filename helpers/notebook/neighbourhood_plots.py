"""A feature's local neighbourhood across SAE widths, drawn: the UMAP of its nearest decoder
directions coloured by width, and the directions of one concept at each width as arrows from the
origin (the tables come from :mod:`helpers.evolution.decoder_neighbourhood`)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

__all__ = ["plot_concept_vectors", "plot_neighbourhood_umap"]


def _width_colours(widths: Iterable[int]) -> dict[int, Any]:
    """One colour of ``tab10`` per width, widths ascending (the same widths give the same colours)."""
    cmap = plt.get_cmap("tab10")
    return {w: cmap(i % 10) for i, w in enumerate(sorted({int(w) for w in widths}))}


def _member_pairs(members: Mapping[int, Iterable[int]] | Iterable[tuple[int, int]] | None) -> set[tuple[int, int]]:
    """``{width: [feature, ...]}`` or ``[(width, feature), ...]`` as a set of pairs."""
    if members is None:
        return set()
    if isinstance(members, Mapping):
        return {(int(w), int(f)) for w, fs in members.items() for f in fs}
    return {(int(w), int(f)) for w, f in members}


def plot_neighbourhood_umap(points: Mapping[str, Any], layout: Any, title: str = "Decoder neighbourhood (UMAP, cosine)",
                            members: Mapping[int, Iterable[int]] | Iterable[tuple[int, int]] | None = None):
    """A scatter of the layout (e.g. :func:`~helpers.evolution.decoder_neighbourhood.umap_layout` of
    ``points['vector']``), one colour per width (legend ``width 512``...); the anchor (``points``'s
    first row, from :func:`~helpers.evolution.decoder_neighbourhood.neighbourhood_points`) a star in its
    width's colour; the concept's ``members`` (``{width: [feature, ...]}`` or ``(width, feature)``
    pairs), where they are among the points, circled in black."""
    xy = np.asarray(layout, dtype=float)
    width = np.asarray(points["width"], dtype=np.int64)
    feature = np.asarray(points["feature"], dtype=np.int64)
    if xy.shape != (width.shape[0], 2):
        raise ValueError(f"the layout has shape {xy.shape}, not ({width.shape[0]}, 2): lay out points['vector']")
    colours = _width_colours(width)
    fig, ax = plt.subplots(figsize=(6.4, 5.2), constrained_layout=True)
    rest = np.arange(width.shape[0]) >= 1  # row 0 is the anchor
    for w, colour in colours.items():
        sel = rest & (width == w)
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=18, color=colour, alpha=0.8, label=f"width {w}")
    if width.shape[0]:
        ax.scatter(xy[:1, 0], xy[:1, 1], marker="*", s=260, color=colours[int(width[0])], edgecolors="black",
                   linewidths=0.8, zorder=3, label=f"anchor w{int(width[0])} #{int(feature[0])}")
    pairs = _member_pairs(members)
    circled = np.array([(int(w), int(f)) in pairs for w, f in zip(width, feature)], dtype=bool)
    if circled.any():
        ax.scatter(xy[circled, 0], xy[circled, 1], s=140, facecolors="none", edgecolors="black", linewidths=1.2,
                   zorder=4, label="concept members")
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_concept_vectors(coords: Any, widths: Sequence[int], labels: Sequence[Any],
                         title: str = "One concept across widths (centred, PCA)",
                         explained: Sequence[float] | None = None):
    """One arrow from the origin per vector (e.g. the coordinates of
    :func:`~helpers.evolution.decoder_neighbourhood.centred_projection`), coloured by its width and labelled
    ``w512 #17`` (``labels``: feature indices, or ready strings such as
    ``concept_vectors(...)['label']``); equal aspect. ``explained``: each axis' share of the variance,
    shown in the axis labels."""
    xy = np.asarray(coords, dtype=float)
    widths = [int(w) for w in widths]
    if xy.ndim != 2 or xy.shape[1] != 2 or not (xy.shape[0] == len(widths) == len(labels)):
        raise ValueError(f"coords {xy.shape}, {len(widths)} widths and {len(labels)} labels do not match: "
                         "pass one width and one label per row of coords [m, 2]")
    colours = _width_colours(widths)
    fig, ax = plt.subplots(figsize=(5.6, 5.6), constrained_layout=True)
    for (x, y), w, label in zip(xy, widths, labels):
        text = label if isinstance(label, str) else f"w{w} #{int(label)}"
        ax.annotate("", xy=(x, y), xytext=(0.0, 0.0),
                    arrowprops=dict(arrowstyle="-|>", color=colours[w], lw=1.6, shrinkA=0, shrinkB=0))
        ax.text(x, y, f" {text}", color=colours[w], fontsize=8, ha="left" if x >= 0 else "right", va="center")
    ax.plot([0.0], [0.0], marker="+", color="black", markersize=10, linestyle="none")
    reach = float(np.abs(xy).max()) * 1.3 if xy.size and np.abs(xy).max() > 0 else 1.0
    ax.set_xlim(-reach, reach)
    ax.set_ylim(-reach, reach)
    ax.set_aspect("equal")
    ax.axhline(0.0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0.0, color="0.85", lw=0.8, zorder=0)
    share = [f" ({100 * s:.0f}% of variance)" for s in explained] if explained is not None else ["", ""]
    ax.set_xlabel(f"PC 1{share[0]}")
    ax.set_ylabel(f"PC 2{share[1]}")
    ax.set_title(title)
    ax.legend(handles=[Line2D([], [], color=c, lw=2, label=f"width {w}") for w, c in colours.items()],
              fontsize=8, loc="best")
    return fig
