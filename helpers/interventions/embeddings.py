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
from ..subject.models import Subject


def steering_vector(sae, feature: int, strength: float) -> torch.Tensor:
    """``strength x`` the feature's decoder direction (``[d_in]``): what the feature writes at that activation."""
    if not np.isfinite(strength):
        raise ConfigError(f"steering strength {strength!r} is not finite")
    if not 0 <= feature < sae.cfg.d_sae:
        raise ConfigError(f"feature {feature} is out of range (0..{sae.cfg.d_sae - 1})")
    return strength * sae.W_dec[feature].detach()


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


def corpus_embeddings(exp, subject: Subject, progress: bool = True) -> np.ndarray:
    """Embeddings of every document of the experiment's corpus, cached in
    ``artefacts/<preset>/document_embeddings.npz`` (recomputed when the corpus differs)."""
    from ..subject.corpus import load_corpus
    from ..io import atomic_save_npz, stats_dir

    docs = load_corpus(exp.corpus, exp.max_documents)
    path = stats_dir(exp.stats_name) / "document_embeddings.npz"
    key = np.array([exp.model, exp.corpus, str(exp.max_documents), str(len(docs))])
    if path.is_file():
        with np.load(path) as data:
            if np.array_equal(data["key"], key):
                return data["embeddings"]
    emb = embed(subject, [d.text for d in docs], progress=progress)
    atomic_save_npz(path, embeddings=emb, key=key)
    return emb
