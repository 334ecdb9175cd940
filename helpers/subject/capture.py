"""Residual-stream activations at every site in ONE forward pass (nnsight).

Site names are those of :meth:`helpers.experiment.ModelSpec.site_names`:

- BERT (MiniLM): ``hidden.0`` is the embedding output, ``hidden.i`` the output
  of encoder layer ``i-1``; they equal ``output_hidden_states`` of transformers.
- causal LMs (every family of :data:`helpers.experiment.FAMILIES`):
  ``blocks.{L}.hook_resid_pre`` is the input of block ``L`` and
  ``blocks.{L}.hook_resid_post`` its output, read from the Hugging Face model,
  which equal TransformerLens' hooks of the same names for a model loaded
  without weight processing (what sae_lens trains and evaluates on). When the
  experiment asks for ``center_writing_weights`` (``Subject.centered``, as
  ``gpt2-small-res-jb`` does), the residual stream is centred per token: the
  Hugging Face residual stream minus its mean over ``d_model`` equals
  TransformerLens' with processed weights (proved in
  ``tests/subject/test_capture.py`` and ``tests/subject/test_families.py``).

The trace stops right after the last site asked for: later layers never run.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

from ..errors import ConfigError
from ..experiment import base_site
from .models import Subject

_SITE = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


def parse_site(site: str) -> tuple[int, str]:
    """``blocks.{L}.hook_resid_{pre,post}`` -> ``(L, "pre"|"post")`` (of a width site or a seed twin:
    its model site's)."""
    match = _SITE.match(base_site(site))
    if match is None:
        raise ConfigError(
            f"site {site!r} is not a residual-stream site: use blocks.{{L}}.hook_resid_pre or "
            "blocks.{L}.hook_resid_post"
        )
    return int(match.group(1)), match.group(2)


def block_path(hf_model, spec) -> str:
    """The attribute path of the list of blocks in ``hf_model`` (e.g. ``model.layers``)."""
    for path in spec.family_spec.blocks:
        node = hf_model
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, torch.nn.ModuleList):
            return path
    raise ConfigError(
        f"cannot find the blocks of model {spec.name!r} ({type(hf_model).__name__}) at any of "
        f"{list(spec.family_spec.blocks)}: fix the family {spec.family!r} in helpers.experiment.FAMILIES"
    )


def blocks(subject: Subject, envoy=None):
    """The nnsight envoy of the subject's list of blocks."""
    node = subject.model if envoy is None else envoy
    for part in block_path(subject.hf_model, subject.spec).split("."):
        node = getattr(node, part)
    return node


def _site_value(subject: Subject, site: str):
    """The nnsight proxy of a site's activation (raw: before any centring; a width site's or a seed
    twin's: its model site's)."""
    envoy = subject.model
    site = base_site(site)
    if subject.spec.family == "bert":
        index = int(site.split(".")[1])
        if index == 0:
            return envoy.embeddings.output
        return envoy.encoder.layer[index - 1].output
    layer, kind = parse_site(site)
    block = blocks(subject)[layer]
    return block.input if kind == "pre" else block.output


def _postprocess(centered: bool, value: torch.Tensor) -> torch.Tensor:
    if centered:
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

    Runs under ``torch.no_grad()`` on the subject's device; stops after the last site. A width
    site (``<site>@w<width>``, :func:`~helpers.experiment.base_site`) is its model site, read once
    for all its widths.
    """
    import nnsight

    available = subject.spec.site_names()
    sites = list(available if sites is None else sites)
    unknown = [s for s in sites if base_site(s) not in available]
    if unknown:
        raise ConfigError(
            f"model {subject.spec.name!r} has no site(s) {unknown}: choose among {list(available)}"
        )
    if not sites:
        raise ConfigError("no sites asked for")
    # nnsight requires modules to be read in forward order
    bases = {base_site(s) for s in sites}
    ordered = [s for s in available if s in bases]
    model = subject.model
    with torch.no_grad():
        with model.trace(**trace_inputs(subject, input_ids, attention_mask)) as tracer:
            saved = nnsight.save([_site_value(subject, s) for s in ordered])
            tracer.stop()
    by_site = {s: _postprocess(subject.centered, v) for s, v in zip(ordered, saved)}
    return {s: by_site[base_site(s)] for s in sites}


def flatten_tokens(acts: dict[str, torch.Tensor], token_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Keep the counted tokens only: ``{site: [n_tokens, d_model]}``."""
    mask = token_mask.to(next(iter(acts.values())).device)
    return {site: a[mask] for site, a in acts.items()}
