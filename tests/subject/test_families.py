"""Every causal family: the sites read what sae_lens' SAEs were trained on.

Tiny random models built from configs offline (3 blocks, d_model 32, perturbed
norm weights). ``blocks.{L}.hook_resid_pre`` / ``hook_resid_post`` are compared

- with transformers' ``hidden_states`` (the same computation: equal exactly,
  except the last block's output, which ``hidden_states`` gives after the final
  norm and which is compared with the block's own output);
- with TransformerLens loaded without weight processing (what sae_lens uses
  unless a release asks for ``center_writing_weights``), where TransformerLens
  builds the family from a config (GPT-NeoX, Llama, Qwen 2, Qwen 3): tolerance
  1e-5 absolute on activations of scale ~1 (float32, two attention
  implementations). TransformerLens 3.9 builds Gemma 2/3 only from the official
  hub names, so Gemma is checked against transformers alone.
"""

import pytest
import torch

from helpers.experiment import model_spec
from helpers.subject.capture import capture_residuals, parse_site
from helpers.subject.models import wrap
from tests.conftest import make_tiny_causal

FAMILIES = ["gpt_neox", "llama", "qwen2", "qwen3", "gemma2", "gemma3"]
TL_FAMILIES = ["gpt_neox", "llama", "qwen2", "qwen3"]


@pytest.fixture(scope="module")
def tiny_models(tiny_tokenizer, tmp_path_factory):
    made = {}

    def get(family):
        if family not in made:
            # no family name in the path: TransformerLens picks branches by name
            folder = tmp_path_factory.mktemp("tinycausal")
            made[family] = (make_tiny_causal(family, tiny_tokenizer, folder), folder)
        return made[family]

    return get


def _batch(tok, wiki_docs):
    enc = tok([wiki_docs[0].text[:150], wiki_docs[3].text[:90]], return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("family", FAMILIES)
def test_sites_equal_transformers_hidden_states(family, tiny_models, tiny_tokenizer, wiki_docs):
    hf, folder = tiny_models(family)
    spec = model_spec(str(folder))  # read from config.json, no weights
    assert (spec.family, spec.n_layers, spec.d_model, spec.causal) == (family, 3, 32, True)
    subject = wrap(hf, tiny_tokenizer, spec, torch.device("cpu"))
    assert not subject.centered  # no family but GPT-2 centres by default
    ids, mask = _batch(tiny_tokenizer, wiki_docs)
    acts = capture_residuals(subject, ids, mask)
    last = {}
    body = dict(hf.named_modules())[{"gpt_neox": "gpt_neox.layers"}.get(family, "model.layers")]
    handle = body[-1].register_forward_hook(lambda m, a, o: last.setdefault("out", o))
    try:
        with torch.no_grad():
            hidden = hf(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    finally:
        handle.remove()
    assert len(acts) == 6
    for site, value in acts.items():
        layer, kind = parse_site(site)
        index = layer if kind == "pre" else layer + 1
        expected = last["out"] if index == 3 else hidden[index]
        torch.testing.assert_close(value, expected, rtol=0, atol=0)
    # the final norm is not the residual stream: the test could fail
    assert (acts["blocks.2.hook_resid_post"] - hidden[3]).abs().max() > 1e-2


def _transformerlens_unprocessed(folder, hf):
    """TransformerLens from the folder's config with no weight processing (sae_lens' default)."""
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = loading.convert_hf_model_config(str(folder))
    cfg = {k: v for k, v in cfg.items() if k in HookedTransformerConfig.__dataclass_fields__}
    cfg.update(device="cpu", n_ctx=128)
    cfg = HookedTransformerConfig(**cfg)
    tl = HookedTransformer(cfg)
    tl.load_and_process_state_dict(
        loading.get_pretrained_state_dict(str(folder), cfg, hf_model=hf), fold_ln=False,
        center_writing_weights=False, center_unembed=False, fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return tl.eval()


@pytest.mark.parametrize("family", TL_FAMILIES)
def test_sites_equal_transformerlens(family, tiny_models, tiny_tokenizer):
    hf, folder = tiny_models(family)
    tl = _transformerlens_unprocessed(folder, hf)
    subject = wrap(hf, tiny_tokenizer, model_spec(str(folder)), torch.device("cpu"))
    ids = torch.randint(0, len(tiny_tokenizer), (2, 12), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = tiny_tokenizer.bos_token_id  # prepend_bos, as sae_lens feeds it
    ours = capture_residuals(subject, ids)
    with torch.no_grad():
        _, cache = tl.run_with_cache(ids, names_filter=lambda n: "hook_resid_p" in n)
    for site in subject.spec.site_names():
        torch.testing.assert_close(ours[site], cache[site], rtol=0, atol=1e-5)
    assert ours["blocks.2.hook_resid_post"].abs().max() > 0.05  # not trivially small


def test_centring_follows_the_experiment(tiny_models, tiny_tokenizer):
    hf, folder = tiny_models("llama")
    spec = model_spec(str(folder))
    ids = torch.tensor([[tiny_tokenizer.bos_token_id, 5, 6, 7]])
    raw = capture_residuals(wrap(hf, tiny_tokenizer, spec, torch.device("cpu")), ids)
    centred = capture_residuals(wrap(hf, tiny_tokenizer, spec, torch.device("cpu"), center_residual=True), ids)
    for site in raw:
        torch.testing.assert_close(centred[site], raw[site] - raw[site].mean(-1, keepdim=True))
