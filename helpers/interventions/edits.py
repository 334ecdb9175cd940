"""Interventions on SAE features during an nnsight trace: steering, clamping, ablation.

Every edit works in the SAE's feature space and keeps the SAE's reconstruction
error: changing the codes ``f -> f'`` adds ``sae.decode(f') - sae.decode(f)`` to the
residual stream and nothing else, so every other feature's contribution is unchanged.
For one feature ``a`` changed by ``d`` that is ``d * W_dec[a]`` for an SAE with unit
decoder rows and no input normalisation, and in general what
:func:`helpers.subject.decode.decode_delta` gives (decoder norm, normalisation scale).

- ``add``: add ``value`` to the feature (steering with ``k x max_activation``);
- ``clamp``: set the feature to ``value`` (e.g. 5x or 10x its maximum, or negative);
- ``ablate``: set it to 0.

:func:`run_with_edits` applies a (possibly different) edit to every row of a
batch in one forward pass, so that measuring thousands of cross-layer edges costs
thousands of rows, not thousands of passes (:func:`edge_effects`).

When the subject's residual stream is centred (GPT-2 with
``center_writing_weights``, see :mod:`helpers.subject.capture`), the edit is added
to the Hugging Face residual stream, which differs only by its per-token mean,
which the next LayerNorm removes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..subject.capture import _postprocess, _site_value, blocks, parse_site, trace_inputs
from ..errors import ConfigError
from ..experiment import base_site
from ..subject.models import Subject
from ..subject.decode import decode_delta, decoder_scale

MODES = ("add", "clamp", "ablate")


@dataclass(frozen=True)
class Edit:
    """Change one feature of one site: ``mode`` in ``add``, ``clamp``, ``ablate``."""

    site: str
    feature: int
    mode: str = "ablate"
    value: float = 0.0
    #: token positions to edit (None: every position)
    positions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown edit mode {self.mode!r}: choose one of {MODES}")
        if not math.isfinite(self.value):
            raise ConfigError(f"edit value {self.value!r} is not finite: give a finite steering strength")


def _editable(subject: Subject, site: str):
    """The nnsight proxy whose value is the residual stream at ``site``, editable in place."""
    producer = _producer(subject, site)
    return _site_value(subject, site) if producer is None else producer.output


def _modules_before(subject: Subject, site: str) -> list:
    """The blocks that run before ``site``'s producing module (each can be skipped)."""
    envoy = subject.model
    site = base_site(site)
    if subject.spec.family == "bert":
        index = int(site.split(".")[1])
        return [envoy.encoder.layer[i] for i in range(max(0, index - 1))]
    layer, kind = parse_site(site)
    last = layer if kind == "post" else layer - 1  # the producing block
    body = blocks(subject)
    return [body[i] for i in range(max(0, last))]


def _producer(subject: Subject, site: str):
    """The module whose output is the residual stream at ``site`` (None: the input of block 0
    when no module outputs it, e.g. Gemma scales the embeddings inside the model's forward)."""
    envoy = subject.model
    site = base_site(site)
    if subject.spec.family == "bert":
        index = int(site.split(".")[1])
        return envoy.embeddings if index == 0 else envoy.encoder.layer[index - 1]
    layer, kind = parse_site(site)
    body = blocks(subject)
    if kind == "post":
        return body[layer]
    if layer > 0:
        return body[layer - 1]
    if subject.spec.family == "gpt2":
        return (envoy.transformer if hasattr(envoy, "transformer") else envoy).drop
    return None


def check_edit(subject: Subject, saes: dict[str, Any], edit: Edit) -> None:
    if edit.site not in subject.spec.site_names():
        raise ConfigError(
            f"model {subject.spec.name!r} has no site {edit.site!r}: choose among {list(subject.spec.site_names())}"
        )
    if edit.site not in saes:
        raise ConfigError(f"no SAE given for site {edit.site!r}")
    width = saes[edit.site].cfg.d_sae
    if not 0 <= edit.feature < width:
        raise ConfigError(f"feature {edit.feature} is out of range for site {edit.site!r} (0..{width - 1})")


