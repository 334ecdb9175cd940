"""Interventions on SAE features: steering, clamping and ablation inside nnsight traces,
batched causal edge effects, steered generation and what it costs (:mod:`.steering`), steering along a
lineage of matched features (:mod:`.lineage_steering`), and sentence
embeddings to measure steering on an encoder."""

from .edits import MODES, Edit, check_edit, edge_effects, edge_effects_one_at_a_time, feature_delta, generate, raw_site, run_with_edits
from .edge_check import (PairStatistics, candidate_edges, distinct_edges, edge_check_rows, edge_statistics,
                         pair_statistics)
from .embeddings import corpus_embeddings, embed, random_like, retrieval_ranks, retrieval_sweep, steering_vector
from .lineage_steering import (
    LineageSteeringResult,
    check_chain,
    lineage_edits,
    lineage_of,
    lineages_to_steer,
    lineage_steering_summary,
    lineage_steering_sweep,
)
from .steering import (
    Generation,
    SteeringConfig,
    SteeringResult,
    control_delta,
    control_seed,
    feature_top_tokens,
    generate_steered,
    score_generation,
    steered_texts,
    steering_features,
    steering_summary,
    steering_sweep,
    stream_index,
)

__all__ = [
    "PairStatistics", "candidate_edges", "distinct_edges", "edge_check_rows", "edge_statistics", "pair_statistics",
    "Edit", "MODES", "check_edit", "corpus_embeddings", "edge_effects", "edge_effects_one_at_a_time", "embed",
    "feature_delta", "generate", "random_like", "raw_site", "retrieval_ranks", "run_with_edits", "steering_vector",
    "retrieval_sweep", "Generation", "SteeringConfig", "SteeringResult", "control_delta", "feature_top_tokens",
    "generate_steered", "score_generation", "steered_texts", "steering_features", "steering_summary",
    "steering_sweep", "stream_index", "control_seed", "LineageSteeringResult", "check_chain", "lineage_edits",
    "lineage_of", "lineage_steering_summary", "lineage_steering_sweep", "lineages_to_steer",
]
