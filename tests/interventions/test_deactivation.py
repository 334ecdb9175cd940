"""The batched deactivation test equals one clean and one ablated forward pass per edge."""

import pytest
import torch

from helpers.errors import ConfigError
from helpers.interventions.deactivation import ablation_drops, ablation_drops_one_at_a_time, clean_windows

from ..stats.test_collect import random_topk_saes

SITES = ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre")


@pytest.fixture(scope="module")
def topk_saes():
    return random_topk_saes(SITES, d_in=64, width=48, k=5)


def test_batched_drops_equal_one_pass_per_edge(tiny_gpt2, topk_saes, wiki_docs):
    tok = tiny_gpt2.tokenizer
    texts = [d.text[: 40 + 25 * i] for i, d in enumerate(wiki_docs[:4])]  # rows of different lengths: padding
    enc = tok([tok.bos_token + t for t in texts], return_tensors="pt", padding=True)
    ids, am = enc["input_ids"], enc["attention_mask"]
    content = am.bool().clone()
    content[:, 0] = False  # BOS is not counted
    site_a, site_b = SITES[1], SITES[2]
    clean = clean_windows(tiny_gpt2, topk_saes, ids, am, content, site_a, site_b)
    g = torch.Generator().manual_seed(0)
    edges = [(int(w), int(a), int(b)) for w, a, b in zip(torch.randint(0, 4, (40,), generator=g),
                                                         torch.randint(0, 48, (40,), generator=g),
                                                         torch.randint(0, 48, (40,), generator=g))]
    edges += [(0, 3, b) for b in range(0, 48, 12)]  # one ablated copy serves several downstream features
    fast_sum, fast_n = ablation_drops(tiny_gpt2, topk_saes, clean, site_a, site_b, edges, rows_per_pass=3)
    slow_sum, slow_n = ablation_drops_one_at_a_time(tiny_gpt2, topk_saes, ids, am, content, site_a, site_b, edges)
    assert torch.equal(fast_n, slow_n)
    torch.testing.assert_close(fast_sum, slow_sum, atol=1e-5, rtol=1e-4)
    assert (fast_n > 0).sum() >= 10 and (fast_sum != 0).sum() >= 5  # the check has teeth
    # a silent upstream feature changes nothing, exactly
    silent = [i for i, (w, a, b) in enumerate(edges) if not (clean.f_a[w, :, a] * am[w] != 0).any()]
    assert silent and all(fast_sum[i] == 0 for i in silent)


def test_bad_edges(tiny_gpt2, topk_saes):
    ids = torch.tensor([[1, 2, 3]])
    am = torch.ones_like(ids)
    with pytest.raises(ConfigError, match="must come after"):
        clean_windows(tiny_gpt2, topk_saes, ids, am, am.bool(), SITES[2], SITES[1])
    clean = clean_windows(tiny_gpt2, topk_saes, ids, am, am.bool(), SITES[0], SITES[1])
    with pytest.raises(ConfigError, match=r"edge \(row 1, a 0, b 0\) is out of range"):
        ablation_drops(tiny_gpt2, topk_saes, clean, SITES[0], SITES[1], [(1, 0, 0)])


