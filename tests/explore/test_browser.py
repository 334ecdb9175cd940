"""The browser's data follow the rule of the cross-layer graph; the page works in headless Chromium."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.errors import ConfigError
from helpers.evolution.communities import cross_layer_graph
from helpers.evolution.measured_edges import measured_edges
from helpers.explore.browser import (CAUSAL_MEASURE, browser_graph, browser_prompt, filter_edges, measure_values,
                                     synthetic_graph)

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


def tiny_measured(partners, fired, plain):
    """Measured edges over the fake tables (s.1 -> s.2): one that is a listed partner edge, one
    that is not, one from a feature that never fired, and a NaN (left out)."""
    n = plain["nodes"]
    listed_pairs = {(n["feature"][a], n["feature"][b]) for a, b in zip(plain["edges"]["a"], plain["edges"]["b"])
                    if n["layer"][a] == 1}
    listed = int(partners["up_index"][1, 0, 0, 0])  # the top pearson partner (s.1) of s.2 #0
    assert fired[2, 0] > 0 and fired[1, listed] > 0 and (listed, 0) in listed_pairs
    other, b_new = next((int(a), int(b)) for a in np.flatnonzero(fired[1] > 0) for b in np.flatnonzero(fired[2] > 0)
                        if a != listed and b != 0 and (a, b) not in listed_pairs and (a, 0) not in listed_pairs)
    dead = int(np.flatnonzero(fired[1] == 0)[0])
    nan = np.nan
    return {
        "methods": np.array(["cosine", "pearson", "random"]), "sites": np.array(SITES),
        "downstream": np.array([[-1, -1], [0, b_new], [-1, -1]]),
        "partner": np.array([[[-1, -1]] * 3, [[listed, dead], [listed, other], [other, other]], [[-1, -1]] * 3]),
        "drop": np.array([[[nan, nan]] * 3, [[0.7, 0.9], [0.7, -0.4], [0.05, nan]], [[nan, nan]] * 3]),
    }, (listed, other, b_new)


def test_causal_measure_shows_the_measured_edges_only(data):
    partners, fired, plain = data
    m, (listed, other, b_new) = tiny_measured(partners, fired, plain)
    edges = measured_edges(m)
    graph = browser_graph(partners, fired, k_edges=4, community_threshold=0.5, measured=edges, measured_note="tiny")
    M = len(plain["measures"])
    assert graph["measures"] == plain["measures"] + [CAUSAL_MEASURE]
    assert graph["causal"]["offered"] and graph["causal"]["measured"] == 4 and graph["causal"]["not_drawn"] == 1
    n, sites, e = graph["nodes"], graph["sites"], graph["edges"]
    drop = measure_values(graph, CAUSAL_MEASURE)
    assert CAUSAL_MEASURE not in e["values"] and len(graph["causal"]["edge"]) == 3  # stored sparsely

    def named(i):
        a, b = e["a"][i], e["b"][i]
        return (sites[n["layer"][a]], n["feature"][a], sites[n["layer"][b]], n["feature"][b], round(drop[i], 3))

    shown = sorted(named(i) for i in filter_edges(graph, CAUSAL_MEASURE, -1.0))
    # the edge from the feature that never fired is not drawn; the NaN one is not measured
    assert shown == sorted([("s.1", listed, "s.2", 0, 0.7), ("s.1", other, "s.2", 0, 0.05),
                            ("s.1", other, "s.2", b_new, -0.4)])
    assert [named(i)[:4] for i in filter_edges(graph, CAUSAL_MEASURE, 0.5)] == [("s.1", listed, "s.2", 0)]
    # the other measures are unchanged; the listed edge keeps its values and gains the drop,
    # the two unlisted ones are added with only the drop
    for measure in plain["measures"]:
        assert len(filter_edges(graph, measure, 0.2)) == len(filter_edges(plain, measure, 0.2))
    listed_i, = filter_edges(graph, CAUSAL_MEASURE, 0.5)
    assert e["mask"][listed_i] & ((1 << M) - 1) and e["values"]["pearson"][listed_i] is not None
    new = [i for i in filter_edges(graph, CAUSAL_MEASURE, -1.0) if i != listed_i]
    assert len(new) == 2 and all(e["mask"][i] == 1 << M for i in new)
    assert all(e["values"][k][i] is None for k in plain["measures"] for i in new)
    assert len(e["a"]) == len(plain["edges"]["a"]) + 2
    assert list(zip(e["a"], e["b"])) == sorted(zip(e["a"], e["b"]))
    c = graph["causal"]
    assert sorted(c["edge"]) == sorted(filter_edges(graph, CAUSAL_MEASURE, -1.0).tolist())
    chosen = {edges.methods[k] for k in range(3) if c["chosen_by"][c["edge"].index(listed_i)] >> k & 1}
    assert chosen == {"cosine", "pearson"} and all(c["chosen_by"])
    assert np.isnan(measure_values(plain, "pearson")).sum() == 0 and np.isnan(drop).sum() == len(e["a"]) - 3
    assert graph["ranges"][CAUSAL_MEASURE] == [-1.0, 1.0]


def test_causal_measure_absent_or_out_of_range(data):
    partners, fired, plain = data
    assert CAUSAL_MEASURE not in plain["measures"] and not plain["causal"]["offered"]
    graph = browser_graph(partners, fired, k_edges=4, community_threshold=0.5,
                          measured_note="causal effect not measured for smoke: no matching results in /x: run "
                                        "`python -m helpers matching --experiment smoke`")
    with pytest.raises(ConfigError, match=r"not offered.*python -m helpers matching --experiment smoke") as err:
        filter_edges(graph, CAUSAL_MEASURE, 0.5)
    assert "\n" not in str(err.value)
    m, _ = tiny_measured(partners, fired, plain)
    m["drop"][1, 1, 1] = -2.34  # an ablation that more than doubled b: the range widens to hold it
    graph = browser_graph(partners, fired, k_edges=4, community_threshold=0.5, measured=measured_edges(m))
    assert graph["ranges"][CAUSAL_MEASURE] == [-2.4, 1.0]
    assert len(filter_edges(graph, CAUSAL_MEASURE, -2.4)) == 3
    for bad in (1.5, -2.5, "0.5", True):
        with pytest.raises(ConfigError, match=r"threshold .* for causal_drop is outside its range \[-2.4, 1\]"):
            filter_edges(graph, CAUSAL_MEASURE, bad)
    m["sites"] = np.array(["x.0", "x.1", "x.2", "x.3"])
    with pytest.raises(ConfigError, match="measured edges name the sites.*helpers matching"):
        browser_graph(partners, fired, k_edges=4, measured=measured_edges(m))


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
    causal = times["causal"]["causal_edges"]  # about 10% of the edges carry a drop in [-0.3, 1]
    assert times["causal"]["offered"] and 1500 < causal[-1.0] < 2500 and causal[0.9] < causal[0.0] < causal[-1.0]


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver")
def test_page_without_causal_effect_says_so(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "book"))
    import check_browser
    from helpers.explore.browser_site import write_browser

    graph = synthetic_graph(300, 1500, causal_share=0)
    graph["causal"]["note"] = "causal effect not measured for smoke: run `python -m helpers matching`"
    write_browser(tmp_path / "b", graph)
    drv = check_browser.driver()
    try:
        problems, causal = check_browser.check_causal(drv, tmp_path / "b" / "browser.html")
        title = drv.find_element("id", "measure-note").get_attribute("title")
    finally:
        drv.quit()
    assert problems == [] and causal["offered"] is False and "helpers matching" in title


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


def test_causal_measure_not_offered_when_nothing_can_be_drawn(data):
    partners, fired, plain = data
    m, _ = tiny_measured(partners, fired, plain)
    dead = int(np.flatnonzero(fired[1] == 0)[0])
    m["partner"][m["partner"] >= 0] = dead  # every measured edge starts at a feature that never fired
    graph = browser_graph(partners, fired, k_edges=4, community_threshold=0.5, measured=measured_edges(m))
    assert CAUSAL_MEASURE not in graph["measures"] and not graph["causal"]["offered"]
    assert "none of the 2 measured edges joins two features that fired" in graph["causal"]["note"]
    assert graph["edges"]["a"] == plain["edges"]["a"]


def brute_lineages(graph, measure, threshold, max_nodes):
    """The strongest lineages by plain loops: every feature's best next partner, every chain from
    a feature no other reaches, ranked (longest, strongest weakest link, start), taken greedily
    unless it shares a feature with one taken before."""
    layer, vals = graph["nodes"]["layer"], measure_values(graph, measure)
    bit = 1 << graph["measures"].index(measure)
    best = {}
    for e, (a, b) in enumerate(zip(graph["edges"]["a"], graph["edges"]["b"])):
        if graph["edges"]["mask"][e] & bit and vals[e] >= threshold and layer[b] == layer[a] + 1:
            if a not in best or (vals[e], -b) > (best[a][1], -best[a][0]):
                best[a] = (b, vals[e])
    reached = {b for b, _ in best.values()}
    ranked = []
    for s in best:
        if s in reached:
            continue
        chain, links = [s], []
        while chain[-1] in best:
            b, v = best[chain[-1]]
            chain.append(b)
            links.append(v)
        ranked.append((-len(chain), -min(links), s, chain))
    chosen, chains = set(), []
    for *_, chain in sorted(ranked):
        if chosen & set(chain):
            continue
        if len(chosen) + len(chain) > max_nodes:
            break
        chosen |= set(chain)
        chains.append(chain)
    return sorted(chosen), chains


@pytest.mark.parametrize("measure,threshold,max_nodes", [("pearson", 0.1, 300), ("pearson", 0.1, 9),
                                                         ("jaccard", 0.3, 20), ("cosine", 0.0, 5)])
def test_default_view_equals_brute_force(data, measure, threshold, max_nodes):
    from helpers.explore.browser import strongest_lineages

    _, _, graph = data
    view = strongest_lineages(graph, measure, threshold, max_nodes)
    nodes, chains = brute_lineages(graph, measure, threshold, max_nodes)
    assert view["nodes"] == nodes and view["chains"] == chains and 0 < len(nodes) <= max_nodes
    layer = graph["nodes"]["layer"]
    assert all(layer[c[i + 1]] == layer[c[i]] + 1 for c in chains for i in range(len(c) - 1))
    assert all(len(c) >= 2 for c in chains) and len(view["weakest"]) == len(chains)
    assert sum(len(c) for c in chains) == len(nodes)  # disjoint


def test_default_view_is_a_few_hundred_features_of_a_large_graph():
    from helpers.explore.browser import DEFAULT_VIEW_NODES, strongest_lineages, with_default_view

    g = synthetic_graph(2000, 20000)
    assert g["default_view"] == "lineages"
    view = g["lineages"]
    assert DEFAULT_VIEW_NODES - len(g["sites"]) < len(view["nodes"]) <= DEFAULT_VIEW_NODES
    assert [len(c) for c in view["chains"]] == sorted((len(c) for c in view["chains"]), reverse=True)
    # nothing passes the threshold: no lineage, the page opens on every feature with an edge
    g["edges"]["values"]["pearson"] = [0.0] * len(g["edges"]["a"])
    assert with_default_view(g, "pearson", 0.5)["default_view"] == "all" and not g["lineages"]["chains"]
    for bad in (1, 0, True, 2.5):
        with pytest.raises(ConfigError, match="at least 2 features"):
            strongest_lineages(g, max_nodes=bad)
    with pytest.raises(ConfigError, match="outside its range"):
        strongest_lineages(g, "jaccard", 2.0)


@pytest.fixture(scope="module")
def built_browser(tmp_path_factory):
    """The browser built by ``build_browser`` on a tiny smoke experiment (random TopK SAEs)."""
    from helpers.evolution.partners import build_partners
    from helpers.experiment import PRESETS
    from helpers.explore.browser_site import build_browser
    from helpers.stats import run_pass
    from helpers.subject.models import load_subject

    from ..stats.test_collect import random_topk_saes

    tmp = tmp_path_factory.mktemp("browser")
    exp = PRESETS["smoke"].replace(token_budget=900, step_tokens=300, batch_size=8, device="cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAE_EVOLUTION_ARTEFACTS", str(tmp / "artefacts"))
        subject, saes = load_subject(exp), random_topk_saes(exp.sites)
        run_pass(exp, progress=False, subject=subject, saes=saes)
        build_partners(exp, saes=saes, device="cpu", progress=False)
        res = build_browser(exp, out=tmp / "b", subject=subject, saes=saes)
    text = (tmp / "b" / "browser" / "data" / "graph.js").read_text()
    return res, json.loads(text[text.index(",") + 1:text.rindex(")")])


@pytest.mark.slow
def test_built_browser_opens_on_a_few_hundred_features(built_browser):
    from helpers.explore.browser import DEFAULT_VIEW_NODES

    res, graph = built_browser
    view = graph["lineages"]
    assert graph["default_view"] == "lineages" and 0 < len(view["nodes"]) <= DEFAULT_VIEW_NODES
    assert len(view["nodes"]) < res.nodes == len(graph["nodes"]["layer"])
    assert f"opens on the {len(view['chains'])} strongest lineages ({len(view['nodes'])} features)" in res.describe()
    shown = set(filter_edges(graph, view["measure"], view["threshold"]).tolist())
    pairs = {(a, b): e for e, (a, b) in enumerate(zip(graph["edges"]["a"], graph["edges"]["b"]))}
    assert all(pairs[(c[i], c[i + 1])] in shown for c in view["chains"] for i in range(len(c) - 1))
