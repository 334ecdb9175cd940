"""Two SAEs at one site are one more adjacent pair of the pass: its measures equal a brute force.

The width sites ``<site>@w<width>`` read one model site; their per-site arrays are padded to the widest
site and their pairs are ``w_a x w_b``. The brute force encodes the same batches as the pass.
"""

import numpy as np
import pytest
import torch

from helpers.errors import ConfigError
from helpers.experiment import PRESETS, base_site, width_of_site, width_site
from helpers.stats import load_artefact, load_metadata, run_pass
from helpers.stats.memory import memory_bill, pair_cells, spool_bytes, Precision

from ..conftest import make_random_sae
from .test_collect import dense_stream

SITE = "blocks.1.hook_resid_pre"
WIDTHS = (8, 32, 128)


def width_experiment(**changes):
    return PRESETS["gpt2-res-jb"].replace(
        sites=tuple(width_site(SITE, w) for w in WIDTHS), corpus="wiki-summaries", max_documents=8,
        token_budget=600, context_length=32, batch_size=4, sae_width=max(WIDTHS), sae_k=8, step_tokens=96,
        top_k_examples=3, device="cpu", **changes)


def test_width_site_names():
    assert base_site(width_site(SITE, 512)) == SITE and width_of_site(width_site(SITE, 512)) == 512
    assert width_of_site(SITE) is None
    exp = width_experiment()
    assert exp.site_widths == WIDTHS and exp.width_pairs and exp.pair_widths(1) == (32, 128)


@pytest.mark.parametrize("sites, message", [
    ((f"{SITE}@w32", f"{SITE}@w8"), "not increasing"),
    ((f"{SITE}@w8",), "only one width"),
    ((f"{SITE}@w8", f"{SITE}@w32", "blocks.2.hook_resid_pre@w8"), "only one width"),
    ((f"{SITE}@w8", SITE), "both plainly and at a width"),
    ((f"{SITE}@wide", f"{SITE}@w8"), "give the SAE width"),
])
def test_bad_width_sites_are_one_line(sites, message):
    with pytest.raises(ConfigError, match=message) as err:
        width_experiment().replace(sites=sites, sae_width=32)
    assert "\n" not in str(err.value)


def test_sae_width_must_be_the_widest():
    with pytest.raises(ConfigError, match="must be the widest"):
        width_experiment().replace(sae_width=64)


def test_width_pairs_equal_brute_force(tiny_gpt2, tmp_path):
    exp = width_experiment()
    saes = {s: make_random_sae(64, w, seed=i) for i, (s, w) in enumerate(zip(exp.sites, WIDTHS))}
    with torch.no_grad():  # a dead feature in the middle width: its rows are NaN, it counts as dead
        saes[exp.sites[1]].b_enc[5] = -1e3
    out = tmp_path / "stats"
    run_pass(exp, out=out, progress=False, subject=tiny_gpt2, saes=saes)
    X, doc, pos = dense_stream(tiny_gpt2, saes, exp)
    n, F = len(doc), max(WIDTHS)
    assert load_metadata(exp, out)["tokens"] == n
    pad = lambda a: np.pad(a, (0, F - a.shape[0]))  # noqa: E731 - the per-site rows are padded to F
    mx = load_artefact(exp, "max_activations", out)["max"]
    np.testing.assert_array_equal(mx, np.stack([pad(X[s].max(0)) for s in exp.sites]))
    dead = load_artefact(exp, "dead_features", out)
    np.testing.assert_array_equal(dead["fired"], np.stack([pad((X[s] > 0).sum(0)) for s in exp.sites]))
    thr = np.array(exp.dead_thresholds)
    last = np.stack([((X[s] > 0).sum(0)[None, :] <= thr[:, None]).sum(1) for s in exp.sites], 1)
    np.testing.assert_array_equal(dead["dead"][-1], last)  # the padding is never counted dead
    pc = load_artefact(exp, "pair_coactivation", out)
    corr = load_artefact(exp, "correlation", out)
    cooc = load_artefact(exp, "cooccurrence", out)
    for i, (a, b) in enumerate(exp.site_pairs):
        A, B = (X[a] > 0).astype(np.int64), (X[b] > 0).astype(np.int64)
        C = A.T @ B
        assert pc[f"count_{i}"].shape == (WIDTHS[i], WIDTHS[i + 1])
        np.testing.assert_array_equal(pc[f"count_{i}"].astype(np.int64), C)
        for t_i, t in enumerate(exp.coactivation_thresholds):
            assert pc["never_all"][t_i, i, -1] == (C <= t).sum()
            alive = np.ix_(A.sum(0) > 0, B.sum(0) > 0)
            assert pc["never_alive"][t_i, i, -1] == (C[alive] <= t).sum()
        xa, xb = X[a].astype(np.float64), X[b].astype(np.float64)
        cov = (xa - xa.mean(0)).T @ (xb - xb.mean(0))
        denom = np.outer(np.linalg.norm(xa - xa.mean(0), axis=0), np.linalg.norm(xb - xb.mean(0), axis=0))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(denom > 0, cov / denom, np.nan)
        np.testing.assert_allclose(corr[f"r_{i}"], r, atol=2e-5, equal_nan=True)
        union = A.sum(0)[:, None] + B.sum(0)[None, :] - C
        with np.errstate(invalid="ignore", divide="ignore"):
            np.testing.assert_allclose(cooc[f"jaccard_{i}"], np.where(union > 0, C / union, np.nan), rtol=1e-6,
                                       equal_nan=True)
    assert np.isnan(corr["r_0"][:, 5]).all() and np.isnan(corr["r_1"][5]).all()
    top = load_artefact(exp, "top_examples", out)
    for si, s in enumerate(exp.sites):
        for f in range(WIDTHS[si]):
            nz = np.flatnonzero(X[s][:, f] > 0)
            hi = nz[np.argsort(-X[s][nz, f], kind="stable")][: exp.top_k_examples]
            np.testing.assert_array_equal(top["hi_values"][si, f, : len(hi)], X[s][hi, f])
            assert top["hi_doc"][si, f, : len(hi)].tolist() == doc[hi].tolist()
            assert top["hi_pos"][si, f, : len(hi)].tolist() == pos[hi].tolist()
    # measures of a width pair read as those of adjacent layers (necessity = #ab / #b)
    from helpers.evolution.measures import load_pair_inputs, measure_matrix

    inputs = load_pair_inputs(exp, 1, out=out)
    A, B = (X[exp.sites[1]] > 0), (X[exp.sites[2]] > 0)
    C = A.T.astype(np.int64) @ B
    with np.errstate(invalid="ignore", divide="ignore"):
        nec = np.where(B.sum(0) > 0, C / B.sum(0), np.nan)
    np.testing.assert_allclose(measure_matrix(inputs, "necessity"), nec, equal_nan=True, rtol=1e-6)


