"""sae_lens' registry read offline: usable releases, their sites, widths, Neuronpedia ids,
experiments built from them, and one-line errors for everything that cannot be used."""

import subprocess
import sys

import pytest

from helpers.cli import main
from helpers.errors import ConfigError
from helpers.subject.releases import (
    compact_sites,
    experiment_from_release,
    get_release,
    load_registry,
    neuronpedia_id,
    residual_releases,
)


def test_lists_every_supported_family_offline():
    families = {r.family for r in residual_releases()}
    assert {"gpt2", "gpt_neox", "gemma2", "gemma3", "llama", "qwen2", "qwen3"} <= families
    assert all(r.unsupported is None and r.saes for r in residual_releases())
    assert {r.model for r in residual_releases("pythia")} == {"pythia-70m-deduped"}


def test_gemma_scope_sites_widths_and_neuronpedia():
    rel = get_release("gemma-scope-2b-pt-res-canonical")
    assert rel.model == "gemma-2-2b" and rel.family == "gemma2"
    assert rel.sites == tuple(f"blocks.{i}.hook_resid_post" for i in range(26))
    assert {16384, 65536, 1 << 20} <= set(rel.widths)
    assert neuronpedia_id(rel.name, "layer_0/width_16k/canonical") == "gemma-2-2b/0-gemmascope-res-16k"
    assert not rel.center_residual


def test_llama_scope_and_gpt2_res_jb():
    llama = get_release("llama_scope_lxr_8x")
    assert llama.widths == (32768,) and len(llama.sites) == 32 and llama.family == "llama"
    jb = get_release("gpt2-small-res-jb")
    assert jb.center_residual  # its config asks for center_writing_weights
    assert jb.sites[:2] == ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre")
    assert compact_sites(jb.sites) == "blocks.{0..11}.hook_resid_pre + blocks.11.hook_resid_post"


def test_attention_and_mlp_saes_are_not_residual():
    registry = load_registry()
    assert not registry["gemma-scope-2b-pt-mlp-canonical"].saes
    assert not registry["gpt2-small-resid-mid-v5-32k"].saes  # resid_mid is inside a block
    assert not registry["gemma-scope-2-1b-pt-transcoders"].saes


def test_experiment_from_release():
    exp = experiment_from_release("gemma-scope-2b-pt-res-canonical", layers=(3, 6), width=16384)
    assert exp.name == "gemma-scope-2b-pt-res-canonical-16k-L3-6"
    assert exp.sites == tuple(f"blocks.{i}.hook_resid_post" for i in range(3, 7))
    assert exp.sae_ids[0] == "layer_3/width_16k/canonical" and exp.sae_id("blocks.4.hook_resid_post") == "layer_4/width_16k/canonical"
    assert exp.sae_source == "pretrained" and exp.model_spec.d_model == 2304 and exp.sae_width == 16384
    jb = experiment_from_release("gpt2-small-res-jb", token_budget=1000)
    assert jb.centered and jb.token_budget == 1000 and len(jb.sites) == 13
    assert jb.sae_id("blocks.11.hook_resid_post") == "blocks.11.hook_resid_post"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(release="gemma-scope-2b-pt-res-canonicl"), r"unknown release 'gemma-scope-2b-pt-res-canonicl': closest \['gemma-scope-2b-pt-res-canonical'"),
        (dict(release="gemma-scope-2b-pt-mlp-canonical"), "no residual-stream SAEs"),
        (dict(release="gemma-2b-res-jb"), r"model 'gemma-2b' is not one the helpers know \(supported families: \['bert', 'gemma2'"),
        (dict(release="gemma-scope-2b-pt-res-canonical"), r"several widths \[16384, 32768, 65536"),
        (dict(release="gemma-scope-2b-pt-res-canonical", width=16384, layers=(20, 30)), r"layer range 20..30 is outside model 'gemma-2-2b' \(blocks 0..25\)"),
        (dict(release="llama_scope_lxr_8x", width=1000), "no SAE of width 1000"),
        (dict(release="gemma-scope-27b-pt-res-canonical", layers=(0, 5)), "no SAE in blocks 0..5"),
    ],
)
def test_bad_releases_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        experiment_from_release(**kwargs)