def test_the_batched_paths_edit_as_decode_does_for_rescaled_normalising_saes(tiny_gpt2, topk_saes, wiki_docs):
    """With an upstream SAE whose decode divides by non-unit decoder norms and undoes a layer norm,
    the batched ablations (deactivation test, edge effects) equal the one-edit-per-pass path, whose
    edit equals sae_lens' decode (tests/subject/test_decode.py)."""
    from helpers.interventions import edge_effects, edge_effects_one_at_a_time

    from ..subject.test_decode import non_unit_sae

    up = non_unit_sae("topk", {"rescale_acts_by_decoder_norm": True}, "layer_norm", d_in=64, d_sae=24)
    saes = {SITES[1]: up, SITES[2]: topk_saes[SITES[2]]}
    tok = tiny_gpt2.tokenizer
    enc = tok([tok.bos_token + d.text[:50] for d in wiki_docs[:2]], return_tensors="pt", padding=True)
    ids, am = enc["input_ids"], enc["attention_mask"]
    clean = clean_windows(tiny_gpt2, saes, ids, am, am.bool(), SITES[1], SITES[2])
    fired = torch.nonzero(clean.f_a.abs().sum(1) > 0).tolist()[:3]  # (row, a) pairs where a fires
    edges = [(w, a, b) for w, a in fired for b in range(0, 48, 12)]
    fast = ablation_drops(tiny_gpt2, saes, clean, SITES[1], SITES[2], edges, rows_per_pass=4)
    slow = ablation_drops_one_at_a_time(tiny_gpt2, saes, ids, am, am.bool(), SITES[1], SITES[2], edges)
    assert torch.equal(fast[1], slow[1]) and (fast[0] != 0).sum() >= 3, fast
    torch.testing.assert_close(fast[0], slow[0], atol=1e-5, rtol=1e-4)
    pairs = [(a, b) for _, a, b in edges[:4]]
    torch.testing.assert_close(edge_effects(tiny_gpt2, saes, ids, am, am.bool(), SITES[1], SITES[2], pairs),
                               edge_effects_one_at_a_time(tiny_gpt2, saes, ids, am, am.bool(), SITES[1], SITES[2],
                                                          pairs), atol=1e-5, rtol=1e-4)


def test_a_seed_twin_reads_the_ablation_where_it_is_made(tiny_gpt2, topk_saes, wiki_docs):
    """Two SAEs of one site (a seed twin): ablating a feature of the first changes the stream the second
    reads, with no block run; the drop equals re-encoding the edited stream by hand."""
    from helpers.experiment import seed_site
    from helpers.subject.capture import capture_residuals
    from helpers.subject.decode import decode_delta

    site_a = SITES[1]
    twin = seed_site(site_a)
    other = random_topk_saes((site_a,), d_in=64, width=48, k=5, seed=7)[site_a]
    saes = {site_a: topk_saes[site_a], twin: other}
    tok = tiny_gpt2.tokenizer
    enc = tok([tok.bos_token + d.text[:60] for d in wiki_docs[:2]], return_tensors="pt", padding=True)
    ids, am = enc["input_ids"], enc["attention_mask"]
    content = am.bool().clone()
    content[:, 0] = False
    clean = clean_windows(tiny_gpt2, saes, ids, am, content, site_a, twin)
    x = capture_residuals(tiny_gpt2, ids, am, [site_a])[site_a]
    torch.testing.assert_close(clean.f_b, other.encode(x))  # the twin reads the same stream
    edges = [(w, a, b) for w in range(2) for a in (0, 5, 11) for b in range(0, 48, 6)]
    drop_sum, n_fire = ablation_drops(tiny_gpt2, saes, clean, site_a, twin, edges)
    for i, (w, a, b) in enumerate(edges):
        f_a = clean.f_a[w, :, a]
        delta = decode_delta(saes[site_a], torch.tensor([a]), -f_a[None], None)[0]
        if tiny_gpt2.centered:  # the edit is made in the raw stream, which the twin reads centred
            delta = delta - delta.mean(-1, keepdim=True)
        after = other.encode(x[w] + delta)[:, b]
        fires = (clean.f_b[w, :, b] > 0) & clean.token_mask[w]
        want = ((clean.f_b[w, :, b] - after) / clean.f_b[w, :, b])[fires].sum() if (f_a != 0).any() else 0.0
        assert int(n_fire[i]) == int(fires.sum())
        torch.testing.assert_close(drop_sum[i].float(), torch.as_tensor(want).float(), atol=1e-4, rtol=1e-4)
    assert (n_fire > 0).sum() >= 5 and (drop_sum != 0).sum() >= 2  # the check has teeth