def feature_delta(sae, x: torch.Tensor, centered: bool, features: torch.Tensor, modes: Sequence[str],
                  values: torch.Tensor, position_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The residual-stream change ``[B, T, d]`` of one feature edit per row.

    ``features``/``values`` are ``[B]``; ``position_mask`` ``[B, T]`` limits the edit.
    """
    xs = _postprocess(centered, x)
    f = sae.encode(xs.to(sae.W_enc.dtype))  # [B, T, F]
    rows = torch.arange(x.shape[0], device=x.device)
    current = f[rows, :, features]  # [B, T]
    target = torch.empty_like(current)
    for r, mode in enumerate(modes):
        if mode == "add":
            target[r] = current[r] + values[r]
        elif mode == "clamp":
            target[r] = values[r]
        else:
            target[r] = 0.0
    change = target - current
    if position_mask is not None:
        change = change * position_mask
    return decode_delta(sae, features, change, decoder_scale(sae, xs)).to(x.dtype)


def run_with_edits(
    subject: Subject,
    saes: dict[str, Any],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    edits: Sequence[Edit | None] | None = None,
    read_sites: Sequence[str] = (),
    logits: bool = False,
    delta: torch.Tensor | None = None,
    delta_site: str | None = None,
    resume_from: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One forward pass; row ``r`` gets ``edits[r]`` (None: untouched). All edits share one site.

    Instead of feature edits, ``delta`` (``[B, T, d]``) may be added as it is at
    ``delta_site``: a steering vector, a random control, or edits whose change is
    already known (which saves encoding the edited site inside the pass).

    ``resume_from`` (with ``delta``): the unedited residual stream at ``delta_site``
    (raw, as :func:`raw_site` reads it). The blocks before the site are then skipped
    (``nnsight`` ``skip``) and the pass starts from ``resume_from + delta``: copies
    of one text that differ only in their edit share everything before the site.

    Returns ``{site: activations [B, T, d]}`` for ``read_sites`` (after the edit) and,
    with ``logits=True``, ``{"logits": [B, T, vocab]}`` (causal LMs).
    """
    import nnsight

    b = input_ids.shape[0]
    order = list(subject.spec.site_names())
    if delta is not None:
        if edits is not None or delta_site not in order:
            raise ConfigError(
                f"a delta needs delta_site, one of {order}, and no edits (got {delta_site!r})"
            )
        edit_site = delta_site
    else:
        edits = [None] * b if edits is None else edits
        if len(edits) != b:
            raise ConfigError(f"{len(edits)} edits for {b} rows: give one edit (or None) per row")
        real = [e for e in edits if e is not None]
        sites = {e.site for e in real}
        if len(sites) > 1:
            raise ConfigError(f"edits at several sites {sorted(sites)} in one pass: group them by site")
        for e in real:
            check_edit(subject, saes, e)
        edit_site = next(iter(sites)) if sites else None
    for s in read_sites:
        if s not in order:
            raise ConfigError(f"model {subject.spec.name!r} has no site {s!r}")
        if edit_site is not None and order.index(s) <= order.index(edit_site):
            raise ConfigError(f"read site {s!r} must come after the edited site {edit_site!r}")
    if resume_from is not None and delta is None:
        raise ConfigError("resume_from needs a delta (the edit to apply at delta_site)")
    if logits and not subject.spec.causal:
        raise ConfigError(f"model {subject.spec.name!r} is not a causal LM: it has no next-token logits")
    device = subject.device
    kwargs = trace_inputs(subject, input_ids, attention_mask)
    if edit_site is not None and delta is None:
        sae = saes[edit_site]
        features = torch.tensor([e.feature if e else 0 for e in edits], device=device)
        values = torch.tensor([e.value if e else 0.0 for e in edits], device=device)
        modes = [e.mode if e else "add" for e in edits]  # "add 0" leaves a row untouched
        t = input_ids.shape[1]
        pmask = torch.ones(b, t, device=device)
        for r, e in enumerate(edits):
            if e is not None and e.positions is not None:
                pmask[r] = 0
                pmask[r, list(e.positions)] = 1
    model = subject.model
    with torch.no_grad():
        with model.trace(**kwargs) as tracer:
            if resume_from is not None and _producer(subject, edit_site) is not None:
                for block in _modules_before(subject, edit_site):
                    block.skip(block.input)  # never runs: its output is replaced below
                _producer(subject, edit_site).skip((resume_from + delta).to(resume_from.dtype))
            elif edit_site is not None:
                x = _editable(subject, edit_site)
                if delta is None:
                    x[:] += feature_delta(sae, x, subject.centered, features, modes, values, pmask)
                else:
                    x[:] += delta.to(x.dtype)
            saved = nnsight.save([_site_value(subject, s) for s in read_sites])
            if logits:
                out_logits = nnsight.save(model.lm_head.output)
            elif read_sites:
                tracer.stop()
    result = {s: _postprocess(subject.centered, v) for s, v in zip(read_sites, saved)}
    if logits:
        result["logits"] = out_logits
    return result


@torch.no_grad()
def raw_site(subject: Subject, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, site: str) -> torch.Tensor:
    """The residual stream at ``site`` exactly as the model carries it (GPT-2: not centred)."""
    import nnsight

    with subject.model.trace(**trace_inputs(subject, input_ids, attention_mask)) as tracer:
        value = nnsight.save(_editable(subject, site))
        tracer.stop()
    return value


def generate(
    subject: Subject,
    saes: dict[str, Any],
    prompt: str,
    max_new_tokens: int = 10,
    edit: Edit | None = None,
) -> str:
    """Greedy generation; ``edit`` applies at every position of every step (prompt and new tokens)."""
    if not subject.spec.causal:
        raise ConfigError(
            f"model {subject.spec.name!r} cannot generate (it is not a causal LM): steer a causal model such as GPT-2"
        )
    if max_new_tokens <= 0:
        raise ConfigError(f"max_new_tokens={max_new_tokens} must be > 0")
    tok = subject.tokenizer
    ids = torch.tensor([list(subject.special_tokens.prefix) + tok(prompt, add_special_tokens=False)["input_ids"]])
    start = ids.shape[1]
    for _ in range(max_new_tokens):
        out = run_with_edits(subject, saes, ids, None, [edit], logits=True)
        nxt = out["logits"][0, -1].argmax().view(1, 1).cpu()
        ids = torch.cat([ids, nxt], dim=1)
    return tok.decode(ids[0, start:])


@torch.no_grad()
def edge_effects(
    subject: Subject,
    saes: dict[str, Any],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_mask: torch.Tensor,
    site_a: str,
    site_b: str,
    edges: Sequence[tuple[int, int]],
    rows_per_pass: int = 256,
) -> torch.Tensor:
    """Causal effect of each edge ``(a, b)``: ablate feature ``a`` at ``site_a`` and measure the
    mean change of feature ``b`` at ``site_b`` over the counted tokens of the text batch.

    Each distinct upstream feature gets one ablated copy of the text, whose pass yields every
    downstream feature at once; copies go through batched forward passes that start at
    ``site_a`` (the blocks before it are skipped: every copy shares them). Returns ``[n_edges]``.
    """
    n_rows = input_ids.shape[0]
    for a, b in edges:
        check_edit(subject, saes, Edit(site_a, a))
        check_edit(subject, saes, Edit(site_b, b))
    clean = run_with_edits(subject, saes, input_ids, attention_mask, None, [site_a, site_b])
    raw_a = raw_site(subject, input_ids, attention_mask, site_a)
    sae_a, sae_b = saes[site_a], saes[site_b]
    # the ablated features' activations on the clean text: the same for every copy
    f_a = sae_a.encode(clean[site_a].to(sae_a.W_enc.dtype))  # [n, T, F]
    scale_a = decoder_scale(sae_a, clean[site_a])  # [n, T, 1] or None
    f_b_clean = sae_b.encode(clean[site_b].to(sae_b.W_enc.dtype))
    mask = token_mask.to(subject.device).float()
    # one ablated copy of the text per distinct upstream feature serves all of its edges
    ups = sorted({a for a, _ in edges})
    slot = {a: j for j, a in enumerate(ups)}
    edge_up = torch.tensor([slot[a] for a, _ in edges], device=subject.device)
    edge_down = torch.tensor([b for _, b in edges], device=subject.device)
    effects = torch.zeros(len(edges), device=subject.device)
    per_pass = max(1, rows_per_pass // n_rows)
    for start in range(0, len(ups), per_pass):
        chunk = torch.tensor(ups[start : start + per_pass], device=subject.device)
        k = len(chunk)
        # ablation = subtract each upstream feature's contribution: [k, n, T, d]
        delta = decode_delta(sae_a, chunk, -f_a[:, :, chunk].permute(2, 0, 1), scale_a)
        ids = input_ids.repeat(k, 1)
        am = attention_mask.repeat(k, 1) if attention_mask is not None else None
        after = run_with_edits(subject, saes, ids, am, None, [site_b], delta_site=site_a,
                               delta=delta.reshape(k * n_rows, *delta.shape[2:]),
                               resume_from=raw_a.repeat(k, 1, 1))[site_b]
        f_after = sae_b.encode(after.to(sae_b.W_enc.dtype)).view(k, n_rows, after.shape[1], -1)
        mine = (edge_up >= start) & (edge_up < start + k)
        e_idx = torch.nonzero(mine).flatten()
        diff = f_after[edge_up[e_idx] - start, :, :, edge_down[e_idx]] - f_b_clean[:, :, edge_down[e_idx]].permute(2, 0, 1)
        effects[e_idx] = (diff * mask).sum((1, 2)) / mask.sum()
    return effects.cpu()


@torch.no_grad()
def edge_effects_one_at_a_time(subject, saes, input_ids, attention_mask, token_mask, site_a, site_b, edges):
    """The baseline: one forward pass per edge (same result as :func:`edge_effects`)."""
    n_rows = input_ids.shape[0]
    clean = run_with_edits(subject, saes, input_ids, attention_mask, [None] * n_rows, [site_b])[site_b]
    f_clean = saes[site_b].encode(clean.to(saes[site_b].W_enc.dtype))
    mask = token_mask.to(subject.device).float()
    out = []
    for a, b in edges:
        after = run_with_edits(subject, saes, input_ids, attention_mask,
                               [Edit(site_a, a, "ablate")] * n_rows, [site_b])[site_b]
        f = saes[site_b].encode(after.to(saes[site_b].W_enc.dtype))
        out.append(float(((f[..., b] - f_clean[..., b]) * mask).sum() / mask.sum()))
    return torch.tensor(out)
