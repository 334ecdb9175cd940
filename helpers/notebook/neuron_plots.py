"""Figures of features against MLP neurons (from :mod:`helpers.evolution.neuron_report`)."""

from __future__ import annotations

from typing import Any, Mapping

from ..evolution.neuron_report import ALIGNED_R, best_abs_r

#: colour of each block a site is compared with
SLOT_STYLE = {"same": ("its own block", "#08519c"), "before": ("the block before", "#fdae6b")}


def plot_best_neuron_r(neurons: Mapping[str, Any], aligned: float = ALIGNED_R, title: str | None = None):
    """Per site, the distribution of every feature's best |r| with a neuron of the site's own block
    and of the block before (box plots: median, quartiles, 1.5 IQR whiskers), with the line above
    which a feature counts as neuron-aligned."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    best = best_abs_r(neurons)
    sites = list(best)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(sites) + 2), 4.0))
    width = 0.36
    for j, (slot, (label, colour)) in enumerate(SLOT_STYLE.items()):
        at = [i + (j - 0.5) * width for i, s in enumerate(sites) if slot in best[s] and len(best[s][slot])]
        data = [best[s][slot] for s in sites if slot in best[s] and len(best[s][slot])]
        if data:
            box = ax.boxplot(data, positions=at, widths=width * 0.9, patch_artist=True, showfliers=False,
                             medianprops={"color": "black"})
            for patch in box["boxes"]:
                patch.set(facecolor=colour, alpha=0.8, label=label)
            for line in box["medians"]:
                line.set_gid(f"median {slot}")
    ax.axhline(aligned, color="#a50f15", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(sites)), sites, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.7, len(sites) - 0.3)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("site (features of the SAE at this site)")
    ax.set_ylabel("best |Pearson r| with one neuron (unitless)")
    ax.set_title(title or "Each feature's best-correlated MLP neuron, per layer")
    handles = [Patch(facecolor=c, alpha=0.8, label=f"neurons of {lab}") for lab, c in SLOT_STYLE.values()]
    handles.append(plt.Line2D([], [], color="#a50f15", linestyle="--", label=f"neuron-aligned: |r| ≥ {aligned:g}"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig
