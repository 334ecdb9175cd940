"""Steering a writing model: generation with features edited at one site or several, and what it costs.

A feature is steered during greedy generation from neutral prompts, in one of the forms of
:class:`~helpers.interventions.edits.Edit`: ``add`` ``k x`` its maximum activation (its
decoder direction, scaled) or ``clamp`` it at ``k x`` its maximum, at every position after
the special prefix (BOS), prompt and new tokens alike. The residual-stream change of every
edit comes from :func:`~helpers.interventions.edits.feature_delta`, so it is the SAE's own.
The control replaces that change, token by token, by a fixed random direction of the same
norm (:func:`control_delta`). A row may carry edits at several sites (a lineage,
:mod:`.lineage_steering`): each is applied at its own site in the same pass, in forward order,
and its control draws one random direction per site.

Generation keeps a KV cache and batches every prompt and condition into one set of rows
(left-padded, with explicit positions), and reads the logits of the last position only: on
Gemma 3 270M each new token costs one 640 x 262,144 unembedding, not one per position.

Three measures, per condition (:func:`steering_sweep`, :func:`steering_summary`):

- **effect**: the gain in log-probability that the next token is one of the feature's own
  top tokens (its direct logit effect through the unembedding, as the explorer lists them,
  :func:`~helpers.explore.pages.effect_tokens`), averaged over the next-token distributions
  along the generation, against the unsteered generation of the same prompt;
- **firing**: the share of generated tokens on which the feature fires when the generated
  text is re-read by the unsteered model and encoded by the SAE at the site;
- **cost**: the perplexity of the generated tokens under the unsteered model. A text that
  degenerates into one repeated token is predictable in its own context, so its perplexity
  falls again: the share of distinct tokens in each text tells the two apart.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np
import torch

from ..errors import ConfigError
from ..subject.capture import _postprocess, _site_value, parse_site
from ..subject.models import Subject
from .edits import Edit, _editable, check_edit, feature_delta
from .embeddings import random_like

#: the forms of steering a sweep may use (``ablate`` is ``clamp`` at strength 0)
STEER_MODES = ("add", "clamp")


@dataclass(frozen=True)
class SteeringConfig:
    """What :func:`steering_sweep` generates and measures."""

    #: neutral prompts to continue
    prompts: tuple[str, ...] = (
        "I am a", "My favourite place is", "The best thing about it is",
        "Yesterday we went to", "Here is a short story:",
    )
    #: steering strengths ``k``, in multiples of the feature's maximum activation (on Gemma 3
    #: 270M the text stays fluent up to about 1x and degenerates into repetition from 5x)
    strengths: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
    #: forms of steering: ``add`` (decoder direction x k x max) and/or ``clamp`` (at k x max)
    modes: tuple[str, ...] = STEER_MODES
    #: tokens generated per prompt (greedy)
    new_tokens: int = 20
    #: the feature's top tokens (direct logit effect) whose log-probability is measured
    top_tokens: int = 10
    #: seed of the random control direction (plus the feature index)
    seed: int = 0
    #: rows (prompt x condition) generated together: one next-token distribution each per step
    batch_rows: int = 48
    #: rows re-read together by the unsteered model: ``new_tokens + 1`` distributions each
    score_rows: int = 8

    def __post_init__(self) -> None:
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise ConfigError("steering needs at least one non-empty prompt: set SteeringConfig(prompts=...)")
        bad = [m for m in self.modes if m not in STEER_MODES]
        if bad or not self.modes:
            raise ConfigError(f"steering modes {list(self.modes)}: choose among {list(STEER_MODES)}")
        if not self.strengths or not all(math.isfinite(k) and k >= 0 for k in self.strengths):
            raise ConfigError(f"steering strengths {list(self.strengths)} must be finite and >= 0")
        for name in ("new_tokens", "top_tokens", "batch_rows", "score_rows"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"SteeringConfig.{name}={getattr(self, name)} must be > 0")


@dataclass
class Generation:
    """Greedy generations, one per row: ``ids`` = left-padded prompt + ``n_new`` new tokens."""

    ids: torch.Tensor  # [R, T] token ids (padding on the left)
    mask: torch.Tensor  # [R, T] 1 on real tokens
    n_new: int
    #: [R, n_new] log P(next token in the watched set) at each step (None: nothing watched)
    watch_logprob: torch.Tensor | None
    #: [R, T - 1] the edited feature's activation at the site after the edit, at every position
    #: that went through the model (the last new token never does); NaN on rows without exactly
    #: one edit (:attr:`site_act` holds each site's)
    edited_act: torch.Tensor
    #: [R, T - 1] the norm of the change added to the residual stream at each position, summed
    #: over the row's sites
    delta_norm: torch.Tensor
    #: per edited site, [R, T - 1]: the row's edited feature there after the edit (NaN on rows
    #: without an edit at that site)
    site_act: dict[str, torch.Tensor] = field(default_factory=dict)
    #: per edited site, [R, T - 1]: the norm of the change added there (0 on rows without one)
    site_delta_norm: dict[str, torch.Tensor] = field(default_factory=dict)

    def new_ids(self) -> torch.Tensor:
        return self.ids[:, -self.n_new:]

    def texts(self, tokenizer) -> list[str]:
        """The generated continuations (special tokens dropped)."""
        return tokenizer.batch_decode(self.new_ids(), skip_special_tokens=True)


def control_delta(delta: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``delta`` ``[..., d]`` with every vector turned to ``direction``, keeping its norm."""
    unit = direction / direction.norm()
    return delta.norm(dim=-1, keepdim=True) * unit.to(delta.dtype)


def _cache_kwarg(hf_model) -> str:
    """The forward keyword of the KV cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"


def _new_cache(hf_model):
    from transformers import DynamicCache

    return DynamicCache(config=hf_model.config)


def _tokenize_left(subject: Subject, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts with the special prefix, left-padded: ``(ids, mask, steerable)`` ``[R, P]``."""
    special = subject.special_tokens
    body = subject.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    rows = [list(special.prefix) + b for b in body]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), special.pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    steer = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
        steer[i, width - len(r) + len(special.prefix):] = 1
    return ids, mask, steer


#: what one row of a steered generation edits: nothing, one edit, or edits at several sites
RowEdits = Union[Edit, Sequence[Edit], None]
#: the control seed of a row's j-th edited site (forward order) is ``seed + feature + j x this``
SITE_SEED_STRIDE = 1_000_003


def stream_index(subject: Subject, site: str) -> int:
    """The position of ``site``'s residual stream in the forward pass: ``blocks.L.hook_resid_pre``
    is ``L``, ``blocks.L.hook_resid_post`` is ``L + 1`` (the stream ``blocks.{L+1}.hook_resid_pre``
    names too); an encoder's ``hidden.i`` is ``i``."""
    if subject.spec.family == "bert":
        return int(site.split(".")[1])
    layer, kind = parse_site(site)
    return layer + (kind == "post")


def control_seed(seed: int, feature: int, j: int = 0) -> int:
    """The seed of the random control direction of ``feature`` at a row's ``j``-th edited site
    (forward order): ``seed + feature`` at the first, as a one-site steering has always used."""
    return int(seed) + int(feature) + j * SITE_SEED_STRIDE


def _as_edits(row: RowEdits) -> tuple[Edit, ...]:
    if row is None:
        return ()
    return (row,) if isinstance(row, Edit) else tuple(row)


def _check_rows(subject: Subject, saes, prompts, edits, controls) -> tuple[list[tuple[Edit, ...]], list[bool]]:
    """Every row's edits, in forward order of their sites, and its control flag (checked)."""
    if not subject.spec.causal:
        raise ConfigError(
            f"model {subject.spec.name!r} cannot generate (it is not a causal LM): steer a causal model"
        )
    n = len(prompts)
    if n == 0:
        raise ConfigError("no prompts to generate from")
    edits = [None] * n if edits is None else list(edits)
    controls = [False] * n if controls is None else [bool(c) for c in controls]
    if len(edits) != n or len(controls) != n:
        raise ConfigError(f"{n} prompts, {len(edits)} edits and {len(controls)} controls: give one of each per row")
    rows = []
    for row, c in zip(edits, controls):
        row = _as_edits(row)
        if c and not row:
            raise ConfigError("a control row needs the edit whose norm it copies")
        for e in row:
            if not isinstance(e, Edit):
                raise ConfigError(f"a row's edits must be Edit objects, not {type(e).__name__}")
            check_edit(subject, saes, e)
            if e.positions is not None:
                raise ConfigError("steered generation edits every position after the prefix: leave Edit.positions None")
        rows.append(tuple(sorted(row, key=lambda e: stream_index(subject, e.site))))
    streams: dict[int, str] = {}
    for e in (e for row in rows for e in row):
        other = streams.setdefault(stream_index(subject, e.site), e.site)
        if other != e.site:
            raise ConfigError(f"sites {other!r} and {e.site!r} are one residual stream: steer it under one name")
    for row in rows:
        if len({e.site for e in row}) < len(row):
            raise ConfigError(f"a row edits one site twice ({[e.site for e in row]}): give at most one edit per site")
    return rows, controls


@dataclass
class _SitePlan:
    """Every row's edit at one site: row r changes ``features[r]`` (``add 0`` where it has none)."""

    site: str
    features: torch.Tensor  # [b]
    values: torch.Tensor  # [b]
    modes: list[str]
    edited: torch.Tensor  # [b] bool
    directions: torch.Tensor  # [b, d] unit directions of the random control


def _site_plans(subject: Subject, saes, rows: list[tuple[Edit, ...]], seed: int) -> list[_SitePlan]:
    """One plan per edited site, in forward order."""
    device = subject.device
    sites = sorted({e.site for row in rows for e in row}, key=lambda s: stream_index(subject, s))
    plans = []
    for site in sites:
        sae = saes[site]
        at = [next(((j, e) for j, e in enumerate(row) if e.site == site), (0, None)) for row in rows]
        directions = torch.stack([
            random_like(sae.W_dec[e.feature].detach(), seed=control_seed(seed, e.feature, j)) if e
            else sae.W_dec[0].detach() for j, e in at
        ])
        plans.append(_SitePlan(
            site=site,
            features=torch.tensor([e.feature if e else 0 for _, e in at], device=device),
            values=torch.tensor([e.value if e else 0.0 for _, e in at], device=device),
            modes=[e.mode if e else "add" for _, e in at],  # "add 0" leaves a row untouched
            edited=torch.tensor([e is not None for _, e in at], device=device),
            directions=directions / directions.norm(dim=-1, keepdim=True),
        ))
    return plans


def _steer_site(subject: Subject, sae, plan: _SitePlan, steer: torch.Tensor, is_control: torch.Tensor):
    """Inside a trace: add the plan's change at its site; ``(edited activation, change norm)`` ``[b, t]``."""
    import nnsight

    x = _editable(subject, plan.site)
    d = feature_delta(sae, x, subject.centered, plan.features, plan.modes, plan.values, steer)
    d = torch.where(is_control, d.norm(dim=-1, keepdim=True) * plan.directions.unsqueeze(1).to(d.dtype), d)
    x[:] += d
    after = sae.encode(_postprocess(subject.centered, x).to(sae.W_enc.dtype))
    rows = torch.arange(x.shape[0], device=x.device)
    return nnsight.save(after[rows, :, plan.features]), nnsight.save(d.norm(dim=-1))


