"""How features evolve across layers: measures between the features of adjacent sites,
decoder-direction cosine, the co-activation graph, which matching method is causal, features
against MLP neurons, and
derived views for the notebooks."""

from .analysis import (association_rows, fraction_above, naive_cooccurrence, spearman, strongest_across_pairs,
                       strongest_pairs)
from .decoder import decoder_directions, neuronpedia_url, top_cosine_matches
from .decoder_matches import DecoderMatches, best_decoder_matches
from .gate_artefact import (build_gates, explanation_rows, explanation_sizes, gate_rows, gate_summary, gate_totals,
                            gates_ready, load_gates)
from .gates import pair_gate_candidates, survives, truth_table_scores
from .graph import (build_graph, busiest_feature, communities, connected_components, degree_frequency, export_graphml,
                    neighbourhood, site_graph_rows)
from .matching import (METHODS, matched_partners, method_agreement, overall_rows, random_partners, ranked_methods,
                       success, success_range, success_table)
from .matching_artefact import build_matching, compute_matching, load_matching, matching_ready
from .neuron_artefact import build_neurons, load_neurons, neurons_ready
from .neuron_report import alignment_rows, best_abs_r, neuron_rows, neuron_totals
from .upstream import explanation, greedy_cover, upstream_candidates

__all__ = [
    "DecoderMatches", "association_rows", "best_decoder_matches", "busiest_feature", "connected_components",
    "explanation_rows", "gate_totals", "overall_rows", "ranked_methods", "site_graph_rows", "strongest_across_pairs",
    "success_range",
    "alignment_rows", "best_abs_r", "build_neurons", "load_neurons", "neuron_rows", "neuron_totals",
    "neurons_ready",
    "METHODS", "build_gates", "build_graph", "build_matching", "communities", "compute_matching",
    "decoder_directions", "degree_frequency", "explanation", "explanation_sizes", "export_graphml",
    "fraction_above", "gate_rows", "gate_summary", "gates_ready", "greedy_cover", "load_gates", "load_matching",
    "matched_partners", "matching_ready", "method_agreement", "naive_cooccurrence", "neighbourhood",
    "neuronpedia_url", "pair_gate_candidates", "random_partners", "spearman", "strongest_pairs", "success",
    "success_table", "survives", "top_cosine_matches", "truth_table_scores", "upstream_candidates",
]
