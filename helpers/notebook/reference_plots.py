"""Our curves and distributions beside the reference study's, and the comparison table.

Every function takes an experiment (its artefacts are read by
:func:`helpers.reference.load_ours`) or an :class:`~helpers.reference.Ours` already loaded,
and returns a matplotlib Figure (or, for :func:`reference_table`, an HTML table). Figures drawn
from the study's arrays name it and its repository in a footnote.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..reference import (FEATURE_FLOW, STUDY, Ours, check_quantities, comparison_rows, figures, load_ours,
                         load_study)
from .tables import Html, html_table

STUDY_NOTE = (f"Study: {STUDY.model}, {STUDY.saes}, {STUDY.width:,} features; arXiv 2410.08869; "
              f"data: github.com/{STUDY.repository} @ {STUDY.commit}")


def _ours(source, quantities: Sequence[str]) -> Ours:
    return source if isinstance(source, Ours) else load_ours(source, quantities)


def _title(ours: Ours) -> str:
    return f"ours ({ours.name}): {ours.model}, {ours.n_features:,} features"


def _two_panels(ours: Ours, ylabel: str):
    """Ours left, the study's right, on the same axes (tokens, and the y quantity)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True, sharey=True, constrained_layout=True)
    axes[0].set_title(_title(ours), fontsize=10)
    axes[1].set_title(f"study: {STUDY.model}, {STUDY.width:,} features", fontsize=10)
    axes[0].set_ylabel(ylabel)
    return fig, axes


def _footnote(fig, text: str = STUDY_NOTE) -> None:
    fig.supxlabel(text, fontsize=7, color="0.35")


def _lines(ax, x, ys, labels, cmap: str = "viridis") -> None:
    colours = plt.get_cmap(cmap, max(len(labels), 2))
    for i, (y, label) in enumerate(zip(ys, labels)):
        ax.plot(x, y, color=colours(i), label=label, lw=1.3)
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen (log scale)")
    ax.legend(fontsize=7, ncol=2)


def plot_dead_beside_study(source, threshold: int = 0):
    """Dead features (fired at most ``threshold`` times, % of the SAE width) against tokens:
    ours per site (left), the study's per layer (right)."""
    ours, s = _ours(source, ["dead"]), load_study()
    t_ours, t_study = list(ours.dead_thresholds).index(threshold), list(s.dead_thresholds).index(threshold)
    what = "never fired" if threshold == 0 else f"fired at most {threshold} times"
    fig, axes = _two_panels(ours, f"features that {what} (% of width)")
    _lines(axes[0], ours.steps, 100.0 * ours.dead[:, t_ours].T / ours.n_features, ours.sites)
    _lines(axes[1], s.tokens, 100.0 * s.dead[:, t_study].T / s.n_features, s.layers)
    fig.suptitle(f"Dead features against tokens seen, beside the study (threshold {threshold})")
    _footnote(fig)
    return fig


def plot_never_beside_study(source, threshold: int = 0):
    """Share of the feature pairs of adjacent sites that co-fired at most ``threshold`` times,
    against tokens: ours over all ``F x F`` pairs (left), the study's over the first 100
    features of layer L x all 24,576 of L+1 (right)."""
    ours, s = _ours(source, ["never_coactivating"]), load_study()
    t_ours, t_study = list(ours.never_thresholds).index(threshold), list(s.never_thresholds).index(threshold)
    what = "never co-fired" if threshold == 0 else f"co-fired at most {threshold} times"
    fig, axes = _two_panels(ours, f"pairs that {what} (% of pairs)")
    _lines(axes[0], ours.steps, 100.0 * ours.never[t_ours] / float(ours.n_features) ** 2, ours.pairs, "plasma")
    _lines(axes[1], s.tokens, 100.0 * s.never[t_study] / s.n_pairs, s.pairs, "plasma")
    axes[0].set_title(_title(ours) + ", all pairs", fontsize=10)
    axes[1].set_title(f"study: {STUDY.model}, first 100 x {s.n_features:,}", fontsize=10)
    fig.suptitle(f"Feature pairs of adjacent sites that {what}, beside the study")
    _footnote(fig)
    return fig