@torch.no_grad()
def generate_steered(
    subject: Subject,
    saes: dict[str, Any],
    prompts: Sequence[str],
    n_new: int,
    edits: Sequence[RowEdits] | None = None,
    controls: Sequence[bool] | None = None,
    watch: torch.Tensor | None = None,
    seed: int = 0,
) -> Generation:
    """Greedy generation of ``n_new`` tokens per row, all rows in one batch, with a KV cache.

    Row ``r`` continues ``prompts[r]`` with ``edits[r]`` (None: unsteered; one :class:`Edit`; or
    a sequence of edits at distinct sites) applied at every position after the
    special prefix, prompt and new tokens; the edits of all rows go into one pass per step, site
    by site in forward order, each computed from its site's value after the earlier sites'
    edits. With ``controls[r]`` the change at each of the row's sites is replaced by a random
    direction of the same norm at each position, seeded by :func:`control_seed` (``seed``, the
    feature and the site's rank among the row's sites). ``watch``: token ids whose total
    next-token log-probability is recorded at each step.
    """
    import nnsight

    if n_new <= 0:
        raise ConfigError(f"n_new={n_new} must be > 0")
    rows_edits, controls = _check_rows(subject, saes, prompts, edits, controls)
    device = subject.device
    ids, mask, steer = (t.to(device) for t in _tokenize_left(subject, prompts))
    b = ids.shape[0]
    hf = subject.hf_model
    cache, cache_key = _new_cache(hf), _cache_kwarg(hf)
    watch = None if watch is None else torch.as_tensor(watch, dtype=torch.long, device=device)
    plans = _site_plans(subject, saes, rows_edits, seed)
    is_control = torch.tensor(controls, device=device).view(b, 1, 1)
    step_ids, step_steer = ids, steer
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    watch_lp, acts, norms = [], {p.site: [] for p in plans}, {p.site: [] for p in plans}
    for step in range(n_new):
        kwargs = {"input_ids": step_ids, "attention_mask": mask, "position_ids": positions,
                  cache_key: cache, "use_cache": True, "logits_to_keep": 1}
        saved = []
        with subject.model.trace(**kwargs):
            for plan in plans:
                saved.append(_steer_site(subject, saes[plan.site], plan, step_steer, is_control))
            logits = nnsight.save(subject.model.output.logits)
        last = logits[:, -1].float()
        nxt = last.argmax(dim=-1)
        if watch is not None:
            watch_lp.append(torch.logsumexp(last[:, watch], dim=-1) - torch.logsumexp(last, dim=-1))
        for plan, (act, norm) in zip(plans, saved):
            acts[plan.site].append(torch.where(plan.edited.view(b, 1), act.float(), torch.nan))
            norms[plan.site].append(norm.float())
        ids = torch.cat([ids, nxt.view(b, 1)], dim=1)
        mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=device)], dim=1)
        positions = positions[:, -1:] + 1
        step_ids = nxt.view(b, 1)
        step_steer = torch.ones(b, 1, device=device)
    site_act = {s: torch.cat(a, dim=1).cpu() for s, a in acts.items()}
    site_norm = {s: torch.cat(a, dim=1).cpu() for s, a in norms.items()}
    t = ids.shape[1] - 1
    edited_act = torch.full((b, t), torch.nan)
    for r, row in enumerate(rows_edits):
        if len(row) == 1:
            edited_act[r] = site_act[row[0].site][r]
    return Generation(
        ids=ids.cpu(), mask=mask.cpu(), n_new=n_new,
        watch_logprob=torch.stack(watch_lp, dim=1).cpu() if watch is not None else None,
        edited_act=edited_act,
        delta_norm=sum(site_norm.values(), torch.zeros(b, t)),
        site_act=site_act, site_delta_norm=site_norm,
    )


@torch.no_grad()
def score_generation(subject: Subject, saes: dict[str, Any], site: str, feature: int, gen: Generation,
                     batch_rows: int = 8) -> dict[str, torch.Tensor]:
    """Re-read generated texts with the unsteered model: ``{"act", "nll"}``, each ``[R, n_new]``.

    ``act``: the feature's activation (the SAE at ``site``) on each generated token;
    ``nll``: the negative log-likelihood of each generated token under the unsteered model.
    """
    import nnsight

    check_edit(subject, saes, Edit(site, feature))
    sae, n, device = saes[site], gen.n_new, subject.device
    acts, nlls = [], []
    for lo in range(0, gen.ids.shape[0], batch_rows):
        ids = gen.ids[lo : lo + batch_rows].to(device)
        mask = gen.mask[lo : lo + batch_rows].to(device)
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                  "logits_to_keep": n + 1}
        with subject.model.trace(**kwargs):
            x = nnsight.save(_site_value(subject, site))
            logits = nnsight.save(subject.model.output.logits)
        x = _postprocess(subject.centered, x[:, -n:])
        acts.append(sae.encode(x.to(sae.W_enc.dtype))[..., feature].float().cpu())
        lg = logits[:, :n]  # position i predicts generated token i
        picked = lg.gather(-1, ids[:, -n:, None])[..., 0].float()
        norm = torch.stack([torch.logsumexp(lg[:, i].float(), dim=-1) for i in range(n)], dim=1)
        nlls.append((norm - picked).cpu())
    return {"act": torch.cat(acts), "nll": torch.cat(nlls)}


