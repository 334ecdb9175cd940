import numpy as np
import pytest

from helpers.evolution.measured_edges import measured_edges
from helpers.explore.browser import browser_graph, measure_values
from helpers.explore.found_links import found_links, measured_drops, measured_in, node_feature
from helpers.explore.search import SearchResult

from .test_search import fake_partners

SITES = ["s.0", "s.1", "s.2", "s.3"]


@pytest.fixture(scope="module")
def graph():
    partners = fake_partners(SITES, 12, k=4, seed=5)
    fired = np.ones((len(SITES), 12), np.int64)
    fired[1, 0] = 0  # never fired: not a node
    return browser_graph(partners, fired, k_edges=4, community_threshold=0.5)


def result_of(features):
    rows = [{"site": s, "layer": SITES.index(s), "feature": f, "margin": 1.0, "lowest_positive": 1.0,
             "highest_negative": 0.0} for s, f in features]
    return SearchResult(["p"], [], 0.0, rows, [])


def longest_chain_brute(pairs_linked, nodes, layer):
    """Length of the longest run of found features linked site to site (depth-first)."""
    nxt = {}
    for a, b in pairs_linked:
        nxt.setdefault(a, []).append(b)

    def depth(n):
        return 1 + max((depth(m) for m in nxt.get(n, [])), default=0)

    return max((depth(n) for n in nodes), default=0)


@pytest.mark.parametrize("threshold", [0.3, 0.6])
def test_found_links_equal_a_brute_force(graph, threshold):
    rng = np.random.default_rng(2)
    features = {(s, int(f)) for s in SITES for f in rng.choice(12, 7, replace=False)} | {("s.1", 0)}
    links = found_links(graph, result_of(features), "pearson", threshold)
    node_of = {node_feature(graph, i): i for i in range(len(graph["nodes"]["layer"]))}
    nodes = {node_of[k] for k in features if k in node_of}
    assert links.nodes == nodes and ("s.1", 0) not in node_of  # the never-fired feature is no node
    values = measure_values(graph, "pearson")
    ea, eb = graph["edges"]["a"], graph["edges"]["b"]
    mask = np.array(graph["edges"]["mask"]) & 1 << graph["measures"].index("pearson")
    brute = [i for i in range(len(ea)) if mask[i] and values[i] >= threshold and ea[i] in nodes and eb[i] in nodes]
    assert sorted(links.edges) == brute and len(brute) > 0
    assert links.values == sorted(links.values, reverse=True) and links.drops == [None] * len(brute)
    assert links.linked == {n for i in brute for n in (ea[i], eb[i])} and links.measured == 0
    layer = graph["nodes"]["layer"]
    chain = links.longest
    assert len(chain) == longest_chain_brute([(ea[i], eb[i]) for i in brute], nodes, layer)
    assert all(layer[b] == layer[a] + 1 and any(ea[i] == a and eb[i] == b for i in brute)
               for a, b in zip(chain, chain[1:]))


def test_nothing_found_has_no_link(graph):
    links = found_links(graph, result_of([]), "pearson", 0.1)
    assert (links.nodes, links.edges, links.longest) == (set(), [], [])


def test_prompt_graph_edges_get_their_measured_drops():
    nan = np.nan
    m = measured_edges({
        "methods": np.array(["cosine", "random"]), "sites": np.array(["s.0", "s.1"]), "pairs": np.array(["s.0->s.1"]),
        "downstream": np.array([[5, 7]]), "partner": np.array([[[1, 2], [3, -1]]]),
        "drop": np.array([[[0.8, 0.1], [0.4, nan]]])})
    edges = [{"source": "s.0:1", "target": "s.1:5"}, {"source": "s.0:1", "target": "s.1:7"},
             {"source": "s.0:2", "target": "s.1:7"}, {"source": "s.0:3", "target": "s.1:5"}]
    assert measured_drops(edges, m) == [pytest.approx(0.8), None, pytest.approx(0.1), pytest.approx(0.4)]
    assert measured_in(edges, m).round(3).tolist() == [0.8, 0.1, 0.4]
    assert measured_drops(edges, None) == [None] * 4 and measured_in(edges, None).size == 0
