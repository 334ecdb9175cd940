"""Residual-stream activations at every site in ONE forward pass (nnsight).

Site names are those of :meth:`helpers.experiment.ModelSpec.site_names`:

- BERT (MiniLM): ``hidden.0`` is the embedding output, ``hidden.i`` the output
  of encoder layer ``i-1``; they equal ``output_hidden_states`` of transformers.
- GPT-2: ``blocks.{L}.hook_resid_pre`` is the residual stream entering block
  ``L``, made equal to TransformerLens' ``hook_resid_pre`` with processed
  weights (``fold_ln`` and ``center_writing_weights``), which is what the
  ``gpt2-small-res-jb`` SAEs were trained on: the Hugging Face residual stream
  minus its mean over ``d_model`` for each token (proved in
  ``tests/test_capture.py`` against TransformerLens).

The trace stops right after the last site asked for: later layers never run.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError
from .models import Subject


def _site_value(envoy, family: str, site: str):
    """The nnsight proxy of a site's activation."""
    if family == "bert":
        index = int(site.split(".")[1])
        if index == 0:
            return envoy.embeddings.output
        return envoy.encoder.layer[index - 1].output
    if family == "gpt2":
        layer = int(site.split(".")[1])
        body = envoy.transformer if hasattr(envoy, "transformer") else envoy
        return body.h[layer].input
    raise ConfigError(f"unknown model family {family!r}")


def _postprocess(family: str, value: torch.Tensor) -> torch.Tensor:
    if family == "gpt2":
        # center_writing_weights: TransformerLens' residual stream has zero mean over d_model
        return value - value.mean(dim=-1, keepdim=True)
    return value


def trace_inputs(subject, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict:
    """The keyword arguments of ``subject.model.trace``, on the subject's device."""
    kwargs = {"input_ids": input_ids.to(subject.device)}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(subject.device)
    return kwargs


def capture_residuals(
    subject: Subject,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    sites: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """``{site: [batch, seq, d_model]}`` for every site, from one forward pass.

    Runs under ``torch.no_grad()`` on the subject's device; stops after the last site.
    """
    import nnsight

    available = subject.spec.site_names()
    sites = list(available if sites is None else sites)
    unknown = [s for s in sites if s not in available]
    if unknown:
        raise ConfigError(
            f"model {subject.spec.name!r} has no site(s) {unknown}: choose among {list(available)}"
        )
    if not sites:
        raise ConfigError("no sites asked for")
    # nnsight requires modules to be read in forward order
    ordered = [s for s in available if s in sites]
    family = subject.spec.family
    model = subject.model
    with torch.no_grad():
        with model.trace(**trace_inputs(subject, input_ids, attention_mask)) as tracer:
            saved = nnsight.save([_site_value(model, family, s) for s in ordered])
            tracer.stop()
    by_site = {s: _postprocess(family, v) for s, v in zip(ordered, saved)}
    return {s: by_site[s] for s in sites}


def flatten_tokens(acts: dict[str, torch.Tensor], token_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Keep the counted tokens only: ``{site: [n_tokens, d_model]}``."""
    mask = token_mask.to(next(iter(acts.values())).device)
    return {site: a[mask] for site, a in acts.items()}
