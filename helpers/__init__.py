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
from .subject.models import Subject, load_subject, wrap
from .subject.saes import encode, load_saes, sae_quality, train_saes, training_report

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
    "Subject",
    "TokenBatch",
    "artefacts_root",
    "capture_residuals",
    "encode",
    "flatten_tokens",
    "get_experiment",
    "iter_token_batches",
    "load_corpus",
    "load_saes",
    "load_subject",
    "load_wiki_summaries",
    "sae_dir",
    "sae_quality",
    "stats_dir",
    "token_context",
    "train_saes",
    "training_report",
    "wrap",
]
