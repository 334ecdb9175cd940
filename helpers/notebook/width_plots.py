"""The width sweep in one figure: FVU, L0, dead features and loss recovered against the SAE width; and how
features split between widths (a splitting tree, the split / persist / new shares)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt

Rows = Sequence[Mapping[str, Any]]


def _width_label(width: int) -> str:
    """``512``, ``2k``, ``16k``, ``1m`` (k = 1024, m = 2^20)."""
    if width >= 1 << 20 and width % (1 << 20) == 0:
        return f"{width >> 20}m"
    return f"{width // 1024}k" if width >= 1024 and width % 1024 == 0 else str(width)


def plot_width_sweep(rows: Rows | Mapping[str, Rows], title: str = "SAE quality against width"):
    """One panel per measure against the width (log axis, one point per width): FVU, L0 (active
    features per token), dead features (% of the width) and, where every row has it, the loss
    recovered (%). ``rows``: the rows of :func:`~helpers.subject.widths.width_rows` (one series), or
    ``{label: rows}`` for several (e.g. trained here beside the official SAEs of one layer)."""
    series = dict(rows) if isinstance(rows, Mapping) else {"": rows}
    all_rows = [r for rs in series.values() for r in rs]
    panels = [
        ("fvu", "FVU (fraction of variance unexplained)", 1.0),
        ("l0", "L0 (active features per token)", 1.0),
        ("dead_fraction", "dead features (% of width)", 100.0),
    ]
    if all_rows and all("loss_recovered" in r for r in all_rows):
        panels.append(("loss_recovered", "loss recovered (%)", 1.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.6), constrained_layout=True,
                             squeeze=False)
    widths = sorted({int(r["width"]) for r in all_rows})
    for ax, (key, label, scale) in zip(axes[0], panels):
        for name, rs in series.items():
            rs = sorted(rs, key=lambda r: r["width"])
            ax.plot([r["width"] for r in rs], [r[key] * scale for r in rs], marker="o", label=name or None)
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [_width_label(w) for w in widths])
        ax.minorticks_off()
        ax.set_xlabel("SAE width (features, log scale)")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0])
        if len(series) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def _tree_layout(tree: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], float, Mapping[str, Any] | None]]:
    """``(node, y, parent)`` of every node, depth first: leaves one row apart, a parent centred on its children."""
    out: list = []
    next_leaf = [0.0]

    def place(node: Mapping[str, Any], parent: Mapping[str, Any] | None) -> float:
        slot = len(out)
        out.append(None)
        ys = [place(child, node) for child in node.get("children", [])]
        if ys:
            y = sum(ys) / len(ys)
        else:
            y, next_leaf[0] = next_leaf[0], next_leaf[0] + 1.0
        out[slot] = (node, y, parent)
        return y

    place(tree, None)
    return out


def plot_splitting_tree(tree: Mapping[str, Any], labels: Mapping[tuple[int, int], str] | None = None,
                        widths: Sequence[int] | None = None, title: str = "How one feature splits as the SAE widens"):
    """A splitting tree of :func:`~helpers.evolution.splitting.splitting_tree`, left to right: one column per
    width, one box per feature (``w512 #17`` and, from ``labels[(width_index, feature)]``, a short label such
    as its top tokens), each edge annotated with the child's necessity P(parent fires | child fires)."""
    labels = labels or {}
    placed = _tree_layout(tree)
    depth = max(node["width_index"] for node, _, _ in placed) - tree["width_index"] + 1
    n_leaves = max(y for _, y, _ in placed) + 1
    fig, ax = plt.subplots(figsize=(3.4 * depth + 0.6, max(2.4, 0.62 * n_leaves + 1.2)), constrained_layout=True)
    pos = {id(node): (node["width_index"], y) for node, y, _ in placed}

    def name(node: Mapping[str, Any]) -> str:
        i, f = node["width_index"], node["feature"]
        head = f"w{_width_label(widths[i])} #{f}" if widths is not None and i < len(widths) else f"[{i}] #{f}"
        label = labels.get((i, f))
        if label:
            label = str(label).replace("\n", " ")
            head += "\n" + (label if len(label) <= 26 else label[:25] + "…")
        return head

    for node, y, parent in placed:
        x = node["width_index"]
        ax.text(x, y, name(node), ha="center", va="center", fontsize=8, gid="node",
                bbox=dict(boxstyle="round,pad=0.35", facecolor="#e8eef7", edgecolor="#4a6fa5"))
        if parent is not None:
            px, py = pos[id(parent)]
            ax.annotate("", xy=(x - 0.3, y), xytext=(px + 0.3, py),
                        arrowprops=dict(arrowstyle="->", color="#777777", lw=0.9))
            if node.get("necessity") is not None:
                ax.text(px + 0.5 * (x - px) + 0.05, py + 0.55 * (y - py), f"{node['necessity']:.2f}", fontsize=7,
                        ha="center", va="bottom", color="#444444", gid="edge",
                        bbox=dict(boxstyle="square,pad=0.05", facecolor="white", edgecolor="none"))
    cols = sorted({node["width_index"] for node, _, _ in placed})
    ax.set_xticks(cols, [f"w{_width_label(widths[i])}" if widths is not None and i < len(widths) else f"width {i}"
                         for i in cols])
    ax.set_xlim(cols[0] - 0.5, cols[-1] + 0.5)
    ax.set_ylim(n_leaves - 0.4, -0.6)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("SAE width (edge labels: necessity = P(parent fires | child fires))")
    ax.set_title(title)
    return fig


