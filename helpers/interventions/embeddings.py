"""Sentence embeddings of the encoder subject (all-MiniLM-L6-v2), optionally steered.

The model's own pipeline: mean of the last hidden state over the attended tokens,
then L2 normalisation. A steering delta is added to the residual stream at one
site during the pass (see :mod:`helpers.interventions`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from .edits import run_with_edits
from ..subject.decode import decoded_rows
from ..subject.models import Subject


def steering_vector(sae, feature: int, strength: float) -> torch.Tensor:
    """``strength x`` the feature's decoder direction (``[d_in]``): what the feature writes at that
    activation (:func:`~helpers.subject.decode.decoded_rows`: over its norm for an SAE with
    ``rescale_acts_by_decoder_norm``; an SAE that normalises its input scales it per token)."""
    if not np.isfinite(strength):
        raise ConfigError(f"steering strength {strength!r} is not finite")
    if not 0 <= feature < sae.cfg.d_sae:
        raise ConfigError(f"feature {feature} is out of range (0..{sae.cfg.d_sae - 1})")
    return strength * decoded_rows(sae, torch.tensor([feature], device=sae.W_dec.device))[0].detach()


def random_like(vector: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random direction with the same norm as ``vector`` (the control)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(vector.shape, generator=g).to(vector.device, vector.dtype)
    return r * (vector.norm() / r.norm())


@torch.no_grad()
def embed(
    subject: Subject,
    texts: Sequence[str],
    site: str | None = None,
    vector: torch.Tensor | None = None,
    batch_size: int = 64,
    max_length: int = 128,
    progress: bool = False,
) -> np.ndarray:
    """Unit-norm sentence embeddings ``[n, d]``; with ``site``/``vector``, steered at every position."""
    if subject.spec.family != "bert":
        raise ConfigError(f"sentence embeddings need the encoder subject, not {subject.spec.name!r}")
    if (site is None) != (vector is None):
        raise ConfigError("give both site and vector to steer, or neither")
    last = subject.spec.site_names()[-1]
    if site is not None and site == last:
        raise ConfigError(f"steer a site before the last one ({last!r} is what gets pooled)")
    out = []
    for start in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="embeddings"):
        enc = subject.tokenizer(list(texts[start : start + batch_size]), return_tensors="pt", padding=True,
                                truncation=True, max_length=max_length)
        b = enc["input_ids"].shape[0]
        delta = None
        if vector is not None:
            delta = vector.view(1, 1, -1).expand(b, enc["input_ids"].shape[1], -1).to(subject.device)
        hidden = run_with_edits(subject, {}, enc["input_ids"], enc["attention_mask"], None, [last],
                                delta=delta, delta_site=site if delta is not None else None)[last]
        mask = enc["attention_mask"].to(hidden.device).unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
    return np.concatenate(out)


def retrieval_ranks(queries: np.ndarray, corpus: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """Rank (1 = most similar by cosine) of each target document for each query: ``[n_queries, n_targets]``."""
    sims = queries @ corpus.T
    order = np.argsort(-sims, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(order.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, order.shape[1] + 1)[None, :]
    return ranks[:, list(targets)]


EMBEDDINGS_FILE = "document_embeddings.npz"
#: the documents are embedded truncated to this many tokens, special tokens included
DOCUMENT_MAX_LENGTH = 128


def embeddings_key(exp, n_docs: int) -> np.ndarray:
    """What the cached document embeddings were computed from (model, corpus, its size)."""
    return np.array([exp.model, exp.corpus, str(exp.max_documents), str(n_docs)])


class FirstRowPooling:
    """The sentence embedding of every document, pooled from the statistics pass's own forward pass.

    The pass feeds one document per row, ``[CLS]`` + at most ``context_length - 2`` tokens +
    ``[SEP]``, and a document's first row holds exactly what :func:`embed` feeds the model for it
    (the text truncated to ``max_length = context_length`` with its special tokens). Pooling the
    last site of that row as :func:`embed` pools saves a second forward pass over the corpus
    (notebook 07's ranking of every document); equal to :func:`embed` up to float rounding (rows are
    padded to another length in the pass's batches; tested to 1e-5).
    """

    def __init__(self, n_docs: int, site: str):
        self.site, self.n_docs = site, n_docs
        self.embeddings: np.ndarray | None = None
        self.seen = np.zeros(n_docs, dtype=bool)

    @classmethod
    def applies(cls, exp, subject: Subject) -> bool:
        """The encoder subject, its last site among the experiment's sites, the whole corpus counted
        and rows as long as :func:`embed`'s ``max_length``."""
        return (subject.spec.family == "bert" and exp.token_budget is None
                and subject.spec.site_names()[-1] in exp.sites and exp.context_length == DOCUMENT_MAX_LENGTH)

    @torch.no_grad()
    def update(self, batch, residuals: dict[str, torch.Tensor]) -> None:
        """Add the documents that start in this batch (``residuals[site]`` ``[rows, seq, d]``)."""
        hidden = residuals[self.site]
        big = torch.iinfo(batch.positions.dtype).max
        first = batch.positions.masked_fill(~batch.token_mask, big).min(1).values == 0
        if not bool(first.any()):
            return
        rows = torch.nonzero(first)[:, 0]
        doc = batch.doc_ids.masked_fill(~batch.token_mask, -1).max(1).values[rows].long().numpy()
        h = hidden[rows.to(hidden.device)]
        mask = batch.attention_mask[rows].to(h.device).unsqueeze(-1).float()
        pooled = (h * mask).sum(1) / mask.sum(1)
        emb = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        if self.embeddings is None:
            self.embeddings = np.zeros((self.n_docs, emb.shape[1]), dtype=emb.dtype)
        self.embeddings[doc] = emb
        self.seen[doc] = True

    def result(self) -> np.ndarray | None:
        """``[n_docs, d]``, or ``None`` when some document had no row (an empty text)."""
        return self.embeddings if self.embeddings is not None and self.seen.all() else None


def corpus_embeddings(exp, subject: Subject, progress: bool = True) -> np.ndarray:
    """Embeddings of every document of the experiment's corpus, cached in
    ``artefacts/<preset>/document_embeddings.npz`` (written by the statistics pass on the encoder
    subject, see :class:`FirstRowPooling`; else computed here; recomputed when the corpus differs)."""
    from ..subject.corpus import stream_documents
    from ..io import atomic_save_npz, stats_dir

    docs = stream_documents(exp)
    path = stats_dir(exp.stats_name) / EMBEDDINGS_FILE
    key = embeddings_key(exp, len(docs))
    if path.is_file():
        with np.load(path) as data:
            if np.array_equal(data["key"], key):
                return data["embeddings"]
    emb = embed(subject, [d.text for d in docs], max_length=DOCUMENT_MAX_LENGTH, progress=progress)
    atomic_save_npz(path, embeddings=emb, key=key)
    return emb


#: neutral sentences that encoder steering moves (notebook 07)
NEUTRAL_SENTENCES = ("This is a sentence.", "It happened on a Tuesday.", "The report has several parts.",
                     "Here is some more text.", "They talked about it for a while.")
#: steering strengths k (x the feature's maximum activation) of the encoder sweep
RETRIEVAL_STRENGTHS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0)


