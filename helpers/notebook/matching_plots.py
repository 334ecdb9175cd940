"""Figures and tables of the matching-method notebook (success rate, mean drop, agreement)."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np


def success_frame(rows: Sequence[dict[str, Any]], value: str = "success_rate"):
    """A pandas table: one row per adjacent pair (and ``all pairs``), one column per method,
    ``value`` in percent (``success_rate``, ``silent_partner``) or as it is (``mean_drop``)."""
    import pandas as pd

    from .labels import short_pair

    rows = [r | {"pair": short_pair(r["pair"])} for r in rows]  # L4 → L5: the table stays narrow
    frame = pd.DataFrame(rows).pivot(index="pair", columns="method", values=value)
    order_rows = list(dict.fromkeys(r["pair"] for r in rows))
    order_cols = list(dict.fromkeys(r["method"] for r in rows))
    frame = frame.loc[order_rows, order_cols]
    if value in ("success_rate", "silent_partner"):
        frame = 100.0 * frame
    frame.columns.name = None
    return frame.round(1 if value != "mean_drop" else 3)


def plot_matching_success(rows: Sequence[dict[str, Any]], threshold: float, title: str = ""):
    """Two panels of grouped bars, per adjacent pair (and all pairs) and method: the success rate
    (drop >= threshold, %) and the mean relative drop of the downstream feature."""
    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = {(r["pair"], r["method"]): r for r in rows}
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), constrained_layout=True, sharex=True)
    width = 0.8 / len(methods)
    cmap = plt.get_cmap("tab10")
    x = np.arange(len(pairs))
    for j, m in enumerate(methods):
        colour = "0.55" if m == "random" else cmap(j)
        for ax, key, scale in ((axes[0], "success_rate", 100.0), (axes[1], "mean_drop", 1.0)):
            values = [table[(p, m)][key] * scale for p in pairs]
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, values, width, label=m, color=colour,
                   hatch="//" if m == "random" else None)
    axes[0].set_ylabel(f"success rate (%)\n(mean drop >= {threshold:g})")
    axes[0].set_ylim(0, 100)
    axes[1].set_ylabel("mean relative drop of b\n(1 = silenced)")
    axes[1].axhline(0, color="black", linewidth=0.6)
    axes[1].set_xticks(x, pairs, rotation=20, ha="right", fontsize=8)
    axes[1].set_xlabel("adjacent pair of sites (L -> L+1)")
    axes[0].legend(fontsize=8, ncol=len(methods), loc="upper right")
    axes[0].set_title(title or f"Ablating the top-1 upstream partner: success at threshold {threshold:g}")
    return fig


def plot_agreement(matrix: np.ndarray, methods: Sequence[str], title: str = "How often two methods pick the same partner"):
    """A heatmap of the share (%) of downstream features for which two methods agree."""
    fig, ax = plt.subplots(figsize=(6, 5), constrained_layout=True)
    image = ax.imshow(100.0 * matrix, vmin=0, vmax=100, cmap="viridis")
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    for i in range(len(methods)):
        for j in range(len(methods)):
            value = 100.0 * matrix[i, j]
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if value < 60 else "black")
    fig.colorbar(image, ax=ax, label="same top-1 partner (% of downstream features)")
    ax.set_title(title)
    return fig
