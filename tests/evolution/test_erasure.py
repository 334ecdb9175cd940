"""The change of a feature's read-out across a block splits exactly into its heads, neurons and remainder."""

from __future__ import annotations

import pytest
import torch

from helpers.errors import ConfigError
from helpers.evolution.erasure import block_writes, erasure_sums, readout_change


@pytest.fixture(scope="module")
def gemma_subject(tiny_tokenizer):
    from helpers.experiment import MODELS
    from helpers.subject.models import wrap

    from ..conftest import make_gemma3_270m_shaped

    return wrap(make_gemma3_270m_shaped(tiny_tokenizer), tiny_tokenizer, MODELS["google/gemma-3-270m"],
                torch.device("cpu"))


@pytest.fixture(scope="module")
def batch(gemma_subject, wiki_docs):
    tok = gemma_subject.tokenizer
    enc = tok([tok.bos_token + d.text[:80] for d in wiki_docs[:3]], return_tensors="pt", padding=True)
    mask = enc["attention_mask"].bool().clone()
    mask[:, 0] = False
    return enc["input_ids"], enc["attention_mask"], mask


def _sae(seed=0, d=640, width=48):
    from ..stats.test_collect import random_topk_saes

    return random_topk_saes(("blocks.4.hook_resid_post",), d_in=d, width=width, k=6, seed=seed)[
        "blocks.4.hook_resid_post"]


def test_the_parts_sum_to_the_change_of_the_readout(gemma_subject, batch):
    from helpers.subject.capture import capture_residuals

    ids, am, mask = batch
    sae = _sae()
    writes = block_writes(gemma_subject, 5, ids, am, mask)
    feats = torch.tensor([0, 3, 17, 40])
    parts = readout_change(gemma_subject, sae, 5, feats, writes)
    # the total is the read-out at resid_post 5 minus at resid_post 4, computed from the model's own sites
    acts = capture_residuals(gemma_subject, ids, am, ["blocks.4.hook_resid_post", "blocks.5.hook_resid_post"])
    x4, x5 = acts["blocks.4.hook_resid_post"][mask], acts["blocks.5.hook_resid_post"][mask]
    pre = lambda x: (x - sae.b_dec) @ sae.W_enc[:, feats] + sae.b_enc[feats]  # noqa: E731
    torch.testing.assert_close(parts["total"], pre(x5) - pre(x4), rtol=1e-4, atol=1e-3)
    # heads and neurons together are the whole change (Gemma's blocks have no biases)
    scale = parts["total"].abs().max()
    assert parts["remainder"].abs().max() <= 1e-4 * scale
    assert parts["heads"].shape[-1] == 2 and parts["neurons"].shape[-1] == 64
    assert parts["heads"].abs().sum() > 0 and parts["neurons"].abs().sum() > 0  # the check has teeth
    # the sums over firing tokens equal the per-token parts summed
    fires = torch.zeros(parts["total"].shape, dtype=torch.bool)
    fires[::2, 0] = True
    fires[1::3, 2] = True
    sums = erasure_sums(gemma_subject, sae, 5, feats, writes, fires)
    w = fires.float()
    torch.testing.assert_close(sums["total"], (parts["total"] * w).sum(0), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(sums["heads"], (parts["heads"] * w[..., None]).sum(0), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(sums["neurons"], (parts["neurons"] * w[..., None]).sum(0), rtol=1e-4, atol=1e-3)
    assert sums["tokens"].tolist() == w.sum(0).tolist()


def test_plain_llama_blocks_split_too(tiny_llama_dir, wiki_docs):
    """A Llama block writes o_proj and down_proj straight into the stream (no sandwich norms)."""
    from helpers.experiment import get_experiment
    from helpers.subject.capture import capture_residuals
    from helpers.subject.models import load_subject

    exp = get_experiment("gemma").replace(name="llama", model=str(tiny_llama_dir), sites=(
        "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"), device="cpu")
    subject = load_subject(exp)
    tok = subject.tokenizer
    enc = tok([tok.bos_token + d.text[:60] for d in wiki_docs[:2]], return_tensors="pt", padding=True)
    mask = enc["attention_mask"].bool().clone()
    mask[:, 0] = False
    sae = _sae(seed=5, d=exp.model_spec.d_model)
    writes = block_writes(subject, 1, enc["input_ids"], enc["attention_mask"], mask)
    assert torch.equal(writes.attn_scale, torch.ones_like(writes.attn_scale))
    parts = readout_change(subject, sae, 1, torch.arange(10), writes)
    acts = capture_residuals(subject, enc["input_ids"], enc["attention_mask"], list(exp.sites))
    pre = lambda x: x @ sae.W_enc[:, :10]  # noqa: E731 - the change: biases cancel
    want = pre(acts[exp.sites[1]][mask]) - pre(acts[exp.sites[0]][mask])
    torch.testing.assert_close(parts["total"], want, rtol=1e-4, atol=1e-4)
    assert parts["remainder"].abs().max() <= 1e-4 * parts["total"].abs().max()


def test_other_families_are_refused_in_one_line(tiny_gpt2, batch):
    ids, am, mask = batch
    with pytest.raises(ConfigError, match="erasure decomposition reads Gemma- and Llama-style blocks, not 'gpt2'"):
        block_writes(tiny_gpt2, 1, ids[:, :4].clamp_max(100), am[:, :4], mask[:, :4])
