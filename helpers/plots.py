"""Figures for the notebooks. Each function returns a matplotlib Figure."""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt


def plot_sae_quality(report: Mapping[str, Mapping[str, float]], title: str = "SAE quality per site"):
    """Three panels per site: FVU, L0 and the dead fraction on held-out tokens."""
    sites = list(report)
    x = range(len(sites))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    panels = [
        ("fvu", "fraction of variance unexplained", None),
        ("l0", "L0 (active features per token)", None),
        ("dead_fraction", "dead features (% of width)", 100.0),
    ]
    for ax, (key, label, scale) in zip(axes, panels):
        values = [report[s][key] * (scale or 1) for s in sites]
        ax.bar(x, values, color="tab:blue")
        ax.set_xticks(list(x), sites, rotation=45, ha="right")
        ax.set_xlabel("site")
        ax.set_ylabel(label)
        ax.set_title(label)
    fig.suptitle(title)
    return fig
