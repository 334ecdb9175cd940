"""The co-activation graph within one site, with networkx."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import ConfigError


def build_graph(g: Mapping[str, np.ndarray], site_index: int, min_count: int = 1):
    """``networkx.Graph`` of one site: nodes are features that fired (attribute ``frequency``),
    edges those linked on at least ``min_count`` tokens (attributes ``count``, ``weight``)."""
    import networkx as nx

    if min_count < 1:
        raise ConfigError(f"min_count={min_count} must be >= 1")
    n_sites = g["frequency"].shape[0]
    if not 0 <= site_index < n_sites:
        raise ConfigError(f"site index {site_index} out of range: the graph has {n_sites} sites")
    graph = nx.Graph()
    freq = g["frequency"][site_index]
    for f in np.flatnonzero(freq > 0):
        graph.add_node(int(f), frequency=float(freq[f]))
    mine = (g["edge_site"] == site_index) & (g["edge_count"] >= min_count)
    for a, b, c, w in zip(g["edge_src"][mine], g["edge_dst"][mine], g["edge_count"][mine], g["edge_weight"][mine]):
        graph.add_edge(int(a), int(b), count=int(c), weight=float(w))
    return graph


def degree_frequency(graph) -> tuple[np.ndarray, np.ndarray, float]:
    """Degree and firing frequency of every node, and their Pearson correlation."""
    nodes = list(graph.nodes)
    degree = np.array([graph.degree[n] for n in nodes], dtype=float)
    freq = np.array([graph.nodes[n]["frequency"] for n in nodes], dtype=float)
    r = float(np.corrcoef(degree, freq)[0, 1]) if len(nodes) > 1 and degree.std() > 0 and freq.std() > 0 else float("nan")
    return degree, freq, r


def communities(graph, seed: int = 0) -> list[set[int]]:
    """Louvain communities on the edge counts, largest first."""
    import networkx as nx

    if graph.number_of_edges() == 0:
        return [{n} for n in graph.nodes]
    found = nx.community.louvain_communities(graph, weight="count", seed=seed)
    return sorted(found, key=len, reverse=True)


def neighbourhood(graph, node: int, max_neighbours: int | None = None):
    """``node`` and its neighbours (the ``max_neighbours`` with the largest edge counts),
    with every edge among them."""
    if node not in graph:
        raise ConfigError(f"feature {node} is not in the graph (it never fired or has no edge)")
    neighbours = sorted(graph[node], key=lambda n: (-graph.edges[node, n]["count"], n))
    if max_neighbours is not None:
        neighbours = neighbours[:max_neighbours]
    return graph.subgraph([node, *neighbours]).copy()


def export_graphml(graph, path: str | Path) -> Path:
    """Write GraphML (for Gephi or Cytoscape) atomically."""
    import networkx as nx

    from ..io import atomic_path

    with atomic_path(path, suffix=".graphml") as tmp:
        nx.write_graphml(graph, tmp)
    return Path(path)


def connected_components(graph) -> list[set[int]]:
    """The connected components, largest first."""
    import networkx as nx

    return sorted(nx.connected_components(graph), key=len, reverse=True)


def busiest_feature(graph) -> int:
    """The node of highest degree (the first one met on a tie)."""
    if graph.number_of_nodes() == 0:
        raise ConfigError("the graph has no node: no feature fired at this site")
    return max(graph.degree, key=lambda kv: kv[1])[0]


def site_graph_rows(g: Mapping[str, np.ndarray], sites) -> list[dict]:
    """Per site: the features and edges of its graph, the median degree and the correlation of
    degree with firing frequency (:func:`degree_frequency`)."""
    rows = []
    for i, site in enumerate(sites):
        graph = build_graph(g, i)
        degree, _, r = degree_frequency(graph)
        rows.append({"site": site, "features": graph.number_of_nodes(), "edges": graph.number_of_edges(),
                     "median degree": float(np.median(degree)), "degree-frequency r": r})
    return rows
