"""How features evolve across layers: measures between the features of adjacent sites,
decoder-direction cosine, the co-activation graph, which matching method is causal, and
derived views for the notebooks."""

from .analysis import fraction_above, naive_cooccurrence, spearman, strongest_pairs
from .decoder import decoder_directions, neuronpedia_url, top_cosine_matches
from .graph import build_graph, communities, degree_frequency, export_graphml, neighbourhood
from .matching import METHODS, matched_partners, method_agreement, random_partners, success, success_table
from .matching_artefact import build_matching, compute_matching, load_matching, matching_ready

__all__ = [
    "METHODS", "build_graph", "build_matching", "communities", "compute_matching", "decoder_directions", "degree_frequency",
    "export_graphml", "fraction_above", "load_matching", "matched_partners", "matching_ready",
    "method_agreement", "naive_cooccurrence", "neighbourhood", "neuronpedia_url", "random_partners", "spearman",
    "strongest_pairs", "success", "success_table", "top_cosine_matches",
]
