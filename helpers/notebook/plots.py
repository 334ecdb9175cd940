"""Figures for the notebooks. Each function returns a matplotlib Figure."""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np


def plot_sae_quality(report: Mapping[str, Mapping[str, float]], title: str = "SAE quality per site"):
    """One panel per measure, a bar per site: FVU, L0, dead features and, for causal LMs, the
    loss recovered; the project's targets (FVU <= 0.25, dead <= 15%, loss recovered >= 85%) as dashed lines."""
    from ..report import DEAD_TARGET, FVU_TARGET, LOSS_RECOVERED_TARGET

    sites = list(report)
    x = range(len(sites))
    panels = [
        ("fvu", "fraction of variance unexplained", 1.0, FVU_TARGET),
        ("l0", "L0 (active features per token)", 1.0, None),
        ("dead_fraction", "dead features (% of width)", 100.0, 100 * DEAD_TARGET),
    ]
    if all("loss_recovered" in report[s] for s in sites):
        panels.append(("loss_recovered", "loss recovered (%)", 1.0, LOSS_RECOVERED_TARGET))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), constrained_layout=True)
    labels = [s.replace(".hook_resid_post", "").replace(".hook_resid_pre", " pre") for s in sites]
    for ax, (key, label, scale, target) in zip(axes, panels):
        values = [report[s][key] * scale for s in sites]
        ax.bar(x, values, color="tab:blue")
        if target is not None:
            ax.axhline(target, color="tab:red", linestyle="--", linewidth=1, label=f"target {target:g}")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xticks(list(x), labels, rotation=45, ha="right")
        ax.set_xlabel("site")
        ax.set_ylabel(label)
        ax.set_title(label)
    fig.suptitle(title)
    return fig


def plot_max_histogram(max_act, sites, title: str = "Maximum activation per feature"):
    """One step histogram per site over log-spaced bins (features that never fired left out)."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    positive = max_act[max_act > 0]
    if positive.size == 0:
        ax.text(0.5, 0.5, "no feature fired", ha="center", transform=ax.transAxes)
        return fig
    bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 40)
    cmap = plt.get_cmap("viridis", len(sites))
    for i, site in enumerate(sites):
        values = max_act[i][max_act[i] > 0]
        ax.hist(values, bins=bins, histtype="step", color=cmap(i), label=site, linewidth=1.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("maximum activation of a feature (log scale)")
    ax.set_ylabel("number of features (log scale)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    return fig


def plot_dead_curves(dead, tokens, thresholds, sites, threshold_index: int = 0, n_features: int | None = None):
    """Dead features (fired at most t times) against tokens seen, one line per site."""
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    cmap = plt.get_cmap("viridis", len(sites))
    scale = 100.0 / n_features if n_features else 1.0
    for i, site in enumerate(sites):
        ax.plot(tokens, dead[:, threshold_index, i] * scale, color=cmap(i), label=site, marker=".")
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen (log scale)")
    ax.set_ylabel("dead features (% of width)" if n_features else "dead features")
    t = thresholds[threshold_index]
    ax.set_title("Features that never fired" if t == 0 else f"Features that fired at most {t} times")
    ax.legend(fontsize=8, ncol=2)
    return fig


def plot_coactivation_curves(never, tokens, thresholds, pairs, threshold_index: int = 0,
                             pair_indices=None, total=None, title_suffix: str = ""):
    """Feature pairs that co-fired at most t times against tokens seen, one line per site pair."""
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    chosen = range(len(pairs)) if pair_indices is None else pair_indices
    cmap = plt.get_cmap("plasma", max(len(pairs), 2))
    for p in chosen:
        y = never[threshold_index, p]
        if total is not None:
            y = 100.0 * y / total[p]
        ax.plot(tokens, y, color=cmap(p), label=pairs[p], marker=".")
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen (log scale)")
    ax.set_ylabel("pairs (% of pairs)" if total is not None else "pairs")
    t = thresholds[threshold_index]
    what = "never co-fired" if t == 0 else f"co-fired at most {t} times"
    ax.set_title(f"Cross-layer pairs that {what}{title_suffix}")
    ax.legend(fontsize=8, ncol=2)
    return fig


def plot_value_histograms(matrices, labels, xlabel: str, title: str, bins: int = 60, log: bool = True):
    """Histograms of the finite entries of several matrices (e.g. Pearson r per site pair)."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    cmap = plt.get_cmap("plasma", max(len(matrices), 2))
    edges = None
    for i, (m, label) in enumerate(zip(matrices, labels)):
        v = m[np.isfinite(m)].ravel()
        if edges is None:
            lo = min(float(np.nanmin(x)) if np.isfinite(x).any() else 0.0 for x in matrices)
            hi = max(float(np.nanmax(x)) if np.isfinite(x).any() else 1.0 for x in matrices)
            edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
        ax.hist(v, bins=edges, histtype="step", color=cmap(i), label=label, linewidth=1.3)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("feature pairs" + (" (log scale)" if log else ""))
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    return fig


