"""The cross-layer browser's data: features as nodes (sites as rows), edges between adjacent
sites with every measure, communities, precomputed prompt graphs and searches.

Edges are each feature's top-``k_edges`` partners up and down under each measure (from the
partner tables, :mod:`helpers.evolution.partners`), with the values of every measure and a
bitmask of the measures under which the pair is listed. The page filters them client-side:
an edge shows for measure ``m`` at threshold ``t`` when bit ``m`` is set and its value is
``>= t``, the rule of :func:`helpers.evolution.communities.cross_layer_graph`.

The **causal effect** (``causal_drop``, :mod:`helpers.evolution.measured_edges`) is a measure
of its own where the matching artefact exists: the edges measured by ablation (each matching
method's top-1 upstream partner of ~512 sampled downstream features per pair), with their drop;
an edge that is also a partner-table edge carries both, a measured edge outside the partner
tables is added with the other measures undefined. Few edges are measured, so their values are
stored sparsely: ``graph["causal"]`` holds ``edge`` (edge indices), ``drop`` and ``chosen_by``
(bitmask over ``graph["causal"]["methods"]``); :func:`measure_values` gives any measure as one
dense column. Without the artefact the measure is not offered and ``graph["causal"]["note"]``
says why.

The page opens on its **default view**, chosen here (:func:`strongest_lineages`): the strongest
lineages through the sites, at most :data:`DEFAULT_VIEW_NODES` features, rather than every feature
with an edge (13,645 features and 123,249 edges on the offline preset: a grey mass); the full view
is one click away.

Everything here is plain data (lists and numbers, JSON-ready); :mod:`.browser_site` writes
the page.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..evolution.communities import node_id
from ..evolution.measured_edges import CAUSAL_LABEL, CAUSAL_MEASURE, MeasuredEdges
from ..evolution.measures import MEASURES, MEASURE_RANGES, check_measure, check_threshold

__all__ = ["CAUSAL_MEASURE", "DEFAULT_K_EDGES", "DEFAULT_VIEW_NODES", "add_labels", "browser_graph", "browser_prompt",
           "browser_search", "check_graph_threshold", "feature_labels", "filter_edges", "measure_values",
           "strongest_lineages", "synthetic_graph", "with_default_view"]

DEFAULT_K_EDGES = 8
#: the most features the page's default view shows (:func:`strongest_lineages`)
DEFAULT_VIEW_NODES = 300


def _round(a, digits: int = 3) -> list:
    return [None if not np.isfinite(v) else round(float(v), digits) for v in np.asarray(a, dtype=np.float64)]


def causal_range(drop: np.ndarray) -> list[float]:
    """The threshold range of the causal measure: [-1, 1], widened below to the lowest drop
    measured (an ablation can more than double a feature: drop < -1)."""
    lo = float(np.floor(np.nanmin(drop) * 10) / 10) if np.isfinite(drop).any() else -1.0
    return [min(-1.0, lo), 1.0]


def _merge_measured(a: np.ndarray, b: np.ndarray, mask: np.ndarray, values: np.ndarray, index: np.ndarray,
                    n_nodes: int, measured: MeasuredEdges):
    """The partner edges ``(a, b, mask, values)`` with the measured edges added (bit and column
    ``M``, the last): ``(a, b, mask, values, chosen_by, n_not_drawn)``, sorted by (a, b)."""
    M = values.shape[1]  # partner measures; the drop goes to column M
    x, y = index[measured.pair, measured.a], index[measured.pair + 1, measured.b]
    drawn = (x >= 0) & (y >= 0)  # both ends fired in the corpus (a cosine partner may never have)
    x, y, drop, chosen = x[drawn], y[drawn], measured.drop[drawn], measured.chosen_by[drawn]
    code = a * n_nodes + b
    mcode = x * n_nodes + y
    codes = np.union1d(code, mcode)
    out_a, out_b = codes // n_nodes, codes % n_nodes
    out_mask = np.zeros(len(codes), np.int64)
    out_vals = np.full((len(codes), M + 1), np.nan)
    at = np.searchsorted(codes, code)
    out_mask[at] = mask
    out_vals[at, :M] = values
    at = np.searchsorted(codes, mcode)
    out_mask[at] |= 1 << M
    out_vals[at, M] = drop
    out_chosen = np.zeros(len(codes), np.int64)
    out_chosen[at] = chosen
    return out_a, out_b, out_mask, out_vals, out_chosen, int((~drawn).sum())


def browser_graph(partners: dict, fired: np.ndarray, k_edges: int = DEFAULT_K_EDGES,
                  community_measure: str = "pearson", community_threshold: float = 0.1, seed: int = 0,
                  preset: str = "", measured: MeasuredEdges | None = None, measured_note: str = "",
                  view_nodes: int = DEFAULT_VIEW_NODES) -> dict[str, Any]:
    """Nodes (every feature that fired), edges (top-``k_edges`` partners under each measure, all
    measure values) and Louvain communities of the graph at ``community_measure >=
    community_threshold`` (ids 0, 1, ... largest first; -1 outside any community of 2+), and the
    page's default view: the strongest lineages under the same rule, at most ``view_nodes``
    features (:func:`with_default_view`).

    ``measured`` (:func:`helpers.evolution.measured_edges.load_measured_edges`) adds the measure
    ``causal_drop``: the measured edges whose two ends fired; ``measured_note`` is shown by the
    page (why the measure is missing, or how it was measured)."""
    from ..evolution.communities import cross_layer_graph, layer_communities

    check_threshold(community_measure, community_threshold)
    k_all = int(partners["down_index"].shape[-1])
    if not 1 <= k_edges <= k_all:
        raise ConfigError(f"k_edges={k_edges} must be between 1 and the k={k_all} of the partner tables")
    sites = [str(s) for s in partners["sites"]]
    measures = [str(m) for m in partners["measures"]]
    S, F = fired.shape
    n_tokens = max(int(partners.get("n_tokens", 1)), 1)
    alive = fired > 0
    index = -np.ones((S, F), np.int64)
    layer, feat = np.nonzero(alive)
    index[layer, feat] = np.arange(len(layer))
    edges: dict[tuple[int, int], list] = {}
    for p in range(S - 1):
        for m in range(len(measures)):
            for direction in ("down", "up"):
                idx = partners[f"{direction}_index"][p, m, :, :k_edges]
                vals = partners[f"{direction}_values"][p, m, :, :k_edges]  # [F, k, M]
                src_layer, dst_layer = (p, p + 1) if direction == "down" else (p + 1, p)
                f, slot = np.nonzero((idx >= 0) & alive[src_layer][:, None])
                g = idx[f, slot]
                keep = alive[dst_layer][g]
                f, slot, g = f[keep], slot[keep], g[keep]
                a, b = (index[p, f], index[p + 1, g]) if direction == "down" else (index[p, g], index[p + 1, f])
                for x, y, v in zip(a.tolist(), b.tolist(), vals[f, slot]):
                    e = edges.get((x, y))
                    if e is None:
                        edges[(x, y)] = e = [0, v]
                    e[0] |= 1 << m
    keys = sorted(edges)
    values = np.array([edges[k][1] for k in keys], np.float64).reshape(len(keys), len(measures))
    ea = np.array([k[0] for k in keys], np.int64)
    eb = np.array([k[1] for k in keys], np.int64)
    emask = np.array([edges[k][0] for k in keys], np.int64)
    ranges = {m: list(MEASURE_RANGES[m]) for m in measures}
    causal = {"measure": CAUSAL_MEASURE, "label": CAUSAL_LABEL, "offered": measured is not None,
              "note": measured_note or ("" if measured is not None else "causal effect not measured"),
              "methods": [], "measured": 0, "drawn": 0, "not_drawn": 0, "edge": [], "drop": [], "chosen_by": []}
    dense = list(measures)  # the measures stored as one value per edge
    if measured is not None:
        if list(measured.sites) != sites:
            raise ConfigError(f"the measured edges name the sites {measured.sites}, the partner tables {sites}: "
                              "rebuild the matching results (`python -m helpers matching`)")
        drawn = (index[measured.pair, measured.a] >= 0) & (index[measured.pair + 1, measured.b] >= 0)
        if not drawn.any():  # nothing to draw: the measure is not offered, and the page says why
            causal.update(offered=False, measured=len(measured), not_drawn=len(measured),
                          note=f"causal effect not offered: none of the {len(measured)} measured edges joins two "
                               "features that fired")
            measured = None
    if measured is not None:
        ea, eb, emask, values, chosen, not_drawn = _merge_measured(ea, eb, emask, values, index, len(layer), measured)
        ranges[CAUSAL_MEASURE] = causal_range(measured.drop)
        at = np.flatnonzero((emask >> len(dense)) & 1)  # the measured edges, stored sparsely
        causal.update(methods=list(measured.methods), measured=len(measured), drawn=len(measured) - not_drawn,
                      not_drawn=not_drawn, edge=at.tolist(), drop=_round(values[at, -1]),
                      chosen_by=chosen[at].tolist())
        values = values[:, :-1]
        measures = measures + [CAUSAL_MEASURE]
    graph = cross_layer_graph(partners, fired, community_measure, community_threshold)
    community = -np.ones(len(layer), np.int64)
    found = []
    if graph.number_of_edges():
        for members in layer_communities(graph, seed=seed):
            # the browser draws features that fired: a never-fired partner is left out
            ids = [int(index[graph.nodes[n]["layer"], graph.nodes[n]["feature"]]) for n in members]
            ids = [i for i in ids if i >= 0]
            if len(ids) < 2:
                continue
            c = len(found)
            community[ids] = c
            span = np.bincount(layer[ids], minlength=S)
            found.append({"id": c, "size": len(ids), "sites": int((span > 0).sum()), "per_site": span.tolist()})
        order = sorted(range(len(found)), key=lambda c: -found[c]["size"])  # largest first after the filter
        remap = np.array(order).argsort()
        community = np.where(community >= 0, remap[np.maximum(community, 0)], -1)
        found = [dict(found[c], id=i) for i, c in enumerate(order)]
    out = {
        "preset": preset, "sites": sites, "measures": measures, "labels": {CAUSAL_MEASURE: CAUSAL_LABEL},
        "ranges": ranges, "k_edges": k_edges,
        "community_rule": {"measure": community_measure, "threshold": float(community_threshold)},
        "nodes": {"layer": layer.tolist(), "feature": feat.tolist(),
                  "frequency": _round(fired[layer, feat] / n_tokens, 6), "community": community.tolist()},
        "edges": {"a": ea.tolist(), "b": eb.tolist(), "mask": emask.tolist(),
                  "values": {m: _round(values[:, i]) for i, m in enumerate(dense)}},
        "communities": found, "causal": causal,
    }
    return with_default_view(out, community_measure, community_threshold, view_nodes)


def strongest_lineages(graph: dict, measure: str = "pearson", threshold: float = 0.1,
                       max_nodes: int = DEFAULT_VIEW_NODES) -> dict[str, Any]:
    """The strongest lineages of ``graph``, at most ``max_nodes`` features in all.

    A lineage follows each feature's best partner in the next site under ``measure`` (its
    strongest edge ``>= threshold`` in the graph; ties: the lower node), from a feature no other
    reaches, as :mod:`helpers.evolution.lineages` chains them. Lineages are ranked longest
    first, then by their weakest link (highest first), then by where they start, and taken
    in that order while they fit in ``max_nodes``; one that merges into a lineage already
    taken is left out, so the lineages shown are disjoint (each drawn as one column). A
    lineage has at least two features.

    Why this view: the question of the book is how features evolve across layers, and a
    lineage is that question's unit, read top to bottom; the strongest ones are the clearest
    examples, and a few hundred features spread over every site stay legible, where the
    full graph (every feature with an edge) is a grey mass.

    Returns ``{"nodes": sorted node indices, "chains": [[node indices, top to bottom]],
    "measure", "threshold", "max_nodes", "weakest": [the weakest link of each chain]}``."""
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, (int, np.integer)) or max_nodes < 2:
        raise ConfigError(f"max_nodes={max_nodes!r}: the default view needs room for a lineage, at least 2 features")
    threshold = check_graph_threshold(graph, measure, threshold)
    vals = measure_values(graph, measure)
    layer = np.asarray(graph["nodes"]["layer"], np.int64)
    a, b = np.asarray(graph["edges"]["a"], np.int64), np.asarray(graph["edges"]["b"], np.int64)
    bit = (np.asarray(graph["edges"]["mask"], np.int64) >> graph["measures"].index(measure)) & 1
    with np.errstate(invalid="ignore"):
        keep = bit.astype(bool) & (vals >= threshold) & (layer[b] == layer[a] + 1)
    a, b, v = a[keep], b[keep], vals[keep]
    order = np.lexsort((b, -v, a))  # per upper feature: the strongest edge first, then the lower node
    a, b, v = a[order], b[order], v[order]
    first = np.r_[True, a[1:] != a[:-1]] if len(a) else np.zeros(0, bool)
    n = len(layer)
    nxt, link = -np.ones(n, np.int64), np.full(n, np.inf)
    nxt[a[first]], link[a[first]] = b[first], v[first]
    span, weakest = np.ones(n, np.int64), np.full(n, np.inf)
    for s in range(int(layer.max(initial=0)) - 1, -1, -1):  # back to front, a site at a time
        i = np.flatnonzero((layer == s) & (nxt >= 0))
        span[i], weakest[i] = 1 + span[nxt[i]], np.minimum(link[i], weakest[nxt[i]])
    reached = np.zeros(n, bool)
    reached[nxt[nxt >= 0]] = True
    starts = np.flatnonzero((nxt >= 0) & ~reached)
    chosen: set[int] = set()
    chains, weak = [], []
    for s in starts[np.lexsort((starts, -weakest[starts], -span[starts]))].tolist():
        chain = [s]
        while nxt[chain[-1]] >= 0:
            chain.append(int(nxt[chain[-1]]))
        if chosen.intersection(chain):  # merges into a stronger lineage
            continue
        if len(chosen) + len(chain) > max_nodes:
            break
        chosen.update(chain)
        chains.append(chain)
        weak.append(round(float(weakest[s]), 3))
    return {"nodes": sorted(chosen), "chains": chains, "weakest": weak, "measure": measure,
            "threshold": float(threshold), "max_nodes": int(max_nodes)}


def with_default_view(graph: dict, measure: str = "pearson", threshold: float = 0.1,
                      max_nodes: int = DEFAULT_VIEW_NODES) -> dict:
    """``graph`` with ``lineages`` (:func:`strongest_lineages`) and ``default_view``, the view
    the page opens on: ``"lineages"``, or ``"all"`` where no lineage passes the threshold."""
    graph["lineages"] = strongest_lineages(graph, measure, threshold, max_nodes)
    graph["default_view"] = "lineages" if graph["lineages"]["nodes"] else "all"
    return graph


def feature_labels(top: dict, documents, tokenizer, n: int = 2) -> list[list[str]]:
    """``[S][F]`` short labels: the most frequent tokens of each feature's highest examples (the
    label of :func:`.examples.top_tokens`), with every document tokenized once."""
    from collections import Counter

    from ..subject.corpus import tokenize_documents
    from ..subject.token_text import decoded, visible

    doc_ids = {d.doc_id: ids for d, ids in tokenize_documents(list(documents), tokenizer)}
    cache: dict[int, str] = {}

    def word(t: int) -> str:
        if t not in cache:
            cache[t] = visible(decoded(tokenizer, t))
        return cache[t]

    docs, pos = top["hi_doc"], top["hi_pos"]
    out = []
    for s in range(docs.shape[0]):
        row = []
        for f in range(docs.shape[1]):
            words = [word(doc_ids[int(d)][int(p)]) for d, p in zip(docs[s, f], pos[s, f])
                     if d >= 0 and int(d) in doc_ids and 0 <= p < len(doc_ids[int(d)])]
            row.append(", ".join(w for w, _ in Counter(words).most_common(n)))
        out.append(row)
    return out


def add_labels(graph: dict, labels: list[list[str]]) -> dict:
    """``graph`` with ``nodes.label`` from ``[S][F]`` labels (see :func:`feature_labels`)."""
    graph["nodes"]["label"] = [labels[la][f] for la, f in zip(graph["nodes"]["layer"], graph["nodes"]["feature"])]
    return graph


def check_graph_threshold(graph: dict, measure: str, threshold: float) -> float:
    """``threshold`` if ``measure`` is offered by ``graph`` and the threshold lies in its range,
    else a one-line ConfigError saying what to do."""
    if measure == CAUSAL_MEASURE and measure not in graph["measures"]:
        note = graph.get("causal", {}).get("note") or "no matching results"
        raise ConfigError(f"the causal effect is not offered by this graph ({note})")
    if measure in MEASURES:
        check_measure(measure)
        if measure in graph["measures"]:
            return check_threshold(measure, threshold)
    if measure not in graph["measures"]:
        raise ConfigError(f"unknown measure {measure!r}: choose one of {list(graph['measures'])}")
    lo, hi = graph["ranges"][measure]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) \
            or not lo <= float(threshold) <= hi:
        raise ConfigError(f"threshold {threshold!r} for {measure} is outside its range [{lo:g}, {hi:g}]: "
                          "pick a value in it")
    return float(threshold)


def measure_values(graph: dict, measure: str) -> np.ndarray:
    """``[E]`` float64: the value of ``measure`` on every edge of ``graph`` (NaN: undefined, or
    for the causal measure not measured)."""
    if measure == CAUSAL_MEASURE and measure in graph["measures"]:
        out = np.full(len(graph["edges"]["a"]), np.nan)
        c = graph["causal"]
        out[np.asarray(c["edge"], np.int64)] = np.array([np.nan if v is None else v for v in c["drop"]], np.float64)
        return out
    if measure not in graph["edges"]["values"]:
        check_graph_threshold(graph, measure, 0.0)  # the error that says why
    return np.array([np.nan if v is None else v for v in graph["edges"]["values"][measure]], np.float64)


def filter_edges(graph: dict, measure: str, threshold: float) -> np.ndarray:
    """Indices of the edges the page shows for ``measure`` at ``threshold`` (the page's rule)."""
    check_graph_threshold(graph, measure, threshold)
    m = graph["measures"].index(measure)
    mask = np.array(graph["edges"]["mask"], np.int64)
    vals = measure_values(graph, measure)
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(((mask >> m) & 1).astype(bool) & (vals >= threshold))


def _node_lookup(graph: dict) -> dict[str, int]:
    sites = graph["sites"]
    return {node_id(sites[la], f): i for i, (la, f) in enumerate(zip(graph["nodes"]["layer"], graph["nodes"]["feature"]))}


def browser_prompt(graph: dict, prompt_graph: dict, name: str | None = None) -> dict[str, Any]:
    """A prompt graph (:func:`.search.prompt_graph`) as the page reads it: its tokens and, per
    node of the browser graph, the activation on each token. Features that never fired in the
    corpus (not browser nodes) are counted in ``missing``."""
    lookup = _node_lookup(graph)
    nodes, acts, missing = [], [], 0
    for n in prompt_graph["nodes"]:
        i = lookup.get(n["id"])
        if i is None:
            missing += 1
            continue
        nodes.append(i)
        acts.append(n["acts"])
    return {"name": name or prompt_graph["prompt"][:60], "prompt": prompt_graph["prompt"],
            "tokens": prompt_graph["tokens"], "nodes": nodes, "acts": acts, "missing": missing}


def browser_search(graph: dict, result, name: str | None = None, limit: int = 200) -> dict[str, Any]:
    """A search result (:class:`.search.SearchResult`) as the page reads it: matched nodes with
    their margins, best first (at most ``limit``), or the closest candidates when none matched."""
    lookup = _node_lookup(graph)
    rows = result.rows if result.found else result.candidates
    keep = [r for r in rows if node_id(r["site"], r["feature"]) in lookup][:limit]
    return {"name": name or " & ".join(result.positives)[:60], "positives": result.positives,
            "negatives": result.negatives, "threshold": result.threshold, "found": result.found,
            "message": result.message(), "nodes": [lookup[node_id(r["site"], r["feature"])] for r in keep],
            "margins": [round(r["margin"], 4) for r in keep]}


def synthetic_graph(n_nodes: int = 2000, n_edges: int = 20000, n_sites: int = 7, seed: int = 0,
                    measures: Sequence[str] = MEASURES, causal_share: float = 0.1) -> dict[str, Any]:
    """A random graph in the page's format, for measuring the page (2,000 nodes, 20,000 edges);
    a share ``causal_share`` of the edges carries a measured causal drop (0: not offered)."""
    rng = np.random.default_rng(seed)
    layer = np.sort(np.arange(n_nodes) % n_sites)
    sizes = np.bincount(layer, minlength=n_sites)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    feat = np.arange(n_nodes) - starts[layer]
    draw = 2 * n_edges  # some draws repeat a pair: draw more, keep the first n_edges distinct
    src_layer = rng.integers(0, n_sites - 1, draw)
    a = starts[src_layer] + (rng.random(draw) * sizes[src_layer]).astype(np.int64)
    b = starts[src_layer + 1] + (rng.random(draw) * sizes[src_layer + 1]).astype(np.int64)
    pairs = sorted(list(dict.fromkeys(zip(a.tolist(), b.tolist())))[:n_edges])
    E = len(pairs)
    values = {m: _round(rng.uniform(*MEASURE_RANGES[m], E)) for m in measures}
    ranges = {m: list(MEASURE_RANGES[m]) for m in measures}
    mask = np.full(E, (1 << len(measures)) - 1, np.int64)
    measures = list(measures)
    methods = ["cosine", "pearson", "jaccard", "necessity", "sufficiency", "random"]
    hit = np.flatnonzero(rng.random(E) < causal_share)
    if causal_share > 0:
        mask[hit] |= 1 << len(measures)
        measures.append(CAUSAL_MEASURE)
        ranges[CAUSAL_MEASURE] = [-1.0, 1.0]
    n_comm = 40
    return with_default_view({
        "preset": "synthetic", "sites": [f"site.{i}" for i in range(n_sites)], "measures": measures,
        "labels": {CAUSAL_MEASURE: CAUSAL_LABEL}, "ranges": ranges, "k_edges": 0,
        "community_rule": {"measure": "pearson", "threshold": 0.1},
        "nodes": {"layer": layer.tolist(), "feature": feat.tolist(), "frequency": [0.01] * len(layer),
                  "community": rng.integers(-1, n_comm, len(layer)).tolist()},
        "edges": {"a": [p[0] for p in pairs], "b": [p[1] for p in pairs], "mask": mask.tolist(), "values": values},
        "communities": [{"id": c, "size": 0, "sites": n_sites, "per_site": []} for c in range(n_comm)],
        "causal": {"measure": CAUSAL_MEASURE, "label": CAUSAL_LABEL, "offered": causal_share > 0,
                   "note": "synthetic drops" if causal_share > 0 else "causal effect not measured (synthetic graph)",
                   "methods": methods if causal_share > 0 else [], "measured": len(hit), "drawn": len(hit),
                   "not_drawn": 0, "edge": hit.tolist(), "drop": _round(rng.uniform(-0.3, 1.0, len(hit))),
                   "chosen_by": rng.integers(1, 1 << len(methods), len(hit)).tolist()},
    })
