"""The browser's data follow the rule of the cross-layer graph; the page works in headless Chromium."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.errors import ConfigError
from helpers.evolution.communities import cross_layer_graph
from helpers.explore.browser import browser_graph, browser_prompt, filter_edges, synthetic_graph

from .test_search import fake_partners

SITES = ["s.0", "s.1", "s.2", "s.3"]


@pytest.fixture(scope="module")
def data():
    partners = fake_partners(SITES, 40, k=4, seed=3)
    fired = np.random.default_rng(0).integers(0, 5, (len(SITES), 40))  # some features never fired
    return partners, fired, browser_graph(partners, fired, k_edges=4, community_threshold=0.5)


@pytest.mark.parametrize("measure,threshold", [("pearson", 0.1), ("jaccard", 0.6), ("cosine", 0.9),
                                               ("necessity", 0.0)])
def test_edges_shown_equal_the_cross_layer_graph(data, measure, threshold):
    partners, fired, graph = data
    sites = graph["sites"]
    shown = filter_edges(graph, measure, threshold)
    nodes = graph["nodes"]
    got = {frozenset((f"{sites[nodes['layer'][graph['edges'][e][i]]]}:{nodes['feature'][graph['edges'][e][i]]}"
                      for e in ("a", "b"))) for i in shown}
    want = {frozenset(e) for e in cross_layer_graph(partners, fired, measure, threshold).edges()}
    # the cross-layer graph keeps an edge from a feature that fired to one that never did; the
    # browser draws features that fired only
    alive = {f"{s}:{f}" for s_i, s in enumerate(sites) for f in np.flatnonzero(fired[s_i] > 0)}
    assert got == {e for e in want if e <= alive} and got


def test_nodes_and_communities(data):
    partners, fired, graph = data
    n = graph["nodes"]
    assert len(n["layer"]) == int((fired > 0).sum())
    assert all(fired[la, f] > 0 for la, f in zip(n["layer"], n["feature"]))
    sizes = [c["size"] for c in graph["communities"]]
    assert sizes == sorted(sizes, reverse=True) and all(s > 1 for s in sizes)
    assert [sum(1 for c in n["community"] if c == k["id"]) for k in graph["communities"]] == sizes


def test_prompt_maps_to_browser_nodes(data):
    _, fired, graph = data
    alive = int(np.flatnonzero(fired[1] > 0)[0])
    dead = int(np.flatnonzero(fired[1] == 0)[0])
    pg = {"prompt": "p", "tokens": ["a", "b"], "nodes": [{"id": f"s.1:{alive}", "acts": [1.0, 0.0]},
                                                         {"id": f"s.1:{dead}", "acts": [0.0, 2.0]}]}
    out = browser_prompt(graph, pg, "name")
    i = out["nodes"][0]
    assert graph["nodes"]["layer"][i] == 1 and graph["nodes"]["feature"][i] == alive
    assert out["missing"] == 1 and out["acts"] == [[1.0, 0.0]]


def test_bad_input(data):
    partners, fired, graph = data
    with pytest.raises(ConfigError, match="unknown measure"):
        filter_edges(graph, "spearman", 0.1)
    with pytest.raises(ConfigError, match="outside its range"):
        filter_edges(graph, "jaccard", -0.5)
    with pytest.raises(ConfigError, match="k_edges=9"):
        browser_graph(partners, fired, k_edges=9)


def test_synthetic_graph_has_the_size_asked():
    g = synthetic_graph(2000, 20000)
    assert len(g["nodes"]["layer"]) == 2000 and len(g["edges"]["a"]) == 20000
    assert len(set(zip(g["edges"]["a"], g["edges"]["b"]))) == 20000


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver")
def test_page_in_headless_chromium_2000_nodes_20000_edges(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "book"))
    import check_browser

    page = check_browser.synthetic_page(tmp_path / "b", 2000, 20000)
    problems, times = check_browser.check(page)
    assert problems == []
    full = times["redraw"][-1.0]
    assert full["edges"] == 20000 and full["nodes"] == 2000
    assert full["ms"] < check_browser.MAX_REDRAW_MS and times["hover_ms"] < check_browser.MAX_REDRAW_MS


def test_feature_labels_equal_top_tokens(wiki_docs, tiny_tokenizer):
    from helpers.explore.browser import add_labels, feature_labels
    from helpers.explore.examples import top_tokens

    rng = np.random.default_rng(1)
    docs = wiki_docs[:10]
    lengths = [len(tiny_tokenizer(d.text, add_special_tokens=False)["input_ids"]) for d in docs]
    S, F, k = 2, 12, 6
    doc = rng.integers(0, len(docs), (S, F, k))
    pos = np.array([[[rng.integers(0, lengths[d]) for d in row] for row in site] for site in doc])
    doc = np.array([[[docs[d].doc_id for d in row] for row in site] for site in doc])
    doc[0, 3, 2:] = -1  # fewer examples than k
    doc[1, 5] = -1  # never fired
    top = {"hi_doc": doc, "hi_pos": pos, "hi_values": np.ones((S, F, k), np.float32)}
    labels = feature_labels(top, docs, tiny_tokenizer)
    for s in range(S):
        for f in range(F):
            want = top_tokens(top, s, f, docs, tiny_tokenizer, n=2)
            assert labels[s][f] == ("" if want == "(never fired)" else want)
    graph = {"nodes": {"layer": [0, 1], "feature": [3, 7]}}
    assert add_labels(graph, labels)["nodes"]["label"] == [labels[0][3], labels[1][7]]
