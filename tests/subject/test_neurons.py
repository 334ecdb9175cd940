"""MLP neurons read through nnsight equal a plain forward hook on the MLP's projection, for tiny
random Llama, Gemma 3, GPT-2 and BERT models; sites read in the same pass are unchanged."""

import dataclasses

import pytest
import torch

from helpers.errors import ConfigError
from helpers.experiment import FAMILIES, ModelSpec
from helpers.subject.capture import capture_residuals
from helpers.subject.models import wrap
from helpers.subject.neurons import capture_with_neurons, neuron_layers, neuron_width, site_layer

from ..conftest import make_tiny_gpt2, tiny_causal_config


def _subject(family, model, tokenizer):
    cfg = model.config
    spec = ModelSpec(f"tiny-{family}", family, "test", cfg.num_hidden_layers, cfg.hidden_size,
                     FAMILIES[family].causal)
    return wrap(model, tokenizer, spec, torch.device("cpu"))


@pytest.fixture(scope="module", params=["llama", "gemma3", "gpt2", "bert"])
def subject(request, tiny_tokenizer):
    import transformers

    family = request.param
    torch.manual_seed(0)
    if family == "gpt2":
        model = make_tiny_gpt2(tiny_tokenizer)
    elif family == "bert":
        model = transformers.BertModel(transformers.BertConfig(
            vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=64)).eval()
    else:
        cfg = tiny_causal_config(family, len(tiny_tokenizer), tiny_tokenizer.bos_token_id)
        model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    return _subject(family, model, tiny_tokenizer)


def projection(subject, layer):
    """The module whose input (or, BERT, output) holds the neurons, and which of the two."""
    block = {"bert": lambda m: m.encoder.layer, "gpt2": lambda m: m.transformer.h}.get(
        subject.spec.family, lambda m: m.model.layers)(subject.hf_model)[layer]
    if subject.spec.family == "bert":
        return block.intermediate, "output"
    return (block.mlp.c_proj if subject.spec.family == "gpt2" else block.mlp.down_proj), "input"


def hooked(subject, ids, mask, layers):
    """Neurons by plain torch hooks on the projections, and the hidden states, full forward."""
    seen, handles = {}, []
    for layer in layers:
        module, where = projection(subject, layer)
        if where == "input":
            handles.append(module.register_forward_pre_hook(lambda m, a, layer=layer: seen.__setitem__(layer, a[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, a, o, layer=layer: seen.__setitem__(layer, o)))
    try:
        with torch.no_grad():
            subject.hf_model(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_neurons_equal_a_plain_hook_and_sites_are_unchanged(subject, tiny_tokenizer):
    enc = tiny_tokenizer(["The cat sat on the mat.", "Paris is the capital of France"],
                         return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    names = subject.spec.site_names()
    sites = [names[1], names[-1], names[2]]  # out of order on purpose
    acts, neurons = capture_with_neurons(subject, ids, mask, sites, [2, 0, 1])
    expected = hooked(subject, ids, mask, [0, 1, 2])
    width = neuron_width(subject.hf_model)
    for layer in (0, 1, 2):
        assert neurons[layer].shape == (*ids.shape, width)
        torch.testing.assert_close(neurons[layer], expected[layer], rtol=0, atol=0)
    plain = capture_residuals(subject, ids, mask, sites)
    assert list(acts) == sites
    for site in sites:
        torch.testing.assert_close(acts[site], plain[site], rtol=0, atol=0)
    if subject.spec.family == "gpt2":  # act(c_fc(x)): the neurons of a GPT-2 block by hand
        mlp = subject.hf_model.transformer.h[1].mlp
        captured = {}
        handle = mlp.register_forward_pre_hook(lambda m, a: captured.__setitem__("x", a[0]))
        with torch.no_grad():
            subject.hf_model(input_ids=ids, attention_mask=mask)
        handle.remove()
        torch.testing.assert_close(neurons[1], mlp.act(mlp.c_fc(captured["x"])))


def test_layers_of_a_site(subject):
    spec = subject.spec
    if spec.family == "bert":
        assert [site_layer(spec, f"hidden.{i}") for i in range(4)] == [-1, 0, 1, 2]
        assert neuron_layers(spec, "hidden.0") == (None, None)  # the embeddings
        assert neuron_layers(spec, "hidden.1") == (0, None)
        assert neuron_layers(spec, "hidden.3") == (2, 1)
    else:
        assert neuron_layers(spec, "blocks.0.hook_resid_post") == (0, None)  # no block before block 0
        assert neuron_layers(spec, "blocks.2.hook_resid_post") == (2, 1)
        assert neuron_layers(spec, "blocks.2.hook_resid_pre") == (1, 0)  # the output of block 1
        assert neuron_layers(spec, "blocks.0.hook_resid_pre") == (None, None)


def test_one_line_errors(subject, tiny_tokenizer):
    ids = tiny_tokenizer(["a b c"], return_tensors="pt")["input_ids"]
    with pytest.raises(ConfigError, match=r"has blocks 0..2: no block\(s\) \[3\]"):
        capture_with_neurons(subject, ids, None, [], [3])
    with pytest.raises(ConfigError, match="has no site 'blocks.9.hook_resid_post'"):
        site_layer(subject.spec, "blocks.9.hook_resid_post")
    with pytest.raises(ConfigError, match="no sites and no neuron layers"):
        capture_with_neurons(subject, ids, None, [], [])


def test_a_family_without_a_known_neuron_site_is_one_line(monkeypatch):
    fam = dataclasses.replace(FAMILIES["llama"], neurons=None)
    monkeypatch.setitem(FAMILIES, "llama", fam)
    spec = ModelSpec("tiny-llama", "llama", "test", 3, 32, True)
    with pytest.raises(ConfigError) as err:
        neuron_layers(spec, "blocks.1.hook_resid_post")
    assert str(err.value).startswith("model family 'llama' has no known MLP neuron site: set Family.neurons")
    assert "\n" not in str(err.value)
