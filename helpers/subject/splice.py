"""Loss recovered: the next-token loss of a causal LM with an SAE's reconstruction spliced in.

As SAELens and SAEBench report it: the cross-entropy of the next token with the
site's activation replaced by the SAE's reconstruction (``CE_spliced``), against
the clean model (``CE_clean``) and the site zero-ablated (``CE_zero``)::

    loss recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean)   (x 100 %)

The splice and the ablation touch the counted (content) tokens only: the BOS
token and padding keep their activation, since the SAEs never saw them in
training (sae_lens' evaluations exclude special tokens the same way). The loss
is averaged over every position whose next token is a counted token. A centred
subject (``Subject.centered``) is reconstructed in centred coordinates and the
token's mean is added back.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Mapping

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from .capture import block_path, parse_site
from .corpus import TokenBatch
from .models import Subject


def _block(subject: Subject, site: str) -> tuple[torch.nn.Module, str]:
    layer, kind = parse_site(site)
    node = subject.hf_model
    for part in block_path(subject.hf_model, subject.spec).split("."):
        node = getattr(node, part)
    return node[layer], kind


def reconstruct(sae, x: torch.Tensor, centered: bool) -> torch.Tensor:
    """``sae.decode(sae.encode(x))`` in the stream's coordinates (centring undone)."""
    mean = x.mean(-1, keepdim=True) if centered else 0.0
    xc = (x - mean).to(sae.W_enc.dtype)
    return (sae.decode(sae.encode(xc)).to(x.dtype) + mean)


@contextmanager
def replaced(subject: Subject, site: str, mask: torch.Tensor, fn):
    """Within the block, the site's activation at ``mask`` ``[batch, seq]`` is ``fn(activation)``."""
    block, kind = _block(subject, site)

    def edit(h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        h[mask] = fn(h[mask])
        return h

    if kind == "post":
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (edit(output[0]), *output[1:])
            return edit(output)

        handle = block.register_forward_hook(hook)
    else:
        def pre_hook(module, args, kwargs):
            if args:
                return (edit(args[0]), *args[1:]), kwargs
            key = next(k for k in ("hidden_states", "x") if k in kwargs)
            return args, {**kwargs, key: edit(kwargs[key])}

        handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


#: rows per forward pass when scoring: a vocabulary of 262,144 makes the logits of one row of 128
#: tokens 134 MB in float32
SCORE_ROWS = 4


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, token_mask: torch.Tensor) -> tuple[float, int]:
    """Summed cross-entropy of every next token that is a counted token, and how many there are."""
    target = input_ids[:, 1:].to(logits.device)
    keep = token_mask[:, 1:].to(logits.device)
    nll = torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), target[keep], reduction="sum")
    return float(nll), int(keep.sum())


@torch.no_grad()
def loss_recovered(subject: Subject, saes: Mapping[str, object], batches: Iterable[TokenBatch],
                   progress: bool = False, clean: "tuple[float, int] | None" = None) -> dict[str, dict[str, float]]:
    """Per site: ``ce_clean``, ``ce_spliced``, ``ce_zero`` (nats per token) and
    ``loss_recovered`` (%), over the counted next tokens of ``batches`` (one forward pass of the
    whole model per row chunk, site and variant, plus the clean one: a progress bar in tokens).
    ``clean``: the clean model's summed loss and next-token count on these batches
    (:func:`clean_loss`), when already known: its forward passes are then skipped."""
    if not subject.spec.causal:
        raise ConfigError(f"loss recovered needs a causal LM: {subject.spec.name!r} predicts no next token")
    model = subject.hf_model
    sums = {"clean": [0.0, 0] if clean is None else [float(clean[0]), int(clean[1])]}
    sums |= {(s, w): [0.0, 0] for s in saes for w in ("spliced", "zero")}

    def run(ids, attention, counted, key) -> None:
        out = model(input_ids=ids, attention_mask=attention)
        loss, n = next_token_loss(out.logits, ids, counted)
        sums[key][0] += loss
        sums[key][1] += n

    n_batches = 0
    batches = list(batches)
    bar = tqdm(total=sum(b.n_tokens for b in batches), desc="loss recovered", unit="tok",
               disable=not progress)
    for batch in batches:
        n_batches += 1
        for lo in range(0, batch.input_ids.shape[0], SCORE_ROWS):
            ids, attention, counted = (t[lo : lo + SCORE_ROWS].to(subject.device) for t in
                                       (batch.input_ids, batch.attention_mask, batch.token_mask))
            if clean is None:
                run(ids, attention, counted, "clean")
            for site, sae in saes.items():
                with replaced(subject, site, counted, lambda h, sae=sae: reconstruct(sae, h, subject.centered)):
                    run(ids, attention, counted, (site, "spliced"))
                with replaced(subject, site, counted, torch.zeros_like):
                    run(ids, attention, counted, (site, "zero"))
            bar.update(int(counted.sum()))
    bar.close()
    if n_batches == 0 or sums["clean"][1] == 0:
        raise ConfigError("no next tokens to score: give batches with at least two content tokens a row")
    ce = {k: total / n for k, (total, n) in sums.items()}
    report = {}
    for site in saes:
        clean, spliced, zero = ce["clean"], ce[(site, "spliced")], ce[(site, "zero")]
        report[site] = {
            "ce_clean": clean,
            "ce_spliced": spliced,
            "ce_zero": zero,
            "loss_recovered": 100.0 * (zero - spliced) / (zero - clean) if zero != clean else float("nan"),
            "ce_tokens": sums["clean"][1],
        }
    return report


@torch.no_grad()
def clean_loss(subject: Subject, batches: Iterable[TokenBatch]) -> tuple[float, int]:
    """The clean model's summed next-token loss and the number of counted next tokens over ``batches``,
    row chunk by row chunk as :func:`loss_recovered` runs them (its ``clean``)."""
    total, count = 0.0, 0
    for batch in batches:
        for lo in range(0, batch.input_ids.shape[0], SCORE_ROWS):
            ids, attention, counted = (t[lo : lo + SCORE_ROWS].to(subject.device) for t in
                                       (batch.input_ids, batch.attention_mask, batch.token_mask))
            loss, n = next_token_loss(subject.hf_model(input_ids=ids, attention_mask=attention).logits, ids, counted)
            total += loss
            count += n
    return total, count

