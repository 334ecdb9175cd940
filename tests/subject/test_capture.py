import pytest
import torch

from helpers.subject.capture import capture_residuals, flatten_tokens, parse_site
from helpers.errors import ConfigError


def _ids(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def test_gpt2_sites_equal_centred_hidden_states(tiny_gpt2, wiki_docs):
    ids, mask = _ids(tiny_gpt2.tokenizer, [wiki_docs[0].text[:200], wiki_docs[1].text[:200]])
    acts = capture_residuals(tiny_gpt2, ids, mask)
    with torch.no_grad():
        hidden = tiny_gpt2.hf_model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert list(acts) == list(tiny_gpt2.spec.site_names())
    n = tiny_gpt2.spec.n_layers
    for site in tiny_gpt2.spec.site_names():
        layer, kind = parse_site(site)
        index = layer if kind == "pre" else layer + 1
        if index == n:  # hidden_states[-1] is after the final LayerNorm
            continue
        expected = hidden[index] - hidden[index].mean(-1, keepdim=True)
        torch.testing.assert_close(acts[site], expected, rtol=0, atol=1e-5)
        assert acts[site].mean(-1).abs().max() < 1e-5
    # the output of block L is the input of block L+1
    torch.testing.assert_close(acts["blocks.0.hook_resid_post"], acts["blocks.1.hook_resid_pre"], rtol=0, atol=0)


def test_trace_stops_after_last_site(tiny_gpt2):
    ran = []
    handles = [
        b.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
        for i, b in enumerate(tiny_gpt2.hf_model.transformer.h)
    ]
    try:
        capture_residuals(tiny_gpt2, torch.tensor([[1, 2, 3]]), sites=["blocks.1.hook_resid_pre"])
    finally:
        for h in handles:
            h.remove()
    assert ran == [0]  # block 1's input is block 0's output: blocks 1 and 2 never ran


def test_sites_come_back_in_the_order_asked(tiny_gpt2):
    acts = capture_residuals(
        tiny_gpt2, torch.tensor([[5, 6]]), sites=["blocks.2.hook_resid_pre", "blocks.0.hook_resid_pre"]
    )
    assert list(acts) == ["blocks.2.hook_resid_pre", "blocks.0.hook_resid_pre"]


def test_unknown_site(tiny_gpt2):
    with pytest.raises(ConfigError, match=r"no site\(s\) \['hidden.0'\]"):
        capture_residuals(tiny_gpt2, torch.tensor([[1]]), sites=["hidden.0"])


def test_flatten_tokens_keeps_counted_tokens():
    acts = {"s": torch.arange(24.0).reshape(2, 3, 4)}
    mask = torch.tensor([[False, True, True], [True, False, False]])
    out = flatten_tokens(acts, mask)["s"]
    assert out.shape == (3, 4)
    assert out[:, 0].tolist() == [4.0, 8.0, 12.0]


def test_gpt2_matches_transformerlens_hook_resid_pre_full_size():
    """gpt2-small-res-jb SAEs read TransformerLens' hook_resid_pre (fold_ln, center_writing_weights).

    A randomly initialised full-size GPT-2 with perturbed LayerNorms, built offline.
    Tolerance: 1e-4 absolute on activations of scale ~1 (float32 through 12 blocks).
    """
    import transformers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    from helpers.experiment import MODELS
    from helpers.subject.models import wrap

    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config()  # GPT-2 small: 12 layers, d_model 768, vocab 50257
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "ln" in name:  # make LayerNorm weights non-trivial so folding matters
                p.add_(0.2 * torch.randn_like(p))
    tl_cfg = HookedTransformerConfig(
        n_layers=12, d_model=768, d_head=64, n_heads=12, d_mlp=3072, d_vocab=50257,
        n_ctx=1024, act_fn="gelu_new", normalization_type="LN", positional_embedding_type="standard",
        default_prepend_bos=True, device="cpu",
    )
    tl = HookedTransformer(tl_cfg)
    tl.load_and_process_state_dict(
        convert_gpt2_weights(hf, tl_cfg), fold_ln=True, center_writing_weights=True,
        center_unembed=True, fold_value_biases=True,
    )
    tl.eval()
    subject = wrap(hf, None, MODELS["gpt2"], torch.device("cpu"))
    ids = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(1))
    ours = capture_residuals(subject, ids)
    with torch.no_grad():
        _, cache = tl.run_with_cache(ids, names_filter=lambda n: "hook_resid_p" in n)
    for site in subject.spec.site_names():  # hook_resid_pre and hook_resid_post of every block
        torch.testing.assert_close(ours[site], cache[site], rtol=0, atol=1e-4)
    # without centring they would differ: the test can fail
    with torch.no_grad():
        raw = hf(ids, output_hidden_states=True).hidden_states[5]
    assert (raw - cache["blocks.5.hook_resid_pre"]).abs().max() > 1e-3
