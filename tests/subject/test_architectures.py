"""JumpReLU, TopK, standard (ReLU) and gated SAEs: ``encode`` follows each architecture's
formula, and the statistics pass counts a feature as firing when its encoded value is > 0."""

import numpy as np
import pytest
import torch

from helpers.experiment import PRESETS
from helpers.stats import run_pass
from helpers.subject.saes import encode

from ..conftest import ARCHITECTURES, make_random_arch_sae
from ..stats.test_collect import brute_force_check, dense_stream


def _by_formula(sae, x):
    """Each architecture's encoder written out in numpy (float64)."""
    p = {n: v.detach().double().numpy() for n, v in sae.named_parameters()}
    xin = x.double().numpy() - p["b_dec"]  # apply_b_dec_to_input
    arch = sae.cfg.architecture()
    if arch == "gated":
        gate = (xin @ p["W_enc"] + p["b_gate"]) > 0
        mag = np.maximum(xin @ (p["W_enc"] * np.exp(p["r_mag"])) + p["b_mag"], 0)
        return gate * mag
    pre = xin @ p["W_enc"] + p["b_enc"]
    if arch == "jumprelu":
        return np.maximum(pre, 0) * (pre > p["threshold"])
    if arch == "topk":
        out = np.zeros_like(pre)
        k = sae.cfg.k
        idx = np.argsort(-pre, axis=-1, kind="stable")[..., :k]
        np.put_along_axis(out, idx, np.maximum(np.take_along_axis(pre, idx, -1), 0), -1)
        return out
    return np.maximum(pre, 0)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_encode_follows_the_architecture(architecture):
    sae = make_random_arch_sae(architecture, d_in=16, d_sae=24, seed=3)
    assert sae.cfg.architecture() == architecture
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    f = encode(sae, x)
    np.testing.assert_allclose(f.double().numpy(), _by_formula(sae, x), atol=1e-5)
    fired = (f > 0).float().mean()
    assert 0.02 < fired < 0.9  # some fire, some do not: the comparison could fail
    if architecture == "jumprelu":  # positive pre-activations under the threshold do not fire
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        assert ((pre > 0) & (pre <= sae.threshold) & (f == 0)).any()
    if architecture == "topk":
        assert int((f > 0).sum(-1).max()) <= sae.cfg.k


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_pass_counts_every_architecture_exactly(architecture, tiny_gpt2, tmp_path):
    exp = PRESETS["gpt2-res-jb"].replace(
        sites=("blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.2.hook_resid_post"),
        corpus="wiki-summaries", max_documents=6, token_budget=300, context_length=32, batch_size=4,
        sae_width=48, sae_k=6, step_tokens=100, top_k_examples=3, device="cpu",
    )
    saes = {s: make_random_arch_sae(architecture, 64, 48, seed=i) for i, s in enumerate(exp.sites)}
    run_pass(exp, out=tmp_path / "stats", progress=False, subject=tiny_gpt2, saes=saes)
    X, doc, pos = dense_stream(tiny_gpt2, saes, exp)
    assert 0 < np.mean(X[exp.sites[1]] > 0) < 0.9
    brute_force_check(exp, tmp_path / "stats", X, doc, pos)
