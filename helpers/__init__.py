"""Helpers for studying how SAE features evolve across the layers of a language model.

Topic modules (one concept each): :mod:`~helpers.experiment` (configuration and
presets), :mod:`~helpers.corpus` (documents and token batches with provenance),
:mod:`~helpers.models` (nnsight-wrapped subject models), :mod:`~helpers.capture`
(every site in one forward pass), :mod:`~helpers.saes` (load, encode, measure and
train SAEs), :mod:`~helpers.io` (artefact paths and atomic writes). Importing
this package has no side effects; heavy libraries load on first use.
"""

from .capture import capture_residuals, flatten_tokens
from .corpus import (
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
    HubUnavailableError,
    MissingArtefactError,
    SaeEvolutionError,
)
from .experiment import MODELS, PRESETS, Experiment, ModelSpec, get_experiment
from .io import artefacts_root, sae_dir, stats_dir
from .models import Subject, load_subject, wrap
from .saes import encode, load_saes, sae_quality, train_saes, training_report

__all__ = [
    "ArtefactMismatchError",
    "ConfigError",
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
