"""neurons.npz equals a numpy brute force from dense activations (tiny random Llama, random TopK
SAEs, batched as the pass batches, neurons read by plain hooks on down_proj); it round-trips,
refuses what is stale or broken with the command that rebuilds it, and the report counts by hand."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

from helpers.errors import ArtefactMismatchError, ConfigError, CorruptArtefactError, MissingArtefactError
from helpers.evolution.neuron_artefact import (build_neurons, check_bill, format_neurons, load_neurons,
                                               neuron_bill, neuron_budget, neurons_ready, summarise)
from helpers.evolution.neuron_report import alignment_rows, best_abs_r, neuron_rows, neuron_totals, unit_score_rows
from helpers.experiment import get_experiment
from helpers.stats import run_pass
from helpers.subject.capture import capture_residuals
from helpers.subject.corpus import iter_token_batches, load_corpus

from ..stats.test_collect import random_topk_saes

SITES = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]


@pytest.fixture(scope="module")
def neuron_run(tiny_llama_dir, tmp_path_factory):
    from helpers.subject.models import load_subject

    folder = tmp_path_factory.mktemp("neurons")
    path = folder / "tiny-llama.toml"
    path.write_text(
        f'model = "{tiny_llama_dir}"\nsites = {json.dumps(SITES)}\ncorpus = "wiki-summaries"\n'
        'max_documents = 30\ntoken_budget = 2200\nneuron_tokens = 2100\ncontext_length = 32\nbatch_size = 4\n'
        'sae_width = 64\nsae_k = 6\nstep_tokens = 200\ntop_k_examples = 4\ndevice = "cpu"\n')
    exp = get_experiment(str(path))
    subject = load_subject(exp)
    saes = random_topk_saes(exp.sites, d_in=32, width=64, k=6)
    out = folder / "stats"
    run_pass(exp, out=out, progress=False, subject=subject, saes=saes)
    build_neurons(exp, out=out, subject=subject, saes=saes, progress=False)
    return exp, out, subject, saes


def dense_with_hooks(exp, subject, saes):
    """Dense SAE codes per site and neurons per block (forward pre-hooks on down_proj), token by
    token in the pass's batches."""
    layers = subject.hf_model.model.layers
    X, Y, seen = {s: [] for s in exp.sites}, {b: [] for b in range(3)}, {}
    hooks = [layers[b].mlp.down_proj.register_forward_pre_hook(lambda m, a, b=b: seen.__setitem__(b, a[0]))
             for b in range(3)]
    docs = load_corpus(exp.corpus, exp.max_documents)
    try:
        for batch in iter_token_batches(docs, subject.tokenizer, subject.special_tokens, exp.context_length,
                                        exp.batch_size, neuron_budget(exp)):
            with torch.no_grad():
                subject.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                acts = capture_residuals(subject, batch.input_ids, batch.attention_mask, exp.sites)
                for s in exp.sites:
                    X[s].append(saes[s].encode(acts[s][batch.token_mask]).double().numpy())
            for b in range(3):
                Y[b].append(seen[b][batch.token_mask].double().numpy())
    finally:
        for h in hooks:
            h.remove()
    return {s: np.concatenate(v) for s, v in X.items()}, {b: np.concatenate(v) for b, v in Y.items()}


def corr(x, y):
    f = x.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(x.T, y.T)[:f, f:]
    r[(x.std(0) == 0)[:, None] | (y.std(0) == 0)[None, :]] = np.nan
    return r