def retrieval_sweep(subject: Subject, saes, site: str, site_index: int, features: Sequence[int],
                    top: dict[str, np.ndarray], max_act: np.ndarray, corpus: np.ndarray,
                    strengths: Sequence[float] = RETRIEVAL_STRENGTHS,
                    sentences: Sequence[str] = NEUTRAL_SENTENCES) -> dict[int, dict]:
    """Encoder steering: add ``k x max_act[f] x`` feature ``f``'s decoder direction at ``site``
    to neutral ``sentences`` and rank, among the ``corpus`` embeddings, the summaries where
    ``f`` has its top examples (``top``, the statistics pass's ``top_examples``).

    Returns ``{f: {"strengths": [k], "steered": [median rank per k], "random": [...],
    "summaries": n}}``, the control adding a random direction of the same norm (seeded by the
    feature).
    """
    plain = embed(subject, list(sentences))
    out = {}
    for f in features:
        targets = sorted({int(d) for d in top["hi_doc"][site_index, f] if d >= 0})
        med, ctl = [], []
        for k in strengths:
            v = steering_vector(saes[site], f, k * float(max_act[f]))
            q = embed(subject, list(sentences), site=site, vector=v) if k else plain
            c = embed(subject, list(sentences), site=site, vector=random_like(v, seed=f)) if k else plain
            med.append(float(np.median(retrieval_ranks(q, corpus, targets))))
            ctl.append(float(np.median(retrieval_ranks(c, corpus, targets))))
        out[int(f)] = {"strengths": [float(k) for k in strengths], "steered": med, "random": ctl,
                       "summaries": len(targets)}
    return out