def test_width_pairs_under_several_passes_equal_one(tiny_gpt2, tmp_path):
    exp = width_experiment()
    saes = {s: make_random_sae(64, w, seed=i) for i, (s, w) in enumerate(zip(exp.sites, WIDTHS))}
    run_pass(exp, out=tmp_path / "one", progress=False, subject=tiny_gpt2, saes=saes)
    run_pass(exp, out=tmp_path / "two", progress=False, subject=tiny_gpt2, saes=saes, plan="passes", passes=2)
    for name in ("pair_coactivation", "correlation", "dead_features", "max_activations"):
        one, two = load_artefact(exp, name, tmp_path / "one"), load_artefact(exp, name, tmp_path / "two")
        for key in one:
            np.testing.assert_array_equal(one[key], two[key], err_msg=f"{name}/{key}")


def test_memory_bill_of_an_official_16k_by_262k_pair():
    """The bill counts the pair's 16k x 262k feature pairs, not 262k x 262k."""
    exp = PRESETS["gemma"].replace(sites=(width_site("blocks.5.hook_resid_post", 16384),
                                          width_site("blocks.5.hook_resid_post", 262144)), sae_width=262144)
    assert pair_cells(exp, 262144) == [16384 * 262144]
    prec = Precision(torch.int32, torch.float32)
    bill = memory_bill(exp, 262144, 268_000_000, precision=prec)
    pairs = next(v for k, v in bill.items() if k.startswith("pair statistics"))
    assert pairs == 16384 * 262144 * 8
    assert spool_bytes(exp, 262144, prec) == 16384 * 262144 * 8


@pytest.mark.parametrize("codes", [True, False], ids=["recorded codes", "model re-run"])
def test_splitting_artefact_equals_the_split_rule_on_dense_activations(tiny_gpt2, tmp_path, codes, monkeypatch):
    """build_splitting reads the pass's counts and its recorded codes (or, without them, re-runs the model);
    the same rule applied to counts and firings from dense activations (batched as the pass) gives the
    same arrays."""
    from helpers.evolution.decoder import decoder_directions
    from helpers.evolution.splitting import split_pair
    from helpers.evolution.splitting_artefact import build_splitting, load_splitting, splitting_ready

    exp = width_experiment()
    saes = {s: make_random_sae(64, w, seed=i) for i, (s, w) in enumerate(zip(exp.sites, WIDTHS))}
    out = tmp_path / "stats"
    run_pass(exp, out=out, progress=False, subject=tiny_gpt2, saes=saes, record_codes=codes)
    monkeypatch.setattr("helpers.subject.models.load_subject", lambda exp, *a, **k: tiny_gpt2)
    assert not splitting_ready(exp, out)
    build_splitting(exp, out=out, saes=saes, progress=False)
    assert splitting_ready(exp, out)
    got = load_splitting(exp, out)
    X, doc, _ = dense_stream(tiny_gpt2, saes, exp)
    for i, (a, b) in enumerate(exp.site_pairs):
        A, B = X[a] > 0, X[b] > 0
        want = split_pair(A.T.astype(np.int64) @ B, A.sum(0), B.sum(0), len(doc), np.nonzero(A), np.nonzero(B),
                          decoder_directions(saes[a]), decoder_directions(saes[b]))
        res = got["pairs"][i]
        for name in ("n_children", "covered", "splits", "persists", "parent", "is_new"):
            np.testing.assert_array_equal(getattr(res, name), getattr(want, name), err_msg=name)
        np.testing.assert_allclose(res.recall, want.recall, equal_nan=True)
        assert (res.n_split, res.n_new, res.alive_b) == (want.n_split, want.n_new, want.alive_b)
    assert len(got["meta"]["shares"]) == 2 and got["meta"]["thresholds"]["necessity"] == 0.8


