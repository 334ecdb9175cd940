"""The subject of study: the corpus, the model, its residual-stream sites and their SAEs.

:mod:`.corpus` (documents and token batches with provenance), :mod:`.models`
(nnsight-wrapped models), :mod:`.capture` (every site in one forward pass), :mod:`.neurons`
(MLP neurons read in the same pass),
:mod:`.saes` (load, encode, measure and train SAEs), :mod:`.decode` (what a feature edit adds to
the stream, as the SAE's own decode does), :mod:`.releases` (sae_lens' registry of
pretrained SAEs, read offline), :mod:`.hub` (a model's config from the hub).
"""

from .capture import capture_residuals, flatten_tokens, trace_inputs
from .corpus import (
    Document,
    SpecialTokens,
    TokenBatch,
    iter_token_batches,
    load_corpus,
    load_wiki_summaries,
    token_context,
)
from .neurons import capture_with_neurons, neuron_layers, neuron_width, site_layer
from .models import Subject, load_subject, load_tokenizer, resolve_device, wrap
from .releases import (Release, experiment_from_release, get_release, neuronpedia_id, residual_releases,
                       twin_preset)
from .saes import encode, load_saes, sae_quality, training_report
from .training import train_saes

__all__ = [
    "Document", "SpecialTokens", "Subject", "TokenBatch", "capture_residuals", "encode", "flatten_tokens",
    "iter_token_batches", "load_corpus", "load_saes", "load_subject", "load_tokenizer", "load_wiki_summaries",
    "resolve_device", "sae_quality", "token_context", "trace_inputs", "train_saes", "training_report", "wrap",
    "capture_with_neurons", "neuron_layers", "neuron_width", "site_layer",
    "Release", "experiment_from_release", "get_release", "neuronpedia_id", "residual_releases", "twin_preset",
]