def plot_max_beside_study(source, bins_per_decade: int = 8, clip: float = 0.01):
    """The distribution of the features' maximum activations (features that fired), one step
    line per site: ours (left), the study's (right), on the same log-spaced bins. The axis
    starts at the decade below the lowest ``clip`` share of either side's maxima; smaller
    maxima are counted in the first bin."""
    ours, s = _ours(source, ["max_activation"]), load_study()
    theirs = s.max_sorted
    low = min(np.quantile(x[x > 0], clip) for x in (ours.max, theirs) if (x > 0).any())
    top = max(float(ours.max.max()), float(theirs.max()))
    lo, hi = math.floor(np.log10(low)), math.ceil(np.log10(top))
    edges = np.logspace(lo, hi, max(hi - lo, 1) * bins_per_decade + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True, sharey=True, constrained_layout=True)
    for ax, values, labels, title in (
        (axes[0], ours.max, ours.sites, _title(ours)),
        (axes[1], theirs, s.layers, f"study: {STUDY.model}, {s.n_features:,} features"),
    ):
        colours = plt.get_cmap("viridis", max(len(labels), 2))
        for i, (v, label) in enumerate(zip(values, labels)):
            v = np.clip(v[v > 0], edges[0], edges[-1])
            weights = np.full(v.shape, 100.0 / max(v.size, 1))
            ax.hist(v, bins=edges, weights=weights, histtype="step", color=colours(i), label=label, lw=1.2)
        ax.set(xscale="log", xlabel="maximum activation of a feature (log scale)", title=title)
        ax.title.set_fontsize(10)
        ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("features (% of those that fired)")
    fig.suptitle("Maximum activation per feature, beside the study (each model in its own units)")
    _footnote(fig)
    return fig


def plot_disappearing_beside_study(source):
    """Share of the alive features of each site with no partner Pearson r >= 0.5 at the next
    site (bars), beside the study's range over GPT-2 small's layer pairs (band)."""
    ours = _ours(source, ["disappearing"])
    low, high = figures()["disappearing"].value
    shares = 100.0 * ours.disappearing()
    fig, ax = plt.subplots(figsize=(9, 3.8), constrained_layout=True)
    ax.axhspan(100 * low, 100 * high, color="tab:orange", alpha=0.25,
               label=f"study, {STUDY.model}: {low:.0%}-{high:.0%} per layer pair")
    ax.bar(range(len(shares)), shares, color="tab:blue", label=_title(ours))
    ax.set_xticks(range(len(shares)), ours.pairs, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="alive features that disappear (%)", xlabel="adjacent pair of sites", ylim=(0, 100))
    ax.set_title("Features disappearing at Pearson r >= 0.5, beside the study")
    ax.legend(fontsize=8, loc="upper left")
    _footnote(fig, "Study: arXiv 2410.08869 (the range as quoted from its pass-through analysis)")
    return fig


def plot_matching_beside_feature_flow(source):
    """Our matching success rate per method over all pairs (bars, the random control hatched),
    beside Feature Flow's about 65% for top-1 cosine and Pearson (red lines on their bars)."""
    ours = _ours(source, ["matching_success"])
    rows = [r for r in ours.need("matching", "matching_success") if r["pair"] == "all pairs"]
    methods = [r["method"] for r in rows]
    reference = figures()["matching_success"].value
    fig, ax = plt.subplots(figsize=(8, 3.8), constrained_layout=True)
    for i, r in enumerate(rows):
        ax.bar(i, 100.0 * r["success_rate"], color="0.6" if r["method"] == "random" else "tab:blue",
               hatch="//" if r["method"] == "random" else None, label=_title(ours) if i == 0 else None)
    ref_x = np.array([methods.index(m) for m in reference if m in methods])
    ax.hlines([100.0 * reference[methods[i]] for i in ref_x], ref_x - 0.4, ref_x + 0.4, lw=3,
              color="tab:red", zorder=3, label=f"Feature Flow, {FEATURE_FLOW.model}: about 65%")
    ax.set_xticks(range(len(methods)), methods)
    ax.set(ylabel="success rate (%)", ylim=(0, 100), xlabel="matching method (top-1 partner)")
    ax.set_title("Ablating the top-1 upstream partner, beside Feature Flow")
    ax.legend(fontsize=8, loc="upper right")
    _footnote(fig, "Feature Flow: Laptev et al. 2025, arXiv 2502.03032 (the figure as quoted)")
    return fig


def _share(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "–"
    return f"{v:.2%}" if 0 < abs(v) < 0.001 else f"{v:.1%}"


def _format(value, unit: str, approximate: bool = False) -> str:
    one = _share if unit == "share" else (lambda v: f"{v:.4g}")
    if isinstance(value, tuple):
        return f"{one(value[0])} – {one(value[1])}"
    return f"about {value:.0%}" if approximate and unit == "share" else one(value)


def reference_table(source, quantities: Sequence[str] | str | None = None) -> Html:
    """Ours beside the reference's, one row per quantity (all of them by default), with what
    differs (model, SAE width, tokens) and the source, as an HTML table."""
    quantities = check_quantities(quantities)
    ours = _ours(source, quantities)
    rows = comparison_rows(ours, quantities)
    sources = {"study": STUDY, "feature-flow": FEATURE_FLOW}
    used = dict.fromkeys(r["source"] for r in rows)
    table = [{"quantity": r["quantity"], "ours": _format(r["ours"], r["unit"]),
              "reference": _format(r["reference"], r["unit"], r["approximate"]),
              "source": "study" if r["source"] == "study" else "Feature Flow",
              "what differs": r["what differs"]} for r in rows]
    caption = f"Ours ({ours.name}) beside the references. Sources: " + "; ".join(
        sources[k].cite for k in used)
    return html_table(table, columns=["quantity", "ours", "reference", "source", "what differs"],
                      caption=caption)
