"""End to end on a model that is not MiniLM nor GPT-2: a tiny random Llama saved in a folder,
an experiment file naming it, SAEs the project trains on its residual stream, and the
statistics pass, checked against the brute force from dense activations."""

import json

import numpy as np
import pytest

from helpers.cli import main
from helpers.experiment import Experiment, get_experiment
from helpers.stats import load_metadata, run_pass
from helpers.subject.models import load_subject
from helpers.subject.saes import load_saes, train_saes

from .stats.test_collect import brute_force_check, dense_stream


@pytest.fixture
def llama_experiment(tiny_llama_dir, tmp_path):
    path = tmp_path / "tiny-llama.toml"
    path.write_text(
        f'model = "{tiny_llama_dir}"\n'
        'sites = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]\n'
        'corpus = "wiki-summaries"\nmax_documents = 30\ntoken_budget = 400\ncontext_length = 32\n'
        'batch_size = 8\nsae_width = 64\nsae_k = 8\nsae_train_tokens = 1500\nsae_heldout_tokens = 300\n'
        'sae_train_batch = 256\nsae_epochs = 2\nsae_lr = 0.003\nstep_tokens = 128\ntop_k_examples = 4\n'
        'device = "cpu"\n'
    )
    return path


def test_tiny_llama_trained_saes_through_collect(llama_experiment, artefacts_tmp, tmp_path):
    exp = get_experiment(str(llama_experiment))
    assert exp.name == "tiny-llama" and exp.model_spec.family == "llama" and exp.model_spec.d_model == 32
    result = train_saes(exp, progress=False)
    assert set(result.report) == set(exp.sites)
    for site, q in result.report.items():
        assert q["fvu"] < 1.0 and abs(q["l0"] - exp.sae_k) < 1e-6  # TopK: exactly k per token
    subject = load_subject(exp)
    assert type(subject.hf_model).__name__ == "LlamaForCausalLM"
    assert subject.special_tokens.prefix == (subject.tokenizer.bos_token_id,)  # prepend_bos
    saes = load_saes(exp)
    out = tmp_path / "stats"
    res = run_pass(exp, out=out, progress=False, subject=subject, saes=saes)
    assert res.tokens == 400
    X, doc, pos = dense_stream(subject, saes, exp)
    brute_force_check(exp, out, X, doc, pos)
    # the experiment is saved beside the artefacts and loads back equal
    assert Experiment.from_dict(load_metadata(exp, out)["experiment"]) == exp


def test_cli_info_on_an_experiment_file(llama_experiment, capsys):
    assert main(["info", "--experiment", str(llama_experiment), "--no-count", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"]["family"] == "llama" and info["model"]["n_layers"] == 3
