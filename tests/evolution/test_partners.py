"""Measures and partner tables equal a numpy brute force from dense activations (smoke subject)."""

import json

import numpy as np
import pytest
import torch

from helpers.errors import ArtefactMismatchError, ConfigError, CorruptArtefactError, MissingArtefactError
from helpers.evolution.measures import MEASURES, check_threshold, load_pair_inputs, measure_matrix
from helpers.evolution.partners import best_partner, build_partners, load_partners, partners_ready
from helpers.experiment import PRESETS
from helpers.stats import load_artefact, run_pass, statistics_ready

from ..stats.test_collect import dense_stream, random_topk_saes


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from helpers.subject.models import load_subject

    exp = PRESETS["smoke"].replace(token_budget=1200, step_tokens=400, batch_size=8, device="cpu")
    subject = load_subject(exp)
    saes = random_topk_saes(exp.sites, width=64, k=6)
    exp = exp.replace(sae_width=64, sae_k=6)
    out = tmp_path_factory.mktemp("stats")
    run_pass(exp, out=out, progress=False, subject=subject, saes=saes)
    X, _, _ = dense_stream(subject, saes, exp)
    return exp, out, saes, X


def brute_measures(xa, xb, wa, wb):
    """Every measure from dense activations ``[n, F]`` and decoder weights, in float64."""
    n = xa.shape[0]
    A, B = (xa > 0).astype(np.int64), (xb > 0).astype(np.int64)
    C = A.T @ B
    fa, fb = A.sum(0)[:, None], B.sum(0)[None, :]
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        xa, xb = xa.astype(np.float64), xb.astype(np.float64)
        cov = (xa - xa.mean(0)).T @ (xb - xb.mean(0))
        den = np.outer(np.sqrt(((xa - xa.mean(0)) ** 2).sum(0)), np.sqrt(((xb - xb.mean(0)) ** 2).sum(0)))
        out["pearson"] = np.where(den > 0, cov / den, np.nan)
        out["jaccard"] = np.where(fa + fb - C > 0, C / (fa + fb - C), np.nan)
        out["sufficiency"] = np.where(fa > 0, C / fa, np.nan)
        out["necessity"] = np.where(fb > 0, C / fb, np.nan)
        # mutual information of the indicators, from the 2x2 table of every pair
        mi = np.zeros(C.shape)
        for x in (0, 1):
            for y in (0, 1):
                pxy = ((A == x).astype(np.int64).T @ (B == y).astype(np.int64)) / n
                px = (A == x).mean(0)[:, None]
                py = (B == y).mean(0)[None, :]
                mi += np.where(pxy > 0, pxy * np.log2(np.where(pxy > 0, pxy, 1) / (px * py)), 0.0)
        out["mutual_info"] = mi
    da = wa / np.linalg.norm(wa, axis=1, keepdims=True)
    db = wb / np.linalg.norm(wb, axis=1, keepdims=True)
    out["cosine"] = da @ db.T
    return out, C


def stable_topk(values, k):
    """Indices of the k largest per row: value descending, then index ascending; -1 where NaN."""
    key = np.where(np.isnan(values), -np.inf, values)
    order = np.lexsort((np.broadcast_to(np.arange(key.shape[1]), key.shape), -key), axis=1)[:, :k]
    picked = np.take_along_axis(key, order, 1)
    return np.where(np.isfinite(picked), order, -1)


def test_every_measure_equals_brute_force(smoke_run):
    exp, out, saes, X = smoke_run
    for p, (a, b) in enumerate(exp.site_pairs):
        inputs = load_pair_inputs(exp, p, saes, out=out)
        brute, _ = brute_measures(X[a], X[b], saes[a].W_dec.detach().numpy(), saes[b].W_dec.detach().numpy())
        for m in MEASURES:
            got = measure_matrix(inputs, m, chunk=5)  # row chunks that do not divide F
            tol = 2e-5 if m in ("pearson", "cosine") else 1e-7
            np.testing.assert_allclose(got, brute[m], atol=tol, equal_nan=True, err_msg=f"{m} pair {p}")


