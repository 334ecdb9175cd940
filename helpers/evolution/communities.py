"""One graph across all sites: features linked when a measure passes a threshold, and its
communities (Louvain, networkx).

Edges come from the partner tables (each feature's top-``k`` partners up and down under the
measure), so a feature with more than ``k`` partners above the threshold keeps its ``k``
strongest: at the reference study's 0.1 on Pearson this is rarely binding (the notebook
counts the features where it is).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .measures import check_threshold
from .partners import measure_index


def node_id(site: str, feature: int) -> str:
    return f"{site}:{int(feature)}"


def cross_layer_graph(partners: dict, fired: np.ndarray, measure: str = "pearson", threshold: float = 0.1):
    """``networkx.Graph`` over (site, feature) nodes (attributes ``site``, ``layer``, ``feature``,
    ``frequency``), edges between adjacent sites whose ``measure >= threshold`` (``weight``)."""
    import networkx as nx

    check_threshold(measure, threshold)
    m = measure_index(measure)
    sites = list(partners["sites"])
    n_tokens = max(int(partners.get("n_tokens", 1)), 1)
    graph = nx.Graph(measure=measure, threshold=float(threshold))
    for p in range(len(partners["pairs"])):
        for direction, src_site, dst_site in (("down", p, p + 1), ("up", p + 1, p)):
            idx = partners[f"{direction}_index"][p, m]
            val = partners[f"{direction}_values"][p, m, :, :, m]
            with np.errstate(invalid="ignore"):
                ok = (idx >= 0) & (val >= threshold) & (fired[src_site] > 0)[:, None]
            src, slot = np.nonzero(ok)
            for f, g, w in zip(src, idx[src, slot], val[src, slot]):
                a, b = (src_site, int(f)), (dst_site, int(g))
                for layer, feat in (a, b):
                    key = node_id(sites[layer], feat)
                    if key not in graph:
                        graph.add_node(key, site=sites[layer], layer=layer, feature=feat,
                                       frequency=float(fired[layer, feat] / n_tokens))
                graph.add_edge(node_id(sites[a[0]], a[1]), node_id(sites[b[0]], b[1]), weight=float(w))
    return graph


def saturated_features(partners: dict, measure: str, threshold: float) -> int:
    """Features whose every listed partner passes the threshold: they may have more than ``k``."""
    m = measure_index(measure)
    total = 0
    for direction in ("down", "up"):
        val = partners[f"{direction}_values"][:, m, :, -1, m]
        with np.errstate(invalid="ignore"):
            total += int((val >= threshold).sum())
    return total


def layer_communities(graph, seed: int = 0, resolution: float = 1.0) -> list[set[str]]:
    """Louvain communities on the edge weights, largest first."""
    import networkx as nx

    if graph.number_of_nodes() == 0:
        raise ConfigError("the graph has no edges at this threshold: lower the threshold")
    found = nx.community.louvain_communities(graph, weight="weight", seed=seed, resolution=resolution)
    return sorted(found, key=lambda c: (-len(c), min(c)))


def community_layers(graph, community) -> np.ndarray:
    """How many of the community's features sit at each site: ``[S]``."""
    layers = [graph.nodes[n]["layer"] for n in community]
    n_sites = 1 + max(d["layer"] for _, d in graph.nodes(data=True))
    return np.bincount(layers, minlength=n_sites)


def community_shapes(graph, communities) -> tuple[np.ndarray, np.ndarray]:
    """``(sizes, spans)`` of the communities: their features, and the sites they reach."""
    sizes = np.array([len(c) for c in communities])
    spans = np.array([int((community_layers(graph, c) > 0).sum()) for c in communities])
    return sizes, spans


def readable_communities(sizes: np.ndarray, spans: np.ndarray, n: int = 2, smallest: int = 4,
                         largest: int = 40) -> list[int]:
    """Indices of ``n`` communities small enough to draw and read: of ``smallest``-``largest``
    features, those spanning the most sites first (then the larger); failing that, the smallest
    of the larger ones."""
    fits = [i for i in range(len(sizes)) if sizes[i] >= smallest]
    key = lambda i: (sizes[i] > largest, -spans[i], sizes[i] if sizes[i] > largest else -sizes[i])  # noqa: E731
    return sorted(fits, key=key)[:n]


def export_cross_layer_graphml(graph, path: str | Path) -> Path:
    from .graph import export_graphml

    return export_graphml(graph, path)