def plot_fraction_above(matrices, labels, threshold: float, what: str = "Pearson r"):
    """Bar chart: share of the (finite) feature pairs with value >= threshold, per site pair."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    shares = []
    for m in matrices:
        v = m[np.isfinite(m)]
        shares.append(100.0 * (v >= threshold).mean() if v.size else 0.0)
    ax.bar(range(len(labels)), shares, color="tab:purple")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"pairs with {what} >= {threshold:g} (%)")
    ax.set_xlabel("adjacent pair of sites")
    ax.set_title(f"Feature pairs with {what} >= {threshold:g}")
    return fig


def plot_scatter(x, y, xlabel: str, ylabel: str, title: str, c=None, clabel: str | None = None,
                 logx: bool = False, logy: bool = False):
    """A scatter plot with labelled axes (and an optional colour scale)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    points = ax.scatter(x, y, s=6, alpha=0.5, c=c, cmap="viridis" if c is not None else None)
    if c is not None:
        fig.colorbar(points, ax=ax, label=clabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def plot_neighbourhood(graph, node: int, title: str, labels=None):
    """Draw a feature's neighbourhood; edge width grows with the co-activation count."""
    import networkx as nx
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 6), constrained_layout=True)
    pos = nx.spring_layout(graph, seed=0, weight="count")
    counts = np.array([d["count"] for _, _, d in graph.edges(data=True)], dtype=float)
    widths = 0.5 + 3 * counts / counts.max() if counts.size else []
    colours = ["tab:red" if n == node else "tab:blue" for n in graph.nodes]
    nx.draw_networkx_edges(graph, pos, ax=ax, width=widths, alpha=0.4)
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colours, node_size=80)
    nx.draw_networkx_labels(graph, pos, ax=ax, labels=labels or {n: str(n) for n in graph.nodes}, font_size=7)
    ax.set_title(title)
    ax.set_axis_off()
    return fig


def plot_pass_through(flows, sites, title: str = "Features passing through the sites"):
    """An alluvial figure across all sites: each site is two columns of its alive features:
    left, where they come from (continued from the site before / appeared), right, where they
    go (continue / disappear); grey bands join the continuing features of adjacent sites."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    n_sites = len(sites)
    colours = {"continued": "#4c72b0", "appeared": "#55a868", "continues": "#4c72b0", "disappears": "#c44e52"}
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * n_sites), 4.8))
    width, gap = 0.18, 0.02
    ins, outs = [], []
    for s in range(n_sites):
        if s == 0:
            alive = flows[0].continues.sum() + flows[0].disappears.sum()
            ins.append({"continued": 0, "appeared": int(alive)})
        else:
            f = flows[s - 1]
            ins.append({"continued": int(f.continued.sum()), "appeared": int(f.appears.sum())})
        if s == n_sites - 1:
            outs.append({"continues": 0, "disappears": 0})
        else:
            f = flows[s]
            outs.append({"continues": int(f.continues.sum()), "disappears": int(f.disappears.sum())})
    for s in range(n_sites):
        for col, parts, x in ((0, ins[s], s - width - gap / 2), (1, outs[s], s + gap / 2)):
            bottom = 0
            for name, n in parts.items():
                if n:
                    ax.add_patch(Rectangle((x, bottom), width, n, color=colours[name], alpha=0.9, lw=0))
                bottom += n
        if s + 1 < n_sites:  # the band of continuing features to the next site
            top_l, top_r = outs[s]["continues"], ins[s + 1]["continued"]
            ax.add_patch(Polygon([(s + gap / 2 + width, 0), (s + gap / 2 + width, top_l),
                                  (s + 1 - width - gap / 2, top_r), (s + 1 - width - gap / 2, 0)],
                                 closed=True, color="0.75", alpha=0.6, lw=0))
    top = max(sum(p.values()) for p in ins)
    ax.set_xlim(-0.5, n_sites - 0.5)
    ax.set_ylim(0, top * 1.08)
    ax.set_xticks(range(n_sites), sites, rotation=20)
    ax.set_ylabel("alive features")
    ax.set_title(title)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colours["continued"], label="continued / continues"),
                       Patch(color=colours["appeared"], label="appeared (left column)"),
                       Patch(color=colours["disappears"], label="disappears (right column)"),
                       Patch(color="0.75", label="continuing features")],
              loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_community(graph, community, sites, title: str, labels=None):
    """A community of the cross-layer graph drawn with the sites as rows (earliest on top)."""
    import matplotlib.pyplot as plt

    nodes = sorted(community, key=lambda n: (graph.nodes[n]["layer"], graph.nodes[n]["feature"]))
    rows: dict[int, list[str]] = {}
    for n in nodes:
        rows.setdefault(graph.nodes[n]["layer"], []).append(n)
    sub = graph.subgraph(nodes)
    pos = {}
    for layer in sorted(rows):  # barycentre order: each row follows its neighbours in the row above
        def centre(n):
            above = [pos[m][0] for m in sub[n] if m in pos]
            return (np.mean(above) if above else 0.0, graph.nodes[n]["feature"])
        members = sorted(rows[layer], key=centre) if pos else rows[layer]
        for i, n in enumerate(members):
            pos[n] = (i - (len(members) - 1) / 2, -layer)
    fig, ax = plt.subplots(figsize=(8, 0.7 * len(sites) + 1))
    for a, b, d in sub.edges(data=True):
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.plot([x0, x1], [y0, y1], color="0.5", lw=0.5 + 2 * d["weight"], alpha=0.6, zorder=1)
    xs, ys = zip(*(pos[n] for n in nodes))
    freq = np.array([graph.nodes[n]["frequency"] for n in nodes])
    sc = ax.scatter(xs, ys, c=np.log10(np.maximum(freq, 1e-7)), cmap="viridis", s=40, zorder=2)
    if labels:
        for n in nodes:
            if n in labels:
                ax.annotate(labels[n], pos[n], fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_yticks([-i for i in range(len(sites))], sites)
    ax.set_xticks([])
    ax.set_title(title)
    fig.colorbar(sc, ax=ax, label="log10 firing frequency")
    fig.tight_layout()
    return fig


def plot_lifespans(counts, title: str = "Lineage lifespans"):
    """Bar chart of how many lineages span 1, 2, ... sites."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    spans = np.arange(len(counts))[1:]
    ax.bar(spans, counts[1:], color="#4c72b0")
    ax.set_yscale("log")
    ax.set_xlabel("lifespan (consecutive sites)")
    ax.set_ylabel("lineages")
    ax.set_xticks(spans)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_flow_shares(rows, title: str = "Pass-through against the threshold"):
    """Share of alive features that disappear (left) and appear (right) per adjacent pair of
    sites, against the threshold; ``rows`` from :func:`helpers.evolution.lineages.flow_table`."""
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, what in zip(axes, ("disappear", "appear")):
        for pair in pairs:
            pts = [(r["threshold"], r[what]) for r in rows if r["pair"] == pair]
            ax.plot(*zip(*pts), marker="o", ms=3, label=pair)
        ax.set_xlabel("threshold")
        ax.set_title(f"features that {what}")
        ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
    axes[0].set_ylabel("share of alive features")
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_spurious_share(matches, threshold: float):
    """The share of best decoder matches at or above each cosine threshold whose features do
    not fire together (``matches``: :class:`~helpers.evolution.decoder_matches.DecoderMatches`),
    the chosen ``threshold`` marked; a gap where no match is that high."""
    from ..evolution.decoder_matches import SPURIOUS_R

    fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    ts = np.linspace(0.1, 0.95, 18)
    shares = [100 * b / h if h else np.nan for h, b in map(matches.spurious, ts)]
    ax.plot(ts, shares, marker=".")
    ax.axvline(threshold, color="tab:red", linestyle="--")
    ax.set_xlabel("decoder cosine threshold")
    ax.set_ylabel("spurious pairs (%)")
    ax.set_title(f"Share of high-cosine pairs whose features do not fire together (r < {SPURIOUS_R:g})")
    return fig


def plot_community_shapes(sizes: np.ndarray, spans: np.ndarray, title: str):
    """Two histograms of the communities of the cross-layer graph: their sizes (features, log
    bins) and how many sites each spans."""
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].hist(sizes, bins=np.logspace(0, np.log10(max(sizes.max(), 2)), 30), color="#4c72b0")
    ax[0].set(xscale="log", yscale="log", xlabel="community size (features)", ylabel="communities",
              title="Community sizes")
    ax[1].bar(*np.unique(spans, return_counts=True), color="#55a868")
    ax[1].set(xlabel="sites spanned", ylabel="communities", title="How many sites a community spans")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