def test_partner_tables_equal_brute_force(smoke_run):
    exp, out, saes, X = smoke_run
    k = 5
    build_partners(exp, k=k, saes=saes, out=out, chunk=7, progress=False)
    tables = load_partners(exp, out=out)
    assert tables["measures"] == list(MEASURES) and int(tables["k"]) == k
    F = exp.sae_width
    for p, (a, b) in enumerate(exp.site_pairs):
        brute, C = brute_measures(X[a], X[b], saes[a].W_dec.detach().numpy(), saes[b].W_dec.detach().numpy())
        r_disk = load_artefact(exp, "correlation", out)[f"r_{p}"].astype(np.float64)
        for mi, m in enumerate(MEASURES):
            # rank on what the tables rank (the pass's float32 r, float32 decoder dirs): ties are exact
            rank_on = r_disk if m == "pearson" else brute[m]
            for direction, mat, cnt in (("down", rank_on, C), ("up", rank_on.T, C.T)):
                idx = tables[f"{direction}_index"][p, mi]
                assert idx.shape == (F, k)
                if m in ("pearson", "cosine"):  # continuous: compare the values of the ranking
                    want = np.sort(np.where(np.isnan(mat), -np.inf, mat), 1)[:, ::-1][:, :k]
                    got_vals = tables[f"{direction}_values"][p, mi, :, :, mi]
                    np.testing.assert_allclose(np.where(idx >= 0, got_vals, -np.inf), want, atol=2e-5)
                else:  # from exact counts: the very same indices, ties by index
                    np.testing.assert_array_equal(idx, stable_topk(mat, k), err_msg=f"{m} {direction} pair {p}")
                # every listed pair carries the value of every measure and its co-firing count
                rows = np.repeat(np.arange(F)[:, None], k, 1)
                ok = idx >= 0
                for mj, m2 in enumerate(MEASURES):
                    full = brute[m2] if direction == "down" else brute[m2].T
                    np.testing.assert_allclose(tables[f"{direction}_values"][p, mi, :, :, mj][ok],
                                               full[rows[ok], idx[ok]], atol=2e-5, equal_nan=True)
                np.testing.assert_array_equal(tables[f"{direction}_count"][p, mi][ok], cnt[rows[ok], idx[ok]])
    # the top-1 helper agrees with the table
    idx, val = best_partner(tables, 0, "down", "jaccard")
    assert idx.shape == (F,) and np.all(val[idx >= 0] >= 0)


def test_dead_features_have_no_activation_partners(smoke_run):
    exp, out, saes, X = smoke_run
    tables = load_partners(exp, out=out) if partners_ready(exp, out=out) else None
    if tables is None:
        build_partners(exp, k=3, saes=saes, out=out, progress=False)
        tables = load_partners(exp, out=out)
    fired = load_artefact(exp, "dead_features", out)["fired"]
    for p in range(len(exp.site_pairs)):
        dead = np.flatnonzero(fired[p] == 0)
        suff = MEASURES.index("sufficiency")
        assert (tables["down_index"][p, suff, dead] == -1).all()


def test_bad_input_is_one_clear_error(smoke_run):
    exp, out, saes, _ = smoke_run
    with pytest.raises(ConfigError, match="unknown measure 'spearman'"):
        measure_matrix(load_pair_inputs(exp, 0, saes, out=out), "spearman")
    with pytest.raises(ConfigError, match=r"outside its range \[-1, 1\]"):
        check_threshold("pearson", 1.5)
    with pytest.raises(ConfigError, match=r"outside its range \[0, 1\]"):
        check_threshold("necessity", -0.1)
    with pytest.raises(ConfigError, match="k=65 partners must be between 1 and the number of features"):
        build_partners(exp, k=65, saes=saes, out=out, progress=False)
    with pytest.raises(ConfigError, match="pair index 9 out of range"):
        load_pair_inputs(exp, 9, saes, out=out)
    with pytest.raises(ArtefactMismatchError, match="another experiment"):
        load_partners(exp.replace(seed=7), out=out)
    with pytest.raises(MissingArtefactError, match="python -m helpers partners --experiment smoke"):
        load_partners(exp, out=out / "nowhere")


def test_corrupted_artefacts_are_named_with_the_command_that_rebuilds_them(smoke_run, tmp_path):
    import shutil

    exp, out, saes, _ = smoke_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert statistics_ready(exp, copy)
    data = (copy / "correlation.npz").read_bytes()
    (copy / "correlation.npz").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CorruptArtefactError, match=r"correlation.npz is corrupted or truncated.*"
                       r"python -m helpers collect --experiment smoke"):
        load_artefact(exp, "correlation", copy)
    assert not statistics_ready(exp, copy)
    # without a recorded checksum (older metadata) a truncated zip is still named, not a BadZipFile
    meta = json.loads((copy / "metadata.json").read_text())
    meta.pop("sha256")
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptArtefactError, match="correlation.npz is corrupted or truncated"):
        load_artefact(exp, "correlation", copy)
    # partner tables made from other statistics are refused
    (copy / "correlation.npz").write_bytes(data)
    meta["sha256"] = {"max_activations.npz": "0" * 64}
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtefactMismatchError, match="earlier statistics"):
        load_partners(exp, out=copy)


def test_jaccard_is_derived_on_demand_not_stored(smoke_run):
    exp, out, saes, X = smoke_run
    assert not (out / "cooccurrence.npz").exists()
    cooc = load_artefact(exp, "cooccurrence", out)
    a, b = exp.site_pairs[2]
    brute, _ = brute_measures(X[a], X[b], saes[a].W_dec.detach().numpy(), saes[b].W_dec.detach().numpy())
    np.testing.assert_allclose(cooc["jaccard_2"], brute["jaccard"], atol=1e-7, equal_nan=True)
    assert torch.is_tensor(load_pair_inputs(exp, 2, out=out).count)