def test_every_best_partner_equals_numpy(neuron_run):
    exp, out, subject, saes = neuron_run
    data = load_neurons(exp, out)
    X, Y = dense_with_hooks(exp, subject, saes)
    assert int(data["n_tokens"]) == 2100 == len(Y[0])  # neuron_tokens of the token_budget, as batched
    np.testing.assert_array_equal(data["layers"], [[-1, -1], [0, -1], [2, 1]])
    checked = 0
    for i, site in enumerate(exp.sites):
        np.testing.assert_array_equal(data["feature_fired"][i], (X[site] > 0).sum(0) if i else 0)
        for j, block in enumerate(data["layers"][i]):
            if block < 0:  # no block: nothing stored
                assert (data["feature_best_neuron"][i, j] == -1).all() and np.isnan(data["feature_best_r"][i, j]).all()
                continue
            r = corr(X[site], Y[int(block)])
            a = np.nan_to_num(np.abs(r), nan=-1)
            best = data["feature_best_neuron"][i, j]
            dead = (a.max(1) < 0)
            assert (best[dead] == -1).all() and not (best[~dead] == -1).any()
            rows = np.flatnonzero(~dead)
            # the chosen neuron reaches the largest |r| (ties aside) and its signed r is numpy's
            np.testing.assert_allclose(a[rows, best[rows]], a[rows].max(1), atol=1e-6)
            np.testing.assert_allclose(data["feature_best_r"][i, j][rows], r[rows, best[rows]], atol=1e-5)
            nb = data["neuron_best_feature"][i, j]
            np.testing.assert_allclose(np.abs(data["neuron_best_r"][i, j]), a.max(0), atol=1e-5)
            assert (a[nb, np.arange(len(nb))] >= a.max(0) - 1e-6).all()
            checked += len(rows)
    assert checked > 50


def test_unit_scores_equal_a_brute_force_from_dense_activations(neuron_run):
    """The rate-matched sample of features and neurons, re-derived from dense activations: the
    sampled features fire as often as the artefact says, their neurons are the recorder's draw,
    and every score equals explain_site on firings read from the dense codes and neurons."""
    from helpers.explain.artefact import explain_site
    from helpers.explain.stream import heldout_mask, key_spaces, token_stream, windows
    from helpers.explain.units import MIN_FIRINGS, UnitRecorder, rate_matched_firing

    exp, out, subject, saes = neuron_run
    data = load_neurons(exp, out)
    X, Y = dense_with_hooks(exp, subject, saes)
    stream = token_stream(load_corpus(exp.corpus, exp.max_documents), subject.tokenizer, neuron_budget(exp))
    assert stream.n == 2100
    held = heldout_mask(stream.doc)
    assert held.any() and not held.all()
    spaces, win = key_spaces(stream, len(subject.tokenizer)), windows(stream.subset(held))
    draw = UnitRecorder(exp.sites[1:], 64, seed=exp.seed).neurons
    assert (data["sample_feature"][0] == -1).all() and np.isnan(data["sample_feature_detection_auroc"][0]).all()
    for i, site in list(enumerate(exp.sites))[1:]:
        feats = data["sample_feature"][i][data["sample_feature"][i] >= 0]
        m = feats.size
        counts = (X[site] > 0).sum(0)
        assert m == min(64, (counts >= MIN_FIRINGS).sum()) and len(set(feats)) == m
        np.testing.assert_array_equal(data["sample_fired"][i, :m], counts[feats])
        np.testing.assert_array_equal(data["sample_neuron"][i, :m], draw[site][:m])
        tok, unit = np.nonzero(X[site][:, feats] > 0)
        _, _, fsc = explain_site(tok, unit, m, spaces, held, win)
        block = int(data["layers"][i, 0])
        ntok, nunit = rate_matched_firing(Y[block][:, draw[site][:m]], counts[feats])
        assert np.bincount(nunit, minlength=m).tolist() == counts[feats].tolist()
        _, _, nsc = explain_site(ntok, nunit, m, spaces, held, win)
        for unit_name, sc in (("feature", fsc), ("neuron", nsc)):
            for name, key in (("detection_auroc", "auroc"), ("balanced_accuracy", "balanced_accuracy"),
                              ("fuzzing", "fuzzing")):
                np.testing.assert_allclose(data[f"sample_{unit_name}_{name}"][i, :m], sc[key], rtol=1e-6)
        assert np.isfinite(data["sample_feature_detection_auroc"][i, :m]).sum() > m // 2


