import numpy as np

from helpers.evolution.measured_edges import measured_edges
from helpers.explore.found_links import FoundLinks
from helpers.notebook.search_view import feature_cell, found_links_frame, prompt_drops_frame, strongest_edges_frame


def label(site, feature):
    return f"[{site}:{feature}]"


def test_feature_cell_links_the_explorer_page():
    assert feature_cell("s.1", 7, label) == '<a href="../explorer.html#site=s.1&feature=7">s.1 #7</a> [s.1:7]'


def test_found_links_frame_one_row_per_link():
    graph = {"sites": ["s.0", "s.1"], "nodes": {"layer": [0, 0, 1], "feature": [3, 4, 9]},
             "edges": {"a": [0, 1], "b": [2, 2]}}
    links = FoundLinks({0, 1, 2}, [1, 0], [0.71, 0.2], [None, 0.456], {0, 1, 2}, [1, 2])
    frame = found_links_frame(graph, links, label)
    assert frame["upstream"].tolist() == [feature_cell("s.0", 4, label), feature_cell("s.0", 3, label)]
    assert frame["downstream"].tolist() == [feature_cell("s.1", 9, label)] * 2
    assert frame["pearson r"].tolist() == ["0.71", "0.20"] and frame["causal drop"].tolist() == ["–", "0.456"]


def test_prompt_drops_frame_counts_and_medians():
    graphs = [{"nodes": [1, 2, 3], "edges": [1, 2]}, {"nodes": [1], "edges": []}]
    frame = prompt_drops_frame(["p", "q"], graphs, [np.array([0.2, 0.6, 0.9]), np.zeros(0)], "pearson >= 0.1", 0.5)
    assert frame.index.tolist() == ["p", "q"]
    assert frame.loc["p"].tolist() == [3, 2, 3, "0.600", 2] and frame.loc["q"].tolist() == [1, 0, 0, "–", 0]
    assert list(frame.columns)[1] == "edges (pearson >= 0.1)" and list(frame.columns)[-1] == "drop >= 0.5"


def test_strongest_edges_frame_keeps_the_supported_ones():
    m = measured_edges({
        "methods": np.array(["cosine", "random"]), "sites": np.array(["s.0", "s.1"]), "pairs": np.array(["s.0->s.1"]),
        "downstream": np.array([[5, 7, 8]]), "partner": np.array([[[1, 2, 3], [4, 2, -1]]]),
        "drop": np.array([[[0.8, 0.95, 0.3], [0.4, 0.95, np.nan]]]), "n_firing": np.array([[6, 1, 9]])})
    frame = strongest_edges_frame(m, label, min_support=5, n=2)
    assert frame.columns.tolist() == ["upstream", "downstream", "drop", "chosen_by", "n_firing"]
    assert frame["drop"].tolist() == ["0.800", "0.400"]  # the 0.95 drop rests on one token
    assert frame["upstream"].tolist() == [feature_cell("s.0", 1, label), feature_cell("s.0", 4, label)]
    assert frame["chosen_by"].tolist() == ["cosine", "random"]
