"""How features evolve across layers: measures between the features of adjacent sites,
decoder-direction cosine, the co-activation graph, and derived views for the notebooks."""

from .analysis import fraction_above, naive_cooccurrence, spearman, strongest_pairs
from .decoder import decoder_directions, neuronpedia_url, top_cosine_matches
from .graph import build_graph, communities, degree_frequency, export_graphml, neighbourhood

__all__ = [
    "build_graph", "communities", "decoder_directions", "degree_frequency", "export_graphml",
    "fraction_above", "naive_cooccurrence", "neighbourhood", "neuronpedia_url", "spearman",
    "strongest_pairs", "top_cosine_matches",
]