def plot_split_shares(shares_rows: Rows, title: str = "Feature splitting between SAE widths"):
    """Grouped bars per width pair: the % of alive narrow features that split, that persist one-to-one, and
    the % of alive wide features that are new. ``shares_rows``: the rows of
    :meth:`~helpers.evolution.splitting.SplitResult.shares_row` (shares in [0, 1]; ``label``, else
    ``wa``/``wb``, names the pair)."""
    rows = list(shares_rows)
    kinds = [("split", "split (% of alive narrow)"), ("persist", "persist 1:1 (% of alive narrow)"),
             ("new", "new (% of alive wide)")]
    names = [r.get("label") or f"{_width_label(int(r['wa']))} → {_width_label(int(r['wb']))}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.8 * len(rows) + 2.0), 3.8), constrained_layout=True)
    step = 0.8 / len(kinds)
    for k, (key, label) in enumerate(kinds):
        xs = [i + (k - (len(kinds) - 1) / 2) * step for i in range(len(rows))]
        bars = ax.bar(xs, [100.0 * float(r[key]) for r in rows], width=step, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(len(rows)), names)
    ax.set_xlabel("width pair (narrow → wide)")
    ax.set_ylabel("share of alive features (%)")
    ax.set_ylim(0, max([100.0 * float(r[key]) for r in rows for key, _ in kinds if r[key] == r[key]] + [1.0]) * 1.15)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def plot_best_cosines(cosines: Mapping[str, Any], threshold: float = 0.9,
                      title: str = "Each narrow feature's nearest decoder direction at the wider width"):
    """Histogram per width pair of each alive narrow feature's highest decoder cosine with the wider SAE
    (``{"512 → 2048": values}``, :func:`~helpers.evolution.width_report.best_cosines`), with the
    one-to-one persistence threshold drawn."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 3.6), constrained_layout=True)
    bins = np.linspace(0.0, 1.0, 41)
    for name, values in cosines.items():
        values = np.asarray(values, dtype=float)
        ax.hist(values, bins=bins, histtype="step", linewidth=1.5,
                label=f"{name} (median {np.median(values):.2f})" if values.size else f"{name} (none alive)")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
    ax.annotate(f"persists 1:1 at ≥ {threshold:g}", (threshold, 0.95), xycoords=("data", "axes fraction"),
                ha="right", va="top", fontsize=8)
    ax.set_xlabel("best decoder cosine at the wider width")
    ax.set_ylabel("narrow features")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig
