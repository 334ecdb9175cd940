"""What notebook 12 shows of a prompt search and a prompt graph: an HTML table with links to
the feature explorer, a widget that runs a search in the kernel, and two figures."""

from __future__ import annotations

import html
from typing import Any, Callable
from urllib.parse import quote

import numpy as np

__all__ = ["browser_link", "explorer_link", "feature_cell", "found_links_frame", "plot_drops",
           "plot_prompt_continuity", "plot_token_graph", "prompt_drops_frame", "search_table", "search_widget",
           "strongest_edges_frame"]


def explorer_link(site: str, feature: int, base: str = "../explorer.html") -> str:
    """The feature's page in the explorer, from a notebook page of the built book (the URL format
    of ``helpers.explore.links.feature_link``)."""
    return f"{base}#site={quote(site)}&feature={int(feature)}"


def browser_link(view: str = "all", measure: str = "pearson", threshold: float = 0.1,
                 base: str = "../browser.html") -> str:
    """A view of the cross-layer browser: ``all``, ``community:<i>``, ``prompt:<i>``, ``search:<i>``."""
    return f"{base}#view={quote(view)}&measure={measure}&threshold={threshold:g}"


def feature_cell(site: str, feature: int, labels: Callable[[str, int], str]) -> str:
    """A feature as a table cell: ``site #feature`` linked to its explorer page, then its label."""
    return f'<a href="{explorer_link(site, feature)}">{site} #{feature}</a> {labels(site, feature)}'


def found_links_frame(graph: dict, links, labels: Callable[[str, int], str]):
    """The links among a search's found features
    (:class:`~helpers.explore.found_links.FoundLinks`), strongest first: both ends linked to
    their pages, the measure's value and the measured causal drop (a dash where not measured)."""
    import pandas as pd

    from ..explore.found_links import node_feature

    ea, eb = graph["edges"]["a"], graph["edges"]["b"]
    rows = [{"upstream": feature_cell(*node_feature(graph, ea[i]), labels),
             "downstream": feature_cell(*node_feature(graph, eb[i]), labels),
             "pearson r": f"{value:.2f}", "causal drop": "–" if drop is None else f"{drop:.3f}"}
            for i, value, drop in zip(links.edges, links.values, links.drops)]
    return pd.DataFrame(rows)


def prompt_drops_frame(names: list[str], graphs: list[dict], drops: list[np.ndarray], edge_rule: str,
                       threshold: float):
    """Per prompt graph (index: its name): active features, edges (``edges (<edge_rule>)``), the
    edges measured by ablation (``drops``: their drops), their median drop and how many reach
    ``threshold``."""
    import pandas as pd

    return pd.DataFrame({
        "active features": [len(g["nodes"]) for g in graphs],
        f"edges ({edge_rule})": [len(g["edges"]) for g in graphs],
        "edges measured by ablation": [len(d) for d in drops],
        "median drop of those": [f"{np.median(d):.3f}" if len(d) else "–" for d in drops],
        f"drop >= {threshold:g}": [int((d >= threshold).sum()) for d in drops],
    }, index=names)


def strongest_edges_frame(measured, labels: Callable[[str, int], str], min_support: int = 5, n: int = 10):
    """The ``n`` strongest measured edges with ``min_support`` firing tokens
    (:meth:`~helpers.evolution.measured_edges.MeasuredEdges.strongest`), both ends linked to
    their pages, the drop to three decimals."""
    strong = measured.strongest(min_support, n)
    return strong.assign(
        upstream=[feature_cell(s, a, labels) for s, a in zip(strong.site_a, strong.a)],
        downstream=[feature_cell(s, b, labels) for s, b in zip(strong.site_b, strong.b)],
        drop=strong["drop"].map("{:.3f}".format))[["upstream", "downstream", "drop", "chosen_by", "n_firing"]]


def search_table(result, n: int = 15, labels: Callable[[str, int], str] | None = None) -> str:
    """The result's one-line summary, then its best ``n`` features (or the closest candidates)."""
    rows = result.rows if result.found else result.candidates
    head = "".join(f"<th>{h}</th>" for h in ("", "site", "feature", "margin", "lowest positive max",
                                             "highest negative max") + (("top tokens",) if labels else ()))
    body = []
    for i, r in enumerate(rows[:n], 1):
        link = f'<a href="{html.escape(explorer_link(r["site"], r["feature"]))}">#{r["feature"]}</a>'
        cells = [str(i), html.escape(r["site"]), link, f"{r['margin']:+.3f}", f"{r['lowest_positive']:.3f}",
                 f"{r['highest_negative']:.3f}"]
        if labels:
            cells.append(html.escape(labels(r["site"], r["feature"])))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    more = f"<p>... and {len(rows) - n} more</p>" if len(rows) > n else ""
    notes = "".join(f"<p><em>{html.escape(x)}</em></p>" for x in result.notes)
    return (f"<p><b>{html.escape(result.message())}</b></p>{notes}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}")


def search_widget(run: Callable[[list[str], list[str], float], Any], positives=(), negatives=(), threshold=0.0):
    """Text boxes (one prompt a line) and a button; ``run(positives, negatives, threshold)``
    returns a SearchResult, shown as :func:`search_table` (a bad input shows its one line)."""
    import ipywidgets as widgets
    from IPython.display import HTML, display

    from ..errors import ConfigError

    pos = widgets.Textarea("\n".join(positives), description="all of", layout=widgets.Layout(width="95%", height="80px"))
    neg = widgets.Textarea("\n".join(negatives), description="none of", layout=widgets.Layout(width="95%", height="60px"))
    thr = widgets.FloatText(threshold, description="threshold")
    button = widgets.Button(description="search")
    out = widgets.Output()

    def go(_):
        with out:
            out.clear_output()
            lines = lambda w: [x for x in w.value.splitlines() if x.strip()]  # noqa: E731
            try:
                display(HTML(search_table(run(lines(pos), lines(neg), thr.value))))
            except ConfigError as exc:
                display(HTML(f"<p><b>error:</b> {html.escape(str(exc))}</p>"))

    button.on_click(go)
    return widgets.VBox([pos, neg, widgets.HBox([thr, button]), out])


def plot_token_graph(sub: dict, title: str, labels: Callable[[str, int], str] | None = None, max_per_site: int = 16,
                     drops: dict[tuple[str, str], float] | None = None):
    """One token's active features (sites as rows, the ``max_per_site`` most active of each site),
    edges of the prompt graph between them; rows ordered by barycentre to keep lineages vertical.

    ``drops`` ``{(source id, target id): drop}``: the edges whose causal effect was measured,
    drawn in red (wider for a larger drop) and labelled with the drop."""
    import matplotlib.pyplot as plt

    sites = sub["sites"]
    rows: dict[int, list[dict]] = {}
    for n in sorted(sub["nodes"], key=lambda n: -n["activation"]):
        if len(rows.setdefault(n["layer"], [])) < max_per_site:
            rows[n["layer"]].append(n)
    keep = {n["id"]: n for r in rows.values() for n in r}
    edges = [e for e in sub["edges"] if e["source"] in keep and e["target"] in keep]
    nb: dict[str, list[str]] = {}
    for e in edges:
        nb.setdefault(e["target"], []).append(e["source"])
    pos: dict[str, tuple[float, float]] = {}
    for layer in sorted(rows):
        def centre(n):
            above = [pos[m][0] for m in nb.get(n["id"], []) if m in pos]
            return (np.mean(above) if above else 1e9, n["feature"])
        members = sorted(rows[layer], key=centre)
        for i, n in enumerate(members):
            pos[n["id"]] = (i - (len(members) - 1) / 2, -layer)
    fig, ax = plt.subplots(figsize=(11, 0.8 * len(sites) + 1.2))
    drops = drops or {}
    n_measured = 0
    for e in edges:
        (x0, y0), (x1, y1) = pos[e["source"]], pos[e["target"]]
        ax.plot([x0, x1], [y0, y1], color="0.4", lw=0.5 + 2.5 * max(e["value"], 0), alpha=0.6, zorder=1)
    for e in edges:
        d = drops.get((e["source"], e["target"]))
        if d is None:
            continue
        (x0, y0), (x1, y1) = pos[e["source"]], pos[e["target"]]
        ax.plot([x0, x1], [y0, y1], color="tab:red", lw=1 + 3 * min(max(d, 0), 1), alpha=0.85, zorder=1.5,
                label=None if n_measured else "causal drop measured (label: drop)")
        ax.annotate(f"{d:.2f}", ((x0 + x1) / 2, (y0 + y1) / 2), fontsize=6, color="tab:red", ha="center",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8), zorder=3)
        n_measured += 1
    ids = list(keep)
    xs, ys = zip(*(pos[i] for i in ids))
    acts = np.array([keep[i]["activation"] for i in ids])
    sc = ax.scatter(xs, ys, c=acts, cmap="magma_r", s=60, zorder=2, edgecolors="0.3", linewidths=0.4)
    for i in ids:
        n = keep[i]
        text = f"{n['feature']}" + (f" {labels(n['site'], n['feature'])}" if labels else "")
        ax.annotate(text, pos[i], fontsize=6, xytext=(0, 5), textcoords="offset points", ha="center", rotation=30)
    ax.set_yticks([-i for i in range(len(sites))], sites)
    ax.set_xticks([])
    ax.set_title(title)
    if n_measured:
        ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    fig.colorbar(sc, ax=ax, label="activation on the token", fraction=0.03)
    fig.tight_layout()
    return fig


def plot_prompt_continuity(share: np.ndarray, tokens: list[str], pairs: list[str], title: str):
    """Heatmap ``[T, S-1]``: per token, the share of features at site L linked to one active at L+1."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(min(2 + 0.45 * len(tokens), 14), 0.45 * len(pairs) + 1.5))
    im = ax.imshow(share.T, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(tokens)), tokens, rotation=60, fontsize=8)
    ax.set_yticks(range(len(pairs)), pairs, fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="share linked to the next site")
    fig.tight_layout()
    return fig


def plot_drops(groups: dict[str, np.ndarray], threshold: float, title: str, bins: int = 44):
    """Histograms (counts on a log scale) of measured causal drops, one outline per group, with
    the success threshold of notebook 11 marked."""
    import matplotlib.pyplot as plt

    values = [np.asarray(v, dtype=np.float64) for v in groups.values()]
    lo = min([-0.1] + [float(v.min()) for v in values if v.size])
    edges = np.linspace(np.floor(lo * 10) / 10, 1.0, bins + 1)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for (name, v), colour in zip(groups.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        if len(v):
            ax.hist(v, bins=edges, histtype="step", lw=1.6, color=colour, label=f"{name} ({len(v):,})")
    ax.axvline(threshold, color="0.3", ls="--", lw=1)
    ax.annotate(f"drop = {threshold:g}", (threshold, 0), xycoords=("data", "axes fraction"), xytext=(4, 4),
                textcoords="offset points", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("measured drop of the downstream feature when the upstream one is ablated")
    ax.set_ylabel("edges")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
