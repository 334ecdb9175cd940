"""Figures and HTML tables for boolean combinations and upstream explanations (notebook 10)."""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

import numpy as np

from ..evolution.gates import PATTERNS


def plot_gate_counts(summary: Sequence[Mapping[str, Any]], min_iou: float, title: str | None = None):
    """Grouped bars per adjacent pair: AND/OR candidates and the survivors of verification."""
    import matplotlib.pyplot as plt

    names = [r["downstream site"] for r in summary]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    bars = [("and candidates", "AND candidates", "#9ecae1"), ("and survivors", "AND survivors", "#08519c"),
            ("or candidates", "OR candidates", "#fdae6b"), ("or survivors", "OR survivors", "#a63603")]
    width = 0.2
    for i, (key, label, colour) in enumerate(bars):
        ax.bar(x + (i - 1.5) * width, [r[key] for r in summary], width, label=label, color=colour)
    ax.set_xticks(x, names)
    ax.set_xlabel("downstream site (its upstream site is the one before)")
    ax.set_ylabel("feature triples (a1, a2, b)")
    ax.set_title(title or f"Gate candidates and survivors of truth-table verification (IoU ≥ {min_iou:g})")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    return fig


def truth_table_html(row: Mapping[str, Any], sites: Sequence[str], labels: Mapping[str, str] | None = None) -> str:
    """The 8 firing patterns of one candidate with their token counts, the gate's value and the
    scores, as an HTML table (``row`` from :func:`helpers.evolution.gate_artefact.gate_rows`)."""
    p = row["pair_index"]
    up, down = sites[p], sites[p + 1]
    labels = labels or {}
    name = lambda site, f: html.escape(f"{site}#{f}" + (f" ({labels[f'{site}#{f}']})" if f"{site}#{f}" in labels else ""))  # noqa: E731
    a1, a2, b = name(up, row["a1"]), name(up, row["a2"]), name(down, row["b"])
    op = " AND " if row["kind"] == "and" else " OR "
    head = (f"<p><b>{row['kind'].upper()} candidate</b>: b = {b}; a1 = {a1}; a2 = {a2}. "
            f"IoU {row['iou']:.3f}, precision {row['precision']:.3f}, recall {row['recall']:.3f}: "
            f"<b>{'survives' if row['survives'] else 'rejected'}</b></p>")
    cells = ["<tr><th>a1</th><th>a2</th><th>b</th><th>a1" + op + "a2</th><th>tokens</th></tr>"]
    for (x1, x2, y), n in zip(PATTERNS, row["table"]):
        gate = (x1 and x2) if row["kind"] == "and" else (x1 or x2)
        agree = "" if bool(gate) == bool(y) or n == 0 else " style='background:#fde0dd'"
        cells.append(f"<tr{agree}><td>{x1}</td><td>{x2}</td><td>{y}</td><td>{int(bool(gate))}</td>"
                     f"<td style='text-align:right'>{n:,}</td></tr>")
    return head + "<table>" + "".join(cells) + "</table><p><small>shaded: patterns seen where b disagrees with the gate</small></p>"


def plot_coverage_curves(explanations: Sequence[Mapping[str, Any]], labels: Sequence[str], coverage: float,
                         title: str = "Upstream explanations: share of firings covered by the greedy set"):
    """Coverage after each greedy addition, one line per explained feature."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for ex, label in zip(explanations, labels):
        y = [0.0] + [s["coverage"] for s in ex["steps"]]
        ax.plot(range(len(y)), y, marker="o", label=label)
    ax.axhline(coverage, color="grey", ls="--", lw=1, label=f"{coverage:.0%} of firings")
    ax.set_xlabel("upstream features in the explanation (greedy, by added coverage)")
    ax.set_ylabel("share of the feature's firings covered")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_explanation_sizes(sizes: np.ndarray, downstream: Sequence[str], coverage: float, max_size: int):
    """Per downstream site (of each adjacent pair), the share of (firing) downstream features whose greedy explanation has
    1, 2, ... upstream features, and of those no set of candidates explains."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    cats = list(range(1, max_size + 1)) + [-1]
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.95, max_size))
    pairs = list(downstream)
    bottom = np.zeros(len(pairs))
    for c in cats:
        share = np.array([(s[s != 0] == c).mean() if (s != 0).any() else 0.0 for s in sizes])
        colour = "#bbbbbb" if c == -1 else colours[c - 1]
        label = "not reached" if c == -1 else (str(c) if c in (1, 2, 3, 4, 8, max_size) else None)
        ax.bar(range(len(pairs)), share, bottom=bottom, color=colour, label=label)
        bottom += share
    ax.set_xticks(range(len(pairs)), pairs)
    ax.set_xlabel("downstream site (explained by the site before)")
    ax.set_ylabel("share of its firing features")
    ax.set_title(f"Size of the smallest greedy upstream set covering ≥ {coverage:.0%} of a feature's firings")
    ax.legend(title="upstream features", fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def side_by_side_html(columns: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> str:
    """Examples of several features next to each other: ``[(title, rows of examples)]`` where
    a row is ``{"activation", "left", "token", "right"}`` (as :func:`helpers.explore.examples.examples`)."""
    cells = []
    for title, rows in columns:
        items = "".join(
            f"<li><code>{r['activation']:.2f}</code> …{html.escape(r['left'][-60:])} "
            f"<b style='background:#ffeda0'>{html.escape(r['token'])}</b> {html.escape(r['right'][:40])}…</li>"
            for r in rows) or "<li>(no examples)</li>"
        cells.append(f"<td style='vertical-align:top;width:{100 // max(len(columns), 1)}%'>"
                     f"<b>{html.escape(title)}</b><ol style='font-size:85%;padding-left:1.2em'>{items}</ol></td>")
    return "<table style='table-layout:fixed;width:100%'><tr>" + "".join(cells) + "</tr></table>"