def feature_top_tokens(subject: Subject, saes: dict[str, Any], site: str, features: Sequence[int],
                       k: int = 10) -> np.ndarray:
    """``[len(features), k]``: the tokens each feature's decoder direction boosts most through
    the unembedding (its direct logit effect, as the explorer lists them)."""
    from types import SimpleNamespace

    from ..explore.pages import effect_tokens

    for f in features:
        check_edit(subject, saes, Edit(site, int(f)))
    rows = saes[site].W_dec[torch.as_tensor(list(features), dtype=torch.long)]
    return effect_tokens(subject, {site: SimpleNamespace(W_dec=rows)}, [site], k=k)["boosted"][0]


def steering_features(top: dict[str, np.ndarray], site_index: int, documents, tokenizer,
                      max_act: np.ndarray, n: int = 2) -> list[int]:
    """``n`` features to steer at a site: topical ones first (top examples from a few documents,
    a word as top token, :func:`~helpers.explore.examples.topical_features`), then the
    features with the highest maximum activation (``max_act`` ``[F]``)."""
    from ..explore.examples import topical_features

    chosen = topical_features(top, site_index, documents, tokenizer, n=n, min_docs=3, max_docs=12,
                              max_act=max_act)
    for f in np.argsort(-np.asarray(max_act), kind="stable"):
        if len(chosen) >= n or max_act[f] <= 0:
            break
        if int(f) not in chosen:
            chosen.append(int(f))
    return chosen


@dataclass
class SteeringResult:
    """One feature's sweep: every generated row with its condition and measures."""

    site: str
    feature: int
    max_activation: float
    #: the feature's top tokens (direct logit effect), as ids and as they read
    top_ids: list[int]
    top_tokens: list[str]
    config: SteeringConfig
    #: one dict per row: prompt, mode ("none" unsteered), k, control, value, text, ids (the
    #: prefix, prompt and new tokens), logprob (mean over steps of log P(next token is a top
    #: token)), gain (against the prompt's unsteered row), distinct (share of distinct tokens
    #: among the new ones), act and nll ([new_tokens] each)
    rows: list[dict[str, Any]]


def _conditions(config: SteeringConfig) -> list[tuple[str, float, bool]]:
    """``(mode, k, control)`` of every steered row; ``add`` at 0 is the unsteered row itself."""
    out = []
    for mode in config.modes:
        for k in config.strengths:
            if mode == "add" and k == 0:
                continue
            out += [(mode, float(k), False), (mode, float(k), True)]
    return out


def measured_rows(subject: Subject, saes: dict[str, Any], site: str, feature: int, top: torch.Tensor,
                  prompts: Sequence[str], edits: Sequence[RowEdits], controls: Sequence[bool],
                  config: SteeringConfig) -> list[dict[str, Any]]:
    """Generate every row (in batches of ``config.batch_rows``) watching the ``top`` tokens, re-read
    it, and measure ``feature`` at ``site``: one dict per row with prompt, text, ids (the prefix,
    prompt and new tokens), distinct, logprob, act and nll; ``gain`` against the prompt's first row
    without an edit (:func:`add_gains`)."""
    out = []
    for lo in range(0, len(prompts), config.batch_rows):
        part = slice(lo, lo + config.batch_rows)
        gen = generate_steered(subject, saes, prompts[part], config.new_tokens, edits[part], controls[part],
                               watch=top, seed=config.seed)
        scores = score_generation(subject, saes, site, feature, gen, config.score_rows)
        for i, text in enumerate(gen.texts(subject.tokenizer)):
            out.append({"prompt": prompts[lo + i], "text": text, "ids": gen.ids[i][gen.mask[i].bool()].numpy(),
                        "distinct": len(set(gen.new_ids()[i].tolist())) / config.new_tokens,
                        "logprob": float(gen.watch_logprob[i].mean()), "act": scores["act"][i].numpy(),
                        "nll": scores["nll"][i].numpy()})
    clean = {}
    for r, e in zip(out, edits):
        if not _as_edits(e):
            clean.setdefault(r["prompt"], r["logprob"])
    for r in out:
        r["gain"] = r["logprob"] - clean[r["prompt"]]
    return out


