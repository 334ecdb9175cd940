"""Helpers for studying how SAE features evolve across the layers of a language model.

The layout follows the pipeline, one stage a sub-package:

- :mod:`~helpers.subject`: corpus, models, capture of the sites, SAEs;
- :mod:`~helpers.stats`: streaming accumulators, the one statistics pass, its memory
  plan, processes and artefacts;
- :mod:`~helpers.evolution`: measures across layers, decoder cosine, graphs;
- :mod:`~helpers.interventions`: steering, ablation, causal edge effects;
- :mod:`~helpers.explore`: feature examples and labels;
- :mod:`~helpers.notebook`: figures and sliders for the notebooks.

Cross-cutting modules: :mod:`~helpers.experiment` (configuration and presets),
:mod:`~helpers.io` (artefact paths, atomic writes, transactions, disk space),
:mod:`~helpers.locks` (one writer per folder, interruptions), :mod:`~helpers.errors`,
:mod:`~helpers.pipeline`, :mod:`~helpers.report`, :mod:`~helpers.publish` (the book to
GitHub Pages), :mod:`~helpers.cli`. Importing this package has no side effects; heavy libraries
load on first use.

The notebooks import what they use from here (``from helpers import prepare, slider``), as
SAELens' tutorials do ``from sae_lens import SAE``: the names of :data:`NOTEBOOK_API`, each
taken from its sub-package on first use, so that importing :mod:`helpers` (the command line
does) loads no plotting or graph library.
"""

from .subject.capture import capture_residuals, flatten_tokens
from .subject.corpus import (
    Document,
    SpecialTokens,
    TokenBatch,
    iter_token_batches,
    load_corpus,
    load_wiki_summaries,
    token_context,
)
from .errors import (
    ArtefactMismatchError,
    BusyError,
    ConfigError,
    CorruptArtefactError,
    DiskError,
    HubUnavailableError,
    MissingArtefactError,
    SaeEvolutionError,
)
from .experiment import MODELS, PRESETS, Experiment, ModelSpec, get_experiment
from .io import artefacts_root, sae_dir, stats_dir
from .pipeline import prepare
from .stats import load_artefact
from .explore import top_tokens
from .interventions import (
    SteeringConfig,
    corpus_embeddings,
    retrieval_sweep,
    steered_texts,
    steering_features,
    steering_summary,
    steering_sweep,
)
from .subject.models import Subject, load_subject, wrap
from .subject.saes import encode, load_saes, sae_quality, training_report
from .subject.training import train_saes