def test_unit_score_rows_by_hand():
    nan = np.nan
    data = {"sites": ["a", "b", "c"],
            "sample_feature": np.array([[1, 2, -1], [3, 4, 5], [-1, -1, -1]]),
            "sample_feature_detection_auroc": np.array([[0.9, 0.7, nan], [0.8, 0.8, 0.8], [nan] * 3]),
            "sample_neuron_detection_auroc": np.array([[0.6, 0.6, nan], [0.5, nan, 0.7], [nan] * 3])}
    rows = unit_score_rows(data, n_boot=500)
    assert [r["site"] for r in rows] == ["a", "b", "all sites"]
    a, b, pooled = rows
    assert (a["features"], a["neurons"], a["features' mean"], a["neurons' mean"]) == (2, 2, 0.8, 0.6)
    assert a["difference"] == 0.2 and b["difference"] == 0.2 and b["neurons"] == 2
    assert b["95% interval"] == (0.1, 0.3)  # the features are constant: the neurons' spread alone
    assert pooled["features"] == 5 and pooled["neurons"] == 4 and pooled["difference"] == round(0.8 - 0.6, 3)
    lo, hi = pooled["95% interval"]
    assert lo <= pooled["difference"] <= hi and lo < hi
    with pytest.raises(ConfigError, match="score 'x': choose among"):
        unit_score_rows(data, "x")


def test_summarise_by_hand():
    r = np.array([[0.1, -0.8, 0.3], [np.nan, np.nan, np.nan], [0.5, 0.2, np.nan]])
    s = summarise(r)
    np.testing.assert_array_equal(s["feature_best"], [1, -1, 0])
    np.testing.assert_allclose(s["feature_r"], [-0.8, np.nan, 0.5])
    np.testing.assert_array_equal(s["neuron_best"], [2, 0, 0])
    np.testing.assert_allclose(s["neuron_r"], [0.5, -0.8, 0.3])


