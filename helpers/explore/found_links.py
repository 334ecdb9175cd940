"""Links among the features a search found or a prompt lights up, in the browser graph
(:func:`.browser.browser_graph`), with the causal drop where the matching pass measured it.

:func:`found_links`: which found features of adjacent sites the graph links at a measure's
threshold, and the longest chain of them site to site (a topic carried through the layers).
:func:`measured_drops`: the measured drop of each edge of a prompt graph
(:func:`.search.prompt_graph`), where that very edge was ablated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..evolution.measured_edges import CAUSAL_MEASURE
from .browser import filter_edges, measure_values


def node_feature(graph: dict, node: int) -> tuple[str, int]:
    """``(site, feature)`` of a node of the browser graph."""
    return graph["sites"][graph["nodes"]["layer"][node]], graph["nodes"]["feature"][node]


@dataclass(frozen=True)
class FoundLinks:
    """The links among a search's found features (edge indices of the browser graph)."""

    nodes: set[int]  # the found features that are nodes of the graph
    edges: list[int]  # edges between two found features at the threshold, strongest first
    values: list[float]  # the measure's value on each of them
    drops: list[float | None]  # their measured causal drop (None: not measured)
    linked: set[int]  # found features with a found partner at an adjacent site
    longest: list[int]  # the longest chain of linked found features, site by site

    @property
    def measured(self) -> int:
        """How many of the links were measured by ablation."""
        return sum(d is not None for d in self.drops)


def found_links(graph: dict, result, measure: str = "pearson", threshold: float = 0.1) -> FoundLinks:
    """The links of the browser ``graph`` at ``measure >= threshold`` whose two ends were both
    found by the search ``result`` (:class:`.search.SearchResult`)."""
    layer, feature = graph["nodes"]["layer"], graph["nodes"]["feature"]
    node_of = {(graph["sites"][la], f): i for i, (la, f) in enumerate(zip(layer, feature))}
    found = {node_of[k] for k in result.features() if k in node_of}
    ea, eb = np.array(graph["edges"]["a"]), np.array(graph["edges"]["b"])
    linked = [i for i in filter_edges(graph, measure, threshold) if ea[i] in found and eb[i] in found]
    values = measure_values(graph, measure)
    causal = measure_values(graph, CAUSAL_MEASURE) if CAUSAL_MEASURE in graph["measures"] else None
    edges = sorted(linked, key=lambda i: -values[i])
    drops = [None if causal is None or np.isnan(causal[i]) else causal[i] for i in edges]
    into: dict[int, list[int]] = {}
    for i in linked:
        into.setdefault(eb[i], []).append(ea[i])
    chain: dict[int, list[int]] = {}  # the longest chain of linked found features ending at each
    for n in sorted(found, key=lambda n: layer[n]):
        chain[n] = max((chain[m] for m in into.get(n, []) if m in chain), key=len, default=[]) + [n]
    return FoundLinks(found, [int(i) for i in edges], [values[i] for i in edges], drops,
                      {n for i in linked for n in (ea[i], eb[i])}, max(chain.values(), key=len, default=[]))


def measured_drops(edges: Sequence[dict], measured) -> list[float | None]:
    """The measured drop of each prompt-graph edge (``source``/``target`` node ids
    ``site:feature``), None where it was not measured (or ``measured`` is None)."""
    lookup = measured.lookup() if measured is not None else {}
    out = []
    for e in edges:
        (sa, fa), (sb, fb) = e["source"].rsplit(":", 1), e["target"].rsplit(":", 1)
        i = lookup.get((sa, int(fa), sb, int(fb)))
        out.append(None if i is None else float(measured.drop[i]))
    return out


def measured_in(edges: Sequence[dict], measured) -> np.ndarray:
    """The drops of the edges that were measured (:func:`measured_drops` without the Nones)."""
    return np.array([d for d in measured_drops(edges, measured) if d is not None])
