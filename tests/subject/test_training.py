"""Training SAEs on a corpus split by document, site by site and resumably."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers.experiment import get_experiment
from helpers.io import sae_dir
from helpers.subject.saes import load_saes, sae_quality, trained_saes_ready
import helpers.subject.training as training
from helpers.subject.training import SITE_QUALITY_FILE, staging_dir, train_saes


@pytest.fixture
def split_experiment(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_EVOLUTION_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "split-llama.toml"
    path.write_text(
        f'model = "{tiny_llama_dir}"\n'
        'sites = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]\n'
        'corpus = "wiki-summaries"\nmax_documents = 40\ntoken_budget = 300\ncontext_length = 32\n'
        'corpus_split = [0.3, 0.2]\n'
        'batch_size = 8\nsae_width = 32\nsae_k = 4\nsae_train_tokens = 100000\nsae_heldout_tokens = 100000\n'
        'sae_train_batch = 128\nsae_epochs = 2\nsae_lr = 0.003\nsae_ce_tokens = 64\nstep_tokens = 128\n'
        'top_k_examples = 4\ndevice = "cpu"\n'
    )
    return get_experiment(str(path))


def _part_activations(subject, exp, part, site):
    """Brute force: the site's activations over every token of one part's documents."""
    from helpers.subject.capture import capture_residuals, flatten_tokens
    from helpers.subject.corpus import corpus_part, iter_token_batches, load_corpus

    docs = corpus_part(exp, load_corpus(exp.corpus, exp.max_documents), part)
    out = []
    for batch in iter_token_batches(docs, subject.tokenizer, subject.special_tokens, exp.context_length,
                                    exp.batch_size):
        out.append(flatten_tokens(capture_residuals(subject, batch.input_ids, batch.attention_mask, [site]),
                                  batch.token_mask)[site].float())
    return torch.cat(out)


def test_training_resumes_site_by_site_on_documents_the_statistics_never_read(split_experiment, artefacts_tmp,
                                                                                monkeypatch):
    from helpers.subject.models import load_subject

    exp = split_experiment
    subject = load_subject(exp)
    real_train = training.train_sae
    trained = []

    def train_then_die(acts, e, site, **kw):
        if site == exp.sites[1]:
            raise KeyboardInterrupt  # the session ends while the second site trains
        trained.append((site, acts.shape[0]))
        return real_train(acts, e, site, **kw)

    monkeypatch.setattr(training, "train_sae", train_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_saes(exp, progress=False, subject=subject)
    staging = staging_dir(exp)
    assert (staging / exp.sites[0] / SITE_QUALITY_FILE).is_file()  # the first site is kept
    assert not (staging / exp.sites[1]).exists() and not trained_saes_ready(exp)
    assert not sae_dir(exp.name).exists()  # no unfinished set in place of a finished one
    first = json.loads((staging / exp.sites[0] / SITE_QUALITY_FILE).read_text())

    monkeypatch.setattr(training, "train_sae", lambda acts, e, site, **kw: (trained.append((site, acts.shape[0])),
                                                                            real_train(acts, e, site, **kw))[1])
    result = train_saes(exp, progress=False, subject=subject)
    assert [s for s, _ in trained] == list(exp.sites)  # each site trained once: the rerun resumed
    assert trained_saes_ready(exp) and not staging.exists()
    assert set(result.report) == set(exp.sites) and result.report[exp.sites[0]] == first
    report = json.loads((sae_dir(exp.name) / "training_report.json").read_text())
    assert set(report["sites"]) == set(exp.sites)

    # trained on every token of the training documents, measured on the held-out documents
    saes = load_saes(exp)
    for site in exp.sites:
        train = _part_activations(subject, exp, "sae_train", site)
        held = _part_activations(subject, exp, "sae_heldout", site)
        assert dict(trained)[site] == train.shape[0] == result.report[site]["train_tokens"]
        q = sae_quality(saes[site], held)
        assert result.report[site]["n_tokens"] == held.shape[0]
        assert q["fvu"] == pytest.approx(result.report[site]["fvu"], rel=1e-4)
        assert q["dead_fraction"] == result.report[site]["dead_fraction"]
        assert 0 <= result.report[site]["fvu"] < 1 and "loss_recovered" in result.report[site]
    # the activation cache holds exactly those activations
    cache = training.activation_cache(subject, exp, exp.sites, progress=False)
    np.testing.assert_allclose(np.load(cache / f"{exp.sites[2]}.train.npy"),
                               _part_activations(subject, exp, "sae_train", exp.sites[2]).numpy(), rtol=1e-6)
    # a second call reuses the finished set
    assert train_saes(exp, progress=False, subject=subject).reused


def test_training_a_share_of_the_sites_names_unknown_sites(split_experiment, artefacts_tmp):
    from helpers.errors import ConfigError

    with pytest.raises(ConfigError, match=r"site\(s\) \['blocks.7.hook_resid_post'\] are not sites of"):
        train_saes(split_experiment, progress=False, sites=["blocks.7.hook_resid_post"])
