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
:mod:`~helpers.io` (artefact paths and atomic writes), :mod:`~helpers.errors`,
:mod:`~helpers.pipeline`, :mod:`~helpers.report`, :mod:`~helpers.publish` (the book to
GitHub Pages), :mod:`~helpers.cli`. Importing this package has no side effects; heavy libraries
load on first use.
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
    ConfigError,
    CorruptArtefactError,
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
from .subject.saes import encode, load_saes, sae_quality, train_saes, training_report

__all__ = [
    "ArtefactMismatchError",
    "ConfigError",
    "CorruptArtefactError",
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
    "html_table",
    "iter_token_batches",
    "load_artefact",
    "load_corpus",
    "load_saes",
    "load_subject",
    "load_wiki_summaries",
    "plot_retrieval_ranks",
    "plot_steering_tradeoff",
    "prepare",
    "retrieval_sweep",
    "retrieval_table",
    "sae_dir",
    "sae_quality",
    "stats_dir",
    "steered_texts",
    "steered_texts_table",
    "steering_features",
    "steering_findings",
    "steering_summary",
    "steering_sweep",
    "steering_table",
    "token_context",
    "top_tokens",
    "train_saes",
    "training_report",
    "wrap",
]

#: notebook-facing names loaded on first use (:mod:`helpers.notebook` imports matplotlib)
_LAZY = {
    "html_table": "helpers.notebook.tables",
    "plot_retrieval_ranks": "helpers.notebook.steering_plots",
    "plot_steering_tradeoff": "helpers.notebook.steering_plots",
    "retrieval_table": "helpers.notebook.steering_plots",
    "steered_texts_table": "helpers.notebook.steering_plots",
    "steering_findings": "helpers.notebook.steering_plots",
    "steering_table": "helpers.notebook.steering_plots",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")
