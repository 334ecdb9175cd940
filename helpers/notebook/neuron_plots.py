"""Figures of features against MLP neurons (from :mod:`helpers.evolution.neuron_report`)."""

from __future__ import annotations

from typing import Any, Mapping

from ..evolution.neuron_report import ALIGNED_R, best_abs_r, unit_score_rows, unit_scores

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


#: colour of each kind of unit in the interpretability comparison
UNIT_STYLE = {"feature": ("SAE features", "#238b45"), "neuron": ("MLP neurons (rate-matched)", "#807dba")}


def plot_unit_scores(neurons: Mapping[str, Any], score: str = "detection_auroc", title: str | None = None):
    """Per site, the explanation ``score`` of the sampled features and of their rate-matched
    neurons (box plots: median, quartiles, 1.5 IQR whiskers); below, the difference of the means
    (features - neurons) with its 95% bootstrap interval, per site and pooled."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from ..explain.summary import SCORE_NAMES

    per_site = {s: v for s, v in unit_scores(neurons, score).items() if v["feature"].size and v["neuron"].size}
    rows = [r for r in unit_score_rows(neurons, score) if r["site"] in per_site or r["site"] == "all sites"]
    sites = list(per_site)
    if not sites:
        fig, ax = plt.subplots(figsize=(6.5, 1.6))
        ax.set_axis_off()
        ax.set_title(title or "Features against neurons, explained and scored alike")
        ax.text(0.5, 0.4, "nothing scored: the neuron pass's text holds no held-out document,\n"
                "or no feature fired often enough to be sampled", ha="center", va="center")
        return fig
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(max(6.5, 0.9 * len(sites) + 3), 6.0), sharex=True,
                                 gridspec_kw={"height_ratios": [2, 1]})
    width = 0.36
    for j, (unit, (label, colour)) in enumerate(UNIT_STYLE.items()):
        data = [per_site[s][unit] for s in sites]
        at = [i + (j - 0.5) * width for i in range(len(sites))]
        box = ax.boxplot(data, positions=at, widths=width * 0.9, patch_artist=True, showfliers=False,
                         medianprops={"color": "black"})
        for patch in box["boxes"]:
            patch.set(facecolor=colour, alpha=0.8)
        for line in box["medians"]:
            line.set_gid(f"median {unit}")
    name = SCORE_NAMES[score]
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_ylabel(f"{name} (0.5: chance)")
    ax.set_title(title or f"Features against neurons, explained and scored alike: {name}")
    ax.legend(handles=[Patch(facecolor=c, alpha=0.8, label=lab) for lab, c in UNIT_STYLE.values()], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    x = list(range(len(rows)))
    diff = [r["difference"] for r in rows]
    ci = [r["95% interval"] for r in rows]
    err = [[d - lo for d, (lo, _) in zip(diff, ci)], [hi - d for d, (_, hi) in zip(diff, ci)]]
    bx.errorbar(x, diff, yerr=err, fmt="o", color="black", capsize=3)
    bx.axhline(0, color="grey", linewidth=1)
    bx.set_ylabel("features - neurons\n(mean, 95% CI)")
    bx.set_xticks(x, [r["site"] for r in rows], rotation=30, ha="right", fontsize=8)
    bx.set_xlim(-0.7, len(rows) - 0.3)
    bx.set_xlabel("site (features of its SAE; neurons of its own block)")
    fig.tight_layout()
    return fig