def steering_sweep(subject: Subject, saes: dict[str, Any], site: str, feature: int, max_activation: float,
                   config: SteeringConfig = SteeringConfig()) -> SteeringResult:
    """Steer ``feature`` at ``site`` with every form and strength of ``config``, and its random
    control, from every prompt; measure effect, firing and cost on each generation."""
    max_activation = float(max_activation)
    if not math.isfinite(max_activation) or max_activation <= 0:
        raise ConfigError(f"feature {feature} at {site!r} has maximum activation {max_activation}: "
                          "steer a feature that fires (max > 0)")
    check_edit(subject, saes, Edit(site, feature))
    top = torch.as_tensor(feature_top_tokens(subject, saes, site, [feature], config.top_tokens)[0])
    specs = [("none", 0.0, False)] + _conditions(config)
    rows = [(p, s) for p in config.prompts for s in specs]
    edits = [None if m == "none" else Edit(site, feature, m, k * max_activation) for _, (m, k, _) in rows]
    controls = [c for _, (_, _, c) in rows]
    out = measured_rows(subject, saes, site, feature, top, [p for p, _ in rows], edits, controls, config)
    for r, (_, (mode, k, control)) in zip(out, rows):
        r.update(mode=mode, k=k, control=control, value=k * max_activation if mode != "none" else 0.0)
    words = [subject.tokenizer.decode([t]) for t in top.tolist()]
    return SteeringResult(site, feature, float(max_activation), top.tolist(), words, config, out)


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The measures of a group of rows: mean log-prob gain of the top tokens (nats), share of
    generated tokens on which the feature fires, perplexity under the unsteered model (of all
    the group's generated tokens), mean share of distinct tokens per text."""
    act = np.concatenate([r["act"] for r in rows])
    nll = np.concatenate([r["nll"] for r in rows])
    return {"gain": float(np.mean([r["gain"] for r in rows])), "fires": float(np.mean(act > 0)),
            "perplexity": float(np.exp(nll.mean())), "distinct": float(np.mean([r["distinct"] for r in rows]))}


def steering_summary(result: SteeringResult) -> list[dict[str, Any]]:
    """One row per condition (unsteered first): mean log-prob gain of the feature's top tokens
    (nats), share of generated tokens on which it fires, perplexity under the unsteered model
    (of all the condition's generated tokens), mean share of distinct tokens per text."""
    groups: dict[tuple, list] = {}
    for r in result.rows:
        groups.setdefault((r["mode"], r["k"], r["control"]), []).append(r)
    return [{"mode": mode, "k": k, "direction": "random" if control else "feature", **summarise(rs)}
            for (mode, k, control), rs in groups.items()]


def steered_texts(result: SteeringResult, mode: str, k: float) -> list[dict[str, str]]:
    """Side by side per prompt: the unsteered continuation, the steered one and the random control."""
    by = {(r["prompt"], r["mode"], r["k"], r["control"]): r["text"] for r in result.rows}
    if mode not in result.config.modes or (mode, float(k), False) not in _conditions(result.config):
        raise ConfigError(f"no {mode!r} rows at k={k} in this sweep: choose a mode of {list(result.config.modes)} "
                          f"and a strength of {list(result.config.strengths)}")
    label = f"{mode} {k:g}x max"
    return [{"prompt": p, "unsteered": by[(p, "none", 0.0, False)], label: by[(p, mode, float(k), False)],
             "random, same norm": by[(p, mode, float(k), True)]} for p in result.config.prompts]
