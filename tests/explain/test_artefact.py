"""``explanations.npz`` on the smoke subject: written under the lock, checked, equal with or
without the recorded codes, and agreeing with the dense activations."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers.cli import main
from helpers.errors import CorruptArtefactError
from helpers.explain.artefact import (EXPLANATIONS_FILE, build_explanations, explanations_or_none,
                                      explanations_ready, load_explanations)
from helpers.explain.stream import heldout_mask, token_stream

from ..evolution.test_partners import smoke_run  # noqa: F401  (the fixture: a pass on the smoke subject)


@pytest.fixture(scope="module")
def built(smoke_run):  # noqa: F811
    exp, out, saes, X = smoke_run
    file = build_explanations(exp, out=out, progress=False)
    return exp, out, saes, X, file


def test_explanations_agree_with_the_dense_activations(built):
    exp, out, saes, X, file = built
    data = load_explanations(exp, out)
    S, F = len(exp.sites), exp.sae_width
    assert data["text"].shape == (S, F) and data["candidate_f1"].shape == (S, F, len(data["kinds"]))
    from helpers.subject.corpus import load_corpus
    from helpers.subject.models import load_tokenizer

    stream = token_stream(load_corpus(exp.corpus, exp.max_documents), load_tokenizer(exp), exp.token_budget)
    held = heldout_mask(stream.doc)
    for s, site in enumerate(exp.sites):
        fires = X[site] > 0
        assert np.array_equal(data["fired"][s], fires[held].sum(0))
        explained = data["kind"][s] >= 0
        assert np.array_equal(explained, fires[~held].any(0))  # every feature that fired in training
        assert all(data["text"][s, explained]) and not any(data["text"][s, ~explained])
        best = np.nanmax(np.where(np.isnan(data["candidate_f1"][s]), -1, data["candidate_f1"][s]), 1)
        chosen = data["candidate_f1"][s, np.flatnonzero(explained), data["kind"][s, explained]]
        np.testing.assert_allclose(chosen, best[explained])  # the best candidate was chosen
        for name in ("detection_auroc", "balanced_accuracy", "fuzzing"):
            v = data[name][s]
            assert np.all((v[np.isfinite(v)] >= 0) & (v[np.isfinite(v)] <= 1))
    assert np.isfinite(data["detection_auroc"]).any()
    assert data["meta"]["firing_from"] == "the statistics pass's recorded codes"


def test_without_codes_the_model_gives_the_same_explanations(built, tmp_path):
    exp, out, saes, X, file = built
    from helpers.subject.models import load_subject

    copy = tmp_path / "stats"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "codes")
    build_explanations(exp, out=copy, subject=load_subject(exp), saes=saes, progress=False)
    a, b = load_explanations(exp, out), load_explanations(exp, copy)
    assert b["meta"]["firing_from"] == "a model re-run"
    assert np.array_equal(a["text"], b["text"])
    np.testing.assert_array_equal(a["detection_auroc"], b["detection_auroc"])
    np.testing.assert_array_equal(a["fuzzing"], b["fuzzing"])


def test_ready_refuses_a_corrupted_file_and_the_cli_rebuilds_it(built, tmp_path, monkeypatch, capsys):
    exp, out, saes, X, file = built
    root = tmp_path / "artefacts"
    shutil.copytree(out, root / exp.stats_name)
    monkeypatch.setenv("SAE_EVOLUTION_ARTEFACTS", str(root))
    assert explanations_ready(exp)
    target = root / exp.stats_name / EXPLANATIONS_FILE
    assert explanations_or_none(exp)["text"].shape == (len(exp.sites), exp.sae_width)
    target.write_bytes(target.read_bytes()[:100])
    assert not explanations_ready(exp)
    with pytest.raises(CorruptArtefactError):  # broken is not "none"
        explanations_or_none(exp)
    assert explanations_or_none(exp, tmp_path) is None
    spec = tmp_path / f"{exp.name}.json"
    spec.write_text(json.dumps(exp.to_dict()))
    assert main(["explain", "--experiment", str(spec), "--quiet"]) == 0
    assert "median detection AUROC" in capsys.readouterr().out
    assert explanations_ready(exp)


def test_a_token_cap_reads_the_beginning_of_the_stream(built, tmp_path):
    exp, out, saes, X, file = built
    copy = tmp_path / "stats"
    shutil.copytree(out, copy)
    build_explanations(exp, out=copy, progress=False, max_tokens=500)
    data = load_explanations(exp, copy)
    from helpers.subject.corpus import load_corpus
    from helpers.subject.models import load_tokenizer

    stream = token_stream(load_corpus(exp.corpus, exp.max_documents), load_tokenizer(exp), exp.token_budget)
    held = heldout_mask(stream.doc[:500])
    assert data["meta"]["tokens"] == {"training": int((~held).sum()), "heldout": int(held.sum()),
                                      "stream": stream.n}
    for s, site in enumerate(exp.sites):
        assert np.array_equal(data["fired"][s], (X[site][:500][held] > 0).sum(0))


def test_the_llm_reads_the_same_held_out_windows_and_runs(built, tiny_llama_dir):
    """(Here for the smoke pass this module already has.) The LLM's windows are the artefact's:
    same held-out firings; a tiny random Llama explains and is scored end to end."""
    from helpers.explain.llm import experiment_windows, explain_with_llm

    exp, out, saes, X, file = built
    data = load_explanations(exp, out)
    site = exp.sites[2]
    feats = [int(f) for f in np.argsort(-data["fired"][2], kind="stable")[:2]]
    train, held = experiment_windows(exp, site, feats, out)
    assert held.fires.sum(0).tolist() == data["fired"][2, feats].tolist()
    assert held.window.max() + 1 == data["windows"]
    res = explain_with_llm(exp, str(tiny_llama_dir), site, feats, out=out, n_examples=2, n_windows=4)
    assert len(res["explanation"]) == 2 and res["detection_auroc"].shape == (2,)
    scored = np.isfinite(res["detection_auroc"])
    assert np.all((res["detection_auroc"][scored] >= 0) & (res["detection_auroc"][scored] <= 1))