#: the notebook-facing names, each with the module (under ``helpers``) that defines it
NOTEBOOK_API: dict[str, str] = {
    # experiment, artefacts, report
    "prepare": "pipeline",
    "describe": "report", "info_rows": "report", "quality_summary": "report", "quality_table": "report",
    "load_artefact": "stats.artefacts", "load_metadata": "stats.artefacts",
    # one pass's artefacts, summarised (notebooks 1-3)
    "alive_pair_counts": "stats.summaries", "dead_feature_rows": "stats.summaries",
    "max_activation_rows": "stats.summaries", "never_cofired_rows": "stats.summaries",
    "top_entries": "stats.summaries",
    # across layers (notebooks 4-6, 9-11)
    "association_rows": "evolution.analysis", "naive_cooccurrence": "evolution.analysis",
    "spearman": "evolution.analysis", "strongest_across_pairs": "evolution.analysis",
    "best_decoder_matches": "evolution.decoder_matches",
    "build_graph": "evolution.graph", "busiest_feature": "evolution.graph", "communities": "evolution.graph",
    "connected_components": "evolution.graph", "degree_frequency": "evolution.graph",
    "export_graphml": "evolution.graph", "neighbourhood": "evolution.graph", "site_graph_rows": "evolution.graph",
    "load_partners": "evolution.partners",
    "flow_table": "evolution.lineages", "flows": "evolution.lineages", "lineages": "evolution.lineages",
    "community_shapes": "evolution.communities", "cross_layer_graph": "evolution.communities",
    "export_cross_layer_graphml": "evolution.communities", "layer_communities": "evolution.communities",
    "readable_communities": "evolution.communities", "saturated_features": "evolution.communities",
    "explanation_rows": "evolution.gate_artefact", "explanation_sizes": "evolution.gate_artefact",
    "gate_rows": "evolution.gate_artefact", "gate_summary": "evolution.gate_artefact",
    "gate_totals": "evolution.gate_artefact", "load_gates": "evolution.gate_artefact",
    "explanation": "evolution.upstream", "pick_explained": "evolution.upstream",
    "DEFAULT_THRESHOLD": "evolution.matching", "method_agreement": "evolution.matching",
    "overall_rows": "evolution.matching", "ranked_methods": "evolution.matching",
    "success_range": "evolution.matching", "success_table": "evolution.matching",
    "load_matching": "evolution.matching_artefact",
    "load_neurons": "evolution.neuron_artefact", "alignment_rows": "evolution.neuron_report",
    "best_abs_r": "evolution.neuron_report", "neuron_rows": "evolution.neuron_report",
    "neuron_totals": "evolution.neuron_report", "unit_score_rows": "evolution.neuron_report",
    "unit_scores": "evolution.neuron_report",
    "CAUSAL_MEASURE": "evolution.measured_edges", "measured_edges_or_note": "evolution.measured_edges",
    # interventions (notebook 8)
    "edge_effects": "interventions.edits",
    "candidate_edges": "interventions.edge_check", "distinct_edges": "interventions.edge_check",
    "edge_check_rows": "interventions.edge_check", "edge_statistics": "interventions.edge_check",
    "pair_statistics": "interventions.edge_check",
    # features in the corpus, search, browser (notebook 12)
    "examples": "explore.examples", "feature_text": "explore.examples", "top_tokens": "explore.examples",
    "feature_anchor": "explore.links", "feature_link": "explore.links",
    "prompt_activations": "explore.search", "prompt_continuity": "explore.search",
    "search_funnel": "explore.search", "search_prompts": "explore.search", "token_subgraph": "explore.search",
    "found_links": "explore.found_links", "measured_drops": "explore.found_links",
    "measured_in": "explore.found_links", "node_feature": "explore.found_links",
    "browser_graph": "explore.browser", "filter_edges": "explore.browser",
    "precompute": "explore.browser_site",
    "CURATED_PROMPTS": "explore.curated", "CURATED_SEARCHES": "explore.curated",
    # figures, tables and sliders
    "plot_coactivation_curves": "notebook.plots", "plot_community": "notebook.plots",
    "plot_community_shapes": "notebook.plots", "plot_dead_curves": "notebook.plots",
    "plot_flow_shares": "notebook.plots", "plot_fraction_above": "notebook.plots",
    "plot_lifespans": "notebook.plots", "plot_max_histogram": "notebook.plots",
    "plot_neighbourhood": "notebook.plots", "plot_pass_through": "notebook.plots",
    "plot_sae_quality": "notebook.plots", "plot_scatter": "notebook.plots",
    "plot_spurious_share": "notebook.plots", "plot_value_histograms": "notebook.plots",
    "plot_coverage_curves": "notebook.gate_plots", "plot_explanation_sizes": "notebook.gate_plots",
    "plot_gate_counts": "notebook.gate_plots", "side_by_side_html": "notebook.gate_plots",
    "truth_table_html": "notebook.gate_plots",
    "plot_agreement": "notebook.matching_plots", "plot_matching_success": "notebook.matching_plots",
    "success_frame": "notebook.matching_plots",
    "plot_best_neuron_r": "notebook.neuron_plots", "plot_unit_scores": "notebook.neuron_plots",
    "browser_link": "notebook.search_view", "found_links_frame": "notebook.search_view",
    "plot_drops": "notebook.search_view", "plot_prompt_continuity": "notebook.search_view",
    "plot_token_graph": "notebook.search_view", "prompt_drops_frame": "notebook.search_view",
    "search_table": "notebook.search_view", "search_widget": "notebook.search_view",
    "strongest_edges_frame": "notebook.search_view",
    "decoder_match_rows": "notebook.feature_rows",
    "Html": "notebook.tables", "examples_table": "notebook.tables", "highlight": "notebook.tables",
    "html_list": "notebook.tables", "html_table": "notebook.tables", "paired_examples_table": "notebook.tables",
    "slider": "notebook.widgets",
    # beside the reference study and Feature Flow (notebooks 1-3, 9, 11)
    "STUDY": "reference.figures", "comparison_rows": "reference.compare", "load_ours": "reference.compare",
    "plot_dead_beside_study": "notebook.reference_plots",
    "plot_disappearing_beside_study": "notebook.reference_plots",
    "plot_matching_beside_feature_flow": "notebook.reference_plots",
    "plot_max_beside_study": "notebook.reference_plots",
    "plot_never_beside_study": "notebook.reference_plots", "reference_table": "notebook.reference_plots",
    # explanations with scores (issue 19)
    "load_explanations": "explain.artefact", "explanations_or_none": "explain.artefact", "explanation_summary": "explain.summary",
    "best_explained": "explain.summary", "plot_explanation_scores": "notebook.explanation_plots",
    "explanation_findings": "notebook.explanation_plots",
    # steering a writing model (notebook 7)
    "plot_retrieval_ranks": "notebook.steering_plots", "plot_steering_tradeoff": "notebook.steering_plots",
    "retrieval_table": "notebook.steering_plots", "steered_texts_table": "notebook.steering_plots",
    "steering_findings": "notebook.steering_plots", "steering_table": "notebook.steering_plots",
    # steering along a lineage (issue 19, notebook 13)
    "lineage_of": "interventions.lineage_steering", "lineage_steering_sweep": "interventions.lineage_steering",
    "lineage_steering_summary": "interventions.lineage_steering",
    "lineages_to_steer": "interventions.lineage_steering",
    "plot_lineage_steering": "notebook.steering_plots", "lineage_findings": "notebook.steering_plots",
    "missed_targets": "report",
    # a width sweep at one site (issue 18)
    "WidthSweep": "subject.widths", "train_width_sweep": "subject.widths", "width_rows": "subject.widths",
    "load_width_rows": "subject.widths", "official_width_rows": "subject.widths",
    "format_width_rows": "subject.widths", "plot_width_sweep": "notebook.width_plots",
    # completeness of concept families (issue 18)
    "concept_families": "explain.concepts", "load_family": "explain.concepts", "ConceptFamily": "explain.concepts",
    "find_mentions": "explain.concepts", "completeness": "explain.completeness",
    "coverage_by_frequency": "explain.completeness", "format_completeness": "explain.completeness",
    "site_completeness": "explain.completeness_run", "width_completeness": "explain.completeness_run",
    "plot_coverage_by_frequency": "notebook.completeness_plots",
    # feature splitting between widths and neighbourhoods (issue 18, notebook 14)
    "load_splitting": "evolution.splitting_artefact", "split_pair": "evolution.splitting",
    "splitting_tree": "evolution.splitting", "exclusive_children": "evolution.splitting",
    "width_sweep_or_none": "evolution.width_report", "split_share_rows": "evolution.width_report",
    "best_cosines": "evolution.width_report", "tree_nodes": "evolution.width_report",
    "tree_members": "evolution.width_report", "feature_labels": "evolution.width_report",
    "tree_rows": "evolution.width_report", "width_findings": "evolution.width_report",
    "varied_trees": "evolution.width_report", "no_sweep_note": "evolution.width_report",
    "plot_splitting_tree": "notebook.width_plots", "plot_split_shares": "notebook.width_plots",
    "plot_best_cosines": "notebook.width_plots",
    "neighbourhood_points": "evolution.decoder_neighbourhood", "umap_layout": "evolution.decoder_neighbourhood",
    "concept_vectors": "evolution.decoder_neighbourhood", "centred_projection": "evolution.decoder_neighbourhood",
    "plot_neighbourhood_umap": "notebook.neighbourhood_plots", "plot_concept_vectors": "notebook.neighbourhood_plots",
    # the training budget and the corpus split (issue 26, notebook 0)
    "ConvergenceStudy": "subject.convergence", "load_convergence": "subject.convergence",
    "knee": "subject.convergence", "convergence_findings": "subject.convergence",
    "plot_convergence": "notebook.convergence_plots", "stream_documents": "subject.corpus",
    "visible": "subject.token_text", "short_site": "notebook.labels", "short_pair": "notebook.labels",
    "sites_caption": "notebook.labels", "threshold_label": "notebook.labels",
}


def __getattr__(name: str):
    """A name of :data:`NOTEBOOK_API`, imported from its module on first use."""
    import importlib

    module = NOTEBOOK_API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(NOTEBOOK_API))


__all__ = [
    "ArtefactMismatchError",
    "BusyError",
    "ConfigError",
    "CorruptArtefactError",
    "DiskError",
    "Document",
    "Experiment",
    "HubUnavailableError",
    "MODELS",
    "MissingArtefactError",
    "ModelSpec",
    "PRESETS",
    "SaeEvolutionError",
    "SpecialTokens",
    "SteeringConfig",
    "Subject",
    "TokenBatch",
    "artefacts_root",
    "capture_residuals",
    "corpus_embeddings",
    "encode",
    "flatten_tokens",
    "get_experiment",
    "iter_token_batches",
    "load_corpus",
    "load_saes",
    "load_subject",
    "load_wiki_summaries",
    "retrieval_sweep",
    "sae_dir",
    "sae_quality",
    "stats_dir",
    "steered_texts",
    "steering_features",
    "steering_summary",
    "steering_sweep",
    "token_context",
    "train_saes",
    "training_report",
    "wrap",
]
__all__ += sorted(NOTEBOOK_API)