def test_round_trip_and_refusals(neuron_run, tmp_path):
    exp, out, subject, saes = neuron_run
    data = load_neurons(exp, out)
    assert data["sites"] == list(exp.sites) and data["slots"] == ["same", "before"]
    assert data["meta"]["neuron_site"] == "mlp.down_proj.input" and data["meta"]["n_neurons"] == 64
    assert data["meta"]["tokens"] == 2100 and data["meta"]["seconds"] > 0
    assert set(data["meta"]["memory_bill_bytes"]) >= {"model", "correlation moments (float64)"}
    assert neurons_ready(exp, out) and not neurons_ready(exp.replace(neuron_tokens=100), out)
    with pytest.raises(ArtefactMismatchError, match="neuron_tokens.*python -m helpers neurons --experiment tiny-llama"):
        load_neurons(exp.replace(neuron_tokens=100), out)
    with pytest.raises(MissingArtefactError, match="no feature-neuron correlations in"):
        load_neurons(exp, tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    raw = (copy / "neurons.npz").read_bytes()
    (copy / "neurons.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptArtefactError, match="neurons.npz is corrupted or truncated.*helpers neurons"):
        load_neurons(exp, copy)
    assert not neurons_ready(exp, copy)
    text = format_neurons(exp, out / "neurons.npz")
    assert text.startswith("features against neurons:") and "the embeddings, no MLP before it" in text
    assert re.search(r"block 2: \d+/64 neurons unexplained", text)
    assert re.search(r"explained alike .*: \d+ features 0\.\d+, \d+ rate-matched neurons 0\.\d+, "
                     r"difference [+-]0\.\d+ \(95% interval", text)


def test_the_bill_is_refused_in_one_line(neuron_run):
    exp = neuron_run[0]
    bill = neuron_bill(exp, 64, 64, 1000)
    # two sites with neurons: 64 features x (64 + 128) neurons of float64 moments, and their sides
    assert bill["correlation moments (float64)"] == 8 * (64 * 67 + 2 * 64 + 1) + 8 * (64 * 131 + 4 * 64 + 1)
    with pytest.raises(ConfigError) as err:
        check_bill(exp, bill, torch.device("cpu"), available=1000)
    assert "the neuron pass needs" in str(err.value) and "lower batch_size" in str(err.value)
    assert "\n" not in str(err.value)


def fake(layers, feature_r, neuron_r):
    s = len(layers)
    return {"sites": [f"s{i}" for i in range(s)], "slots": ["same", "before"], "layers": np.array(layers),
            "feature_best_r": np.array(feature_r, dtype=float), "neuron_best_r": np.array(neuron_r, dtype=float),
            "n_tokens": np.int64(10)}


def test_the_report_counts_by_hand():
    nan = np.nan
    data = fake([[0, -1], [1, 0]],
                [[[0.95, -0.2, nan], [nan, nan, nan]], [[0.1, -0.92, nan], [0.91, 0.5, nan]]],
                [[[0.95, 0.2], [nan, nan]], [[-0.92, 0.1], [0.91, 0.25]]])
    rows = alignment_rows(data)
    median_before = rows[0].pop("median best |r| (block before)")
    assert rows[0] == {"site": "s0", "block": 0, "block before": None, "features": 2, "aligned (block)": 1,
                       "aligned (block before)": None, "aligned (either)": 1, "aligned share": 0.5,
                       "median best |r| (block)": pytest.approx(0.575)}
    assert np.isnan(median_before)  # s0 has no block before
    # s1: feature 1 aligned with its block (0.92), feature 0 with the block before (0.91)
    assert [rows[1][k] for k in ("aligned (block)", "aligned (block before)", "aligned (either)")] == [1, 1, 2]
    blocks = neuron_rows(data)
    # block 0: neuron 0 reaches 0.95 (s0) and 0.91 (s1); neuron 1 reaches 0.2 and 0.25: below 0.3
    assert blocks[0] == {"block": 0, "sites": ["s0", "s1"], "neurons": 2, "no feature at |r| >= 0.3": 1, "share": 0.5}
    assert blocks[1]["no feature at |r| >= 0.3"] == 1  # block 1: neuron 1 at 0.1
    totals = neuron_totals(data)
    assert (totals["features"], totals["aligned"], totals["neurons"], totals["unexplained"]) == (4, 3, 4, 2)
    assert set(best_abs_r(data)["s0"]) == {"same"}
    np.testing.assert_allclose(sorted(best_abs_r(data)["s1"]["before"]), [0.5, 0.91])
    with pytest.raises(ConfigError, match=r"aligned=1.5 is outside its range \[0, 1\]"):
        alignment_rows(data, aligned=1.5)


def test_command_line_errors_are_one_line(capsys, artefacts_tmp):
    from helpers.cli import main

    assert main(["neurons", "--experiment", "smoke", "--set", "neuron_tokens=0"]) == 2
    assert "error: neuron_tokens=0 must be a positive number of tokens" in capsys.readouterr().err
    assert main(["neurons", "--experiment", "smoke", "--quiet"]) == 2  # no statistics yet
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no statistics in") and "python -m helpers collect --experiment smoke" in err
    assert len(err.splitlines()) == 1


def test_prepare_skips_a_family_without_a_neuron_site_in_one_line(monkeypatch, tmp_path):
    import dataclasses

    from helpers.experiment import FAMILIES, PRESETS
    from helpers.pipeline import STEPS

    monkeypatch.setitem(FAMILIES, "bert", dataclasses.replace(FAMILIES["bert"], neurons=None))
    step = next(s for s in STEPS if s.name == "features against neurons")
    line = step.build(PRESETS["smoke"], progress=False)
    assert line == ("features against neurons for preset 'smoke' skipped: the model family 'bert' has no "
                    "known neuron site")
    with pytest.raises(ConfigError, match="model family 'bert' has no known MLP neuron site"):
        build_neurons(PRESETS["smoke"], out=tmp_path)
