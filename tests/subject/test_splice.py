"""Loss recovered equals a brute force: the splice done by nnsight, the loss by a loop over positions."""

import math

import numpy as np
import pytest
import torch

from helpers.errors import ConfigError
from helpers.subject.capture import blocks, parse_site
from helpers.subject.corpus import iter_token_batches
from helpers.subject.splice import loss_recovered, reconstruct

from ..conftest import make_random_sae


@pytest.fixture(scope="module")
def batches(tiny_gpt2, wiki_docs):
    # short rows and a small budget: the last rows are padded, so the mask matters
    return list(iter_token_batches(wiki_docs[:6], tiny_gpt2.tokenizer, tiny_gpt2.special_tokens,
                                   context_length=24, batch_size=4, token_budget=150))


def _logits(subject, batch, site=None, replace=None):
    """Logits of one batch, with the site's output set to ``replace(output)`` through nnsight."""
    import nnsight

    with torch.no_grad(), subject.model.trace(input_ids=batch.input_ids,
                                              attention_mask=batch.attention_mask):
        if site is not None:
            block = blocks(subject)[parse_site(site)[0]]
            block.output[:] = replace(block.output)
        logits = nnsight.save(subject.model.output.logits)
    return logits.double().numpy()


def _ce(logits, batch):
    """Summed next-token loss over the counted next tokens, one position at a time."""
    ids, counted = batch.input_ids.numpy(), batch.token_mask.numpy()
    total, n = 0.0, 0
    for r in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if counted[r, t + 1]:
                row = logits[r, t]
                total += math.log(np.exp(row - row.max()).sum()) + row.max() - row[ids[r, t + 1]]
                n += 1
    return total, n


def test_loss_recovered_equals_a_brute_force(tiny_gpt2, batches):
    assert tiny_gpt2.centered  # the GPT-2 family: reconstruction in centred coordinates
    site = "blocks.1.hook_resid_post"
    sae = make_random_sae(d_in=64, d_sae=96, seed=3)
    got = loss_recovered(tiny_gpt2, {site: sae}, batches)[site]
    sums = {"clean": [0.0, 0], "spliced": [0.0, 0], "zero": [0.0, 0]}
    for batch in batches:
        mask = batch.token_mask

        def spliced(h, mask=mask):
            h = h.clone()
            h[mask] = reconstruct(sae, h[mask], centered=True)
            return h

        def zero(h, mask=mask):
            h = h.clone()
            h[mask] = 0.0
            return h

        for key, logits in (("clean", _logits(tiny_gpt2, batch)),
                            ("spliced", _logits(tiny_gpt2, batch, site, spliced)),
                            ("zero", _logits(tiny_gpt2, batch, site, zero))):
            total, n = _ce(logits, batch)
            sums[key][0] += total
            sums[key][1] += n
    ce = {k: t / n for k, (t, n) in sums.items()}
    assert got["ce_tokens"] == sums["clean"][1] > 100
    for key in ("clean", "spliced", "zero"):
        assert got[f"ce_{key}"] == pytest.approx(ce[key], rel=1e-5)
    expected = 100 * (ce["zero"] - ce["spliced"]) / (ce["zero"] - ce["clean"])
    assert got["loss_recovered"] == pytest.approx(expected, rel=1e-4)
    # a random SAE reconstructs badly: the number is far from a perfect 100%
    assert got["loss_recovered"] < 99
    # the clean loss computed once and given (as training does across sites) changes nothing
    from helpers.subject.splice import clean_loss

    known = clean_loss(tiny_gpt2, batches)
    assert known[1] == sums["clean"][1] and known[0] == pytest.approx(sums["clean"][0], rel=1e-6)
    again = loss_recovered(tiny_gpt2, {site: sae}, batches, clean=known)[site]
    assert again == pytest.approx(got, rel=1e-9)


def test_a_perfect_reconstruction_recovers_all_the_loss(tiny_gpt2, batches):
    class Identity(torch.nn.Module):
        W_enc = torch.zeros(1)

        def encode(self, x):
            return x

        def decode(self, f):
            return f

    site = "blocks.2.hook_resid_pre"
    got = loss_recovered(tiny_gpt2, {site: Identity()}, batches)[site]
    assert got["ce_spliced"] == pytest.approx(got["ce_clean"], rel=1e-6)
    assert got["loss_recovered"] == pytest.approx(100.0, abs=1e-3)


def test_loss_recovered_needs_a_causal_lm_and_tokens(tiny_gpt2, batches):
    from dataclasses import replace

    encoder = replace(tiny_gpt2, spec=replace(tiny_gpt2.spec, causal=False))
    with pytest.raises(ConfigError, match="causal LM"):
        loss_recovered(encoder, {}, batches)
    with pytest.raises(ConfigError, match="no next tokens"):
        loss_recovered(tiny_gpt2, {}, [])
