import networkx as nx
import numpy as np
import pytest
import torch

from helpers.evolution.decoder import decoder_directions, neuronpedia_url, top_cosine_matches
from helpers.errors import ConfigError
from helpers.evolution.graph import build_graph, communities, degree_frequency, export_graphml, neighbourhood

from ..conftest import make_random_sae


def test_top_cosine_matches_equal_dense_brute_force():
    a, b = make_random_sae(16, 40, seed=1), make_random_sae(16, 30, seed=2)
    idx, cos = top_cosine_matches(a, b, k=3, chunk=7)
    da, db = decoder_directions(a).numpy(), decoder_directions(b).numpy()
    dense = da @ db.T
    np.testing.assert_allclose(cos.numpy(), -np.sort(-dense, axis=1)[:, :3], rtol=1e-5)
    assert idx[:, 0].tolist() == dense.argmax(1).tolist()
    assert torch.allclose(decoder_directions(a).norm(dim=1), torch.ones(40))


def test_neuronpedia_links_from_the_registry():
    from helpers.subject.releases import experiment_from_release

    assert neuronpedia_url("gpt2-res-jb", "blocks.7.hook_resid_pre", 75) == "https://www.neuronpedia.org/gpt2-small/7-res-jb/75"
    assert neuronpedia_url("offline", "hidden.1", 3) is None  # trained here: no page
    gemma = experiment_from_release("gemma-scope-2b-pt-res-canonical", width=16384, layers=(4, 5))
    assert neuronpedia_url(gemma, "blocks.5.hook_resid_post", 9) == "https://www.neuronpedia.org/gemma-2-2b/5-gemmascope-res-16k/9"
    llama = experiment_from_release("llama_scope_lxr_8x", layers=(0, 1))
    assert neuronpedia_url(llama, "blocks.1.hook_resid_post", 2) == "https://www.neuronpedia.org/llama3.1-8b/1-llamascope-res-32k/2"
    # a release without Neuronpedia ids gives no link
    assert neuronpedia_url(experiment_from_release("gemma-2-2b-res-matryoshka-dc", layers=(0, 1)), "blocks.0.hook_resid_post", 1) is None


def _graph_npz():
    return {
        "frequency": np.array([[0.5, 0.2, 0.0, 0.1], [0.3, 0.3, 0.3, 0.3]]),
        "edge_site": np.array([0, 0, 0, 1]), "edge_src": np.array([0, 0, 1, 2]),
        "edge_dst": np.array([1, 3, 3, 3]), "edge_count": np.array([5, 1, 2, 9]),
        "edge_weight": np.array([0.9, 0.1, 0.4, 0.7]),
    }


def test_build_graph_threshold_and_attributes():
    g = build_graph(_graph_npz(), 0)
    assert sorted(g.nodes) == [0, 1, 3]  # feature 2 never fired
    assert g.edges[0, 1] == {"count": 5, "weight": 0.9}
    assert sorted(build_graph(_graph_npz(), 0, min_count=2).edges) == [(0, 1), (1, 3)]
    with pytest.raises(ConfigError, match="out of range"):
        build_graph(_graph_npz(), 5)
    with pytest.raises(ConfigError, match="min_count"):
        build_graph(_graph_npz(), 0, min_count=0)


def test_degree_frequency_communities_neighbourhood(tmp_path):
    g = build_graph(_graph_npz(), 0)
    degree, freq, r = degree_frequency(g)
    assert degree.tolist() == [2, 2, 2] and np.isnan(r)  # constant degree: no correlation
    g.add_node(7, frequency=0.01)
    degree, freq, r = degree_frequency(g)
    assert r == pytest.approx(np.corrcoef(degree, freq)[0, 1])
    found = communities(g)
    assert set().union(*found) == set(g.nodes)
    assert sorted(neighbourhood(g, 0).nodes) == [0, 1, 3]
    strongest = neighbourhood(g, 0, max_neighbours=1)  # edge 0-1 (count 5) beats 0-3 (count 1)
    assert sorted(strongest.nodes) == [0, 1] and strongest.edges[0, 1]["count"] == 5
    with pytest.raises(ConfigError, match="not in the graph"):
        neighbourhood(g, 2)
    path = export_graphml(g, tmp_path / "g.graphml")
    back = nx.read_graphml(path)
    assert back.number_of_edges() == 3


def test_components_busiest_feature_and_site_rows():
    from helpers.evolution.graph import busiest_feature, connected_components, site_graph_rows

    g = build_graph(_graph_npz(), 0)
    g.add_node(9, frequency=0.05)
    assert [sorted(c) for c in connected_components(g)] == [[0, 1, 3], [9]]
    g.add_edge(3, 9, count=1, weight=0.1)
    assert busiest_feature(g) == 3  # degree 3
    with pytest.raises(ConfigError, match="no node"):
        busiest_feature(nx.Graph())
    rows = site_graph_rows(_graph_npz(), ["s0", "s1"])
    assert [(r["site"], r["features"], r["edges"], r["median degree"]) for r in rows] == [
        ("s0", 3, 3, 2.0), ("s1", 4, 1, 0.5)]  # degrees 2, 2, 2 and 0, 0, 1, 1
    assert np.isnan(rows[0]["degree-frequency r"]) and np.isnan(rows[1]["degree-frequency r"])  # constant