def test_splitting_refuses_an_experiment_without_width_pairs(tmp_path):
    from helpers.evolution.splitting_artefact import build_splitting

    with pytest.raises(ConfigError, match="no width pairs") as err:
        build_splitting(PRESETS["smoke"], out=tmp_path)
    assert "\n" not in str(err.value)


def test_width_sweep_experiment_by_name():
    from helpers.experiment import get_experiment
    from helpers.subject.widths import WIDTH_PASS_TOKENS, WidthSweep

    exp = get_experiment("smoke-widths")
    assert exp == WidthSweep(base="smoke").pass_experiment()
    assert exp.site_widths == (64, 256, 1024) and {base_site(s) for s in exp.sites} == {"hidden.3"}
    assert get_experiment("gemma-widths").token_budget == WIDTH_PASS_TOKENS  # (the base reads 300k)
    with pytest.raises(ConfigError, match="unknown experiment preset 'nothing-widths'"):
        get_experiment("nothing-widths")


def test_prepare_skips_a_preset_without_a_trained_sweep(artefacts_tmp):
    from helpers.pipeline import STEPS

    step = next(s for s in STEPS if s.name == "width sweep")
    line = step.run(PRESETS["smoke"], progress=False)
    assert "skipped" in line and "make widths" in line
    assert step.run(width_experiment(), progress=False) == ""  # not a step of a width sweep's own pass


def test_default_sweep_experiment_is_none_where_a_preset_has_no_sweep():
    from helpers.subject.widths import default_sweep_experiment

    assert default_sweep_experiment(PRESETS["smoke"]).sites[0] == "hidden.3@w64"
    assert default_sweep_experiment(PRESETS["gpt2-res-jb"]) is None  # pretrained SAEs
    assert default_sweep_experiment(PRESETS["smoke"].replace(sae_width=24, sae_k=8)) is None  # 6 < k
    assert default_sweep_experiment(width_experiment()) is None  # a sweep's own pass


def test_info_gives_each_width():
    from helpers.report import describe, info_rows

    rows = dict(info_rows(describe(width_experiment(), count_tokens=False)))
    assert rows["SAEs"] == "pretrained gpt2-small-res-jb, 8/32/128 features"
    smoke = dict(info_rows(describe(PRESETS["smoke"].replace(sites=("hidden.3@w64", "hidden.3@w256"), sae_width=256),
                                    count_tokens=False)))
    assert smoke["SAEs"].startswith("trained here, 64/256 features, TopK k=16")


def test_graph_without_weights_keeps_its_edges_and_counts(tiny_gpt2, tmp_path):
    """graph_weights=False: the same edges and counts, NaN weights, and no F^2/2 sums in the bill."""
    exp = width_experiment()
    saes = {s: make_random_sae(64, w, seed=i) for i, (s, w) in enumerate(zip(exp.sites, WIDTHS))}
    run_pass(exp, out=tmp_path / "w", progress=False, subject=tiny_gpt2, saes=saes)
    light = exp.replace(graph_weights=False)
    run_pass(light, out=tmp_path / "n", progress=False, subject=tiny_gpt2, saes=saes)
    full, none = (load_artefact(e, "coactivation_graph", tmp_path / d) for e, d in ((exp, "w"), (light, "n")))
    for key in ("edge_site", "edge_src", "edge_dst", "edge_count"):
        np.testing.assert_array_equal(full[key], none[key])
    assert np.isfinite(full["edge_weight"]).all() and np.isnan(none["edge_weight"]).all()
    np.testing.assert_array_equal(load_artefact(exp, "pair_coactivation", tmp_path / "w")["count_1"],
                                  load_artefact(light, "pair_coactivation", tmp_path / "n")["count_1"])
    graph = lambda e: next(v for k, v in memory_bill(e, 128, 0).items() if k.startswith("co-activation graph ("))  # noqa: E731
    assert graph(exp) == 3 * (128 * 127 // 2) * 8 and graph(light) == 0


def test_official_width_experiment_reads_each_width_with_its_sae_id():
    from helpers.subject.widths import official_width_experiment

    exp = official_width_experiment("gemma-scope-2-270m-pt-res", 5, (16384, 262144))
    assert exp.sites == ("blocks.5.hook_resid_post@w16384", "blocks.5.hook_resid_post@w262144")
    assert [s.split("_width_")[1].split("_")[0] for s in exp.sae_ids] == ["16k", "262k"]
    assert exp.sae_width == 262144 and not exp.graph_weights
    with pytest.raises(ConfigError, match="no SAE of width"):
        official_width_experiment("gemma-scope-2-270m-pt-res", 5, (16384, 100))
