"""Completeness against frequency: the share of a family's members some feature covers, by how often
the corpus mentions them (issue 18; definitions in :mod:`helpers.explain.completeness`)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt

from ..explain.completeness import MIN_PRECISION, MIN_RECALL, coverage_by_frequency


def _label(label: Any) -> str:
    """A site's short name (``blocks.4.hook_resid_post`` -> ``layer 4``), a width as ``2048 features``."""
    if isinstance(label, int):
        return f"{label} features"
    text = str(label)
    parts = text.split(".")
    return f"layer {parts[1]}" if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else text


def plot_coverage_by_frequency(member_rows: Sequence[Mapping[str, Any]], title: str | None = None,
                               per_bin: int = 4, edges: Sequence[float] | None = None):
    """Coverage (% of the members in a bin that some feature covers) against the members' frequency
    (mentions per million tokens, log scale), one line per set of features (site or width); the
    members of every family in ``member_rows`` together, binned by
    :func:`~helpers.explain.completeness.coverage_by_frequency`. Each point is drawn at its bin's
    geometric-mean frequency and annotated with its member count on the first line."""
    bins = coverage_by_frequency(member_rows, edges, per_bin)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), constrained_layout=True)
    for i, (label, rows) in enumerate(bins.items()):
        x = [b["frequency"] for b in rows]
        ax.plot(x, [100 * b["coverage"] for b in rows], marker="o", label=_label(label))
        if i == 0:
            for b in rows:
                ax.annotate(f"n={b['members']}", (b["frequency"], 100 * b["coverage"]), textcoords="offset points",
                            xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_ylim(-5, 105)
    ax.set_xlabel("member frequency (mentions per million tokens, log scale)")
    ax.set_ylabel("members covered (%)")
    families = sorted({r["family"] for r in member_rows})
    ax.set_title(title or f"Completeness of {', '.join(families) or 'no family'} against frequency\n"
                 f"(covered: a feature with precision >= {MIN_PRECISION:g} and recall >= {MIN_RECALL:g})",
                 fontsize=10)
    if not bins:
        ax.text(0.5, 0.5, "no member mentioned", transform=ax.transAxes, ha="center")
    if len(bins) > 1:
        ax.legend(fontsize=7, ncol=2 if len(bins) > 5 else 1)
    return fig