def test_a_site_that_is_not_residual_is_refused():
    exp = experiment_from_release("llama_scope_lxr_8x", layers=(0, 1))
    with pytest.raises(ConfigError, match=r"unknown site\(s\) \['blocks.0.hook_mlp_out'\]"):
        exp.replace(sites=("blocks.0.hook_mlp_out",), sae_ids=())


def test_cli_releases_and_release_experiments(capsys):
    assert main(["releases", "--model", "Llama-3.1-8B"]) == 0
    out = capsys.readouterr().out
    assert "llama_scope_lxr_8x" in out and "blocks.{0..31}.hook_resid_post" in out and "32k" in out
    assert main(["info", "--release", "llama_scope_lxr_8x", "--layers", "2:4", "--no-count", "--json"]) == 0
    assert '"blocks.4.hook_resid_post"' in capsys.readouterr().out
    assert main(["info", "--release", "llama_scope_lxr_8x", "--layers", "two", "--no-count"]) == 2
    assert capsys.readouterr().err == "error: --layers 'two': expected FIRST:LAST, e.g. --layers 0:11\n"
    assert main(["info", "--experiment", "smoke", "--width", "3", "--no-count"]) == 2
    assert "go with --release" in capsys.readouterr().err


def test_listing_does_not_import_sae_lens():
    code = ("import sys; from helpers.subject.releases import residual_releases; "
            "assert residual_releases(); print('sae_lens' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_l0_variants_and_the_default_rule():
    from helpers.subject.releases import ReleaseSae, layer_pattern, pick_sae, release_saes, release_variants

    res = get_release("gemma-scope-2-270m-pt-res")
    at12 = [s for s in res.saes if s.site == "blocks.12.hook_resid_post" and s.width == 262144]
    assert [s.variant for s in at12] == ["big", "medium", "medium_seed_1", "small"]
    # default: the SAE Neuronpedia hosts (medium, not its second seed) ...
    assert pick_sae(at12).sae_id == "layer_12_width_262k_l0_medium" and pick_sae(at12).neuronpedia
    assert pick_sae(at12, "big").sae_id == "layer_12_width_262k_l0_big"
    assert pick_sae(at12, 25.0).sae_id == "layer_12_width_262k_l0_small"  # nearest registry L0 (20)
    assert pick_sae(at12, "huge") is None
    # ... else the sparsest label, else the registry's first
    bare = [ReleaseSae(f"layer_0_width_16k_l0_{v}", "blocks.0.hook_resid_post", 16384, l0, None)
            for v, l0 in (("big", 60.0), ("small", 10.0))]
    assert pick_sae(bare).sae_id == "layer_0_width_16k_l0_small"
    plain = [ReleaseSae(f"layer_0/width_16k/average_l0_{n}", "blocks.0.hook_resid_post", 16384, n, None)
             for n in (105.0, 13.0)]
    assert pick_sae(plain).l0 == 105.0 and pick_sae(plain, 20).l0 == 13.0 and plain[0].variant is None

    exp = experiment_from_release("gemma-scope-2-270m-pt-res", width=16384)
    assert exp.sites == tuple(f"blocks.{L}.hook_resid_post" for L in (5, 9, 12, 15))
    assert exp.sae_ids == tuple(f"layer_{L}_width_16k_l0_medium" for L in (5, 9, 12, 15))
    assert release_variants(exp) == ["small", "medium", "big"]
    rows = release_saes(exp)
    assert layer_pattern(rows) == "layer_{L}_width_16k_l0_medium" and layer_pattern(rows, "module") == "model.layers.{L} output"
    assert [r["neuronpedia"] for r in rows] == [f"gemma-3-270m/{L}-gemmascope-2-res-16k" for L in (5, 9, 12, 15)]
    named = experiment_from_release("gemma-scope-2-270m-pt-res-all", width=16384, l0="big", layers=(0, 1))
    assert named.name == "gemma-scope-2-270m-pt-res-all-16k-big-L0-1"
    assert experiment_from_release("gemma-scope-2-270m-pt-res-all", width=16384, l0="60", layers=(0, 0)).name == (
        "gemma-scope-2-270m-pt-res-all-16k-l0-60-L0-0")
