"""Matching methods: partners equal a numpy brute force, drops equal one ablation per edge, the
random control picks alive features only, bad input is one clear error (smoke subject, tiny
random TopK SAEs)."""

import json
import shutil

import numpy as np
import pytest

from helpers.errors import ArtefactMismatchError, ConfigError, CorruptArtefactError, MissingArtefactError
from helpers.evolution.matching import (
    METHODS, check_methods, matched_partners, method_agreement, random_partners, sample_downstream, success,
    success_table,
)
from helpers.evolution.matching_artefact import _Windows, build_matching, example_windows, load_matching, matching_ready
from helpers.evolution.partners import build_partners, load_partners
from helpers.interventions.deactivation import ablation_drops_one_at_a_time
from helpers.stats import load_artefact

from .test_partners import brute_measures, smoke_run, stable_topk  # noqa: F401 (fixture)

N_DOWN = 6


@pytest.fixture(scope="module")
def matched(smoke_run):  # noqa: F811
    from helpers.subject.models import load_subject

    exp, out, saes, X = smoke_run
    build_partners(exp, k=3, saes=saes, out=out, progress=False)
    subject = load_subject(exp)
    build_matching(exp, n_downstream=N_DOWN, n_windows=2, radius=5, subject=subject, saes=saes, out=out,
                   chunk=4, rows_per_pass=5, progress=False)
    return exp, out, saes, X, subject, load_matching(exp, out)


def test_matched_partners_equal_a_numpy_argmax(matched):
    exp, out, saes, X, _, _ = matched
    tables = load_partners(exp, out=out)
    for p, (a, b) in enumerate(exp.site_pairs):
        brute, _ = brute_measures(X[a], X[b], saes[a].W_dec.detach().numpy(), saes[b].W_dec.detach().numpy())
        got = matched_partners(tables, p)
        assert got.shape == (len(METHODS), exp.sae_width)
        r_disk = load_artefact(exp, "correlation", out)[f"r_{p}"].astype(np.float64)
        for k, m in enumerate(METHODS):
            # argmax over upstream features (rows) for every downstream feature, ties to the lowest index
            values = (r_disk if m == "pearson" else brute[m]).T
            want = stable_topk(values, 1)[:, 0]
            if m == "cosine":  # float32 vs float64 directions: the same best value
                np.testing.assert_allclose(values[np.arange(len(want)), got[k]], values[np.arange(len(want)), want],
                                           atol=1e-5)
            else:
                np.testing.assert_array_equal(got[k], want, err_msg=f"{m} pair {p}")


def test_drops_and_successes_equal_one_ablation_per_edge(matched):
    exp, out, saes, _, subject, data = matched
    from helpers.subject.corpus import load_corpus

    assert data["methods"] == list(METHODS) + ["random"]
    assert (data["downstream"] >= 0).all()  # every pair found N_DOWN features firing in their windows
    windows = _Windows(load_corpus(exp.corpus, exp.max_documents), subject.tokenizer, subject.special_tokens,
                       exp.context_length, radius=5)
    top = load_artefact(exp, "top_examples", out)
    p = 2
    site_a, site_b = exp.site_pairs[p]
    # the artefact's partners are the tables' top-1 partners of the evaluated features
    chosen = matched_partners(load_partners(exp, out=out), p)
    evaluated = data["downstream"][p]
    np.testing.assert_array_equal(data["partner"][p, :-1], chosen[:, evaluated])
    for j in range(2):
        b = int(data["downstream"][p, j])
        examples = [(int(top["hi_doc"][p + 1, b, i]), int(top["hi_pos"][p + 1, b, i])) for i in range(2)]
        examples = [e for e in examples if e[0] >= 0]
        batch = windows.batch(examples)
        for k in range(len(data["methods"])):
            a = int(data["partner"][p, k, j])
            if a < 0:
                assert np.isnan(data["drop"][p, k, j])
                continue
            edges = [(w, a, b) for w in range(len(examples))]
            s, n = ablation_drops_one_at_a_time(subject, saes, batch.input_ids, batch.attention_mask,
                                                batch.token_mask, site_a, site_b, edges)
            assert int(n.sum()) == data["n_firing"][p, j]
            want = float(s.sum() / n.sum())
            assert data["drop"][p, k, j] == pytest.approx(want, abs=1e-4), (data["methods"][k], b, a)
            assert success(data["drop"][p, k, j:j + 1], 0.5)[0] == (want >= 0.5)
    assert (data["drop"][np.isfinite(data["drop"])] <= 1 + 1e-6).all()
    # a silent partner changes nothing: its drop is exactly 0
    silent = ~data["upstream_fired"] & np.isfinite(data["drop"])
    assert silent.any() and (data["drop"][silent] == 0).all()


def test_success_rule_and_summaries():
    np.testing.assert_array_equal(success(np.array([0.5, 0.4999, np.nan, 1.0, -0.2]), 0.5),
                                  [True, False, False, True, False])
    data = {
        "methods": ["cosine", "random"], "pairs": ["x->y"], "downstream": np.array([[3, 4, 5, -1]]),
        "partner": np.array([[[1, 2, 2, -1], [1, 7, -1, -1]]]),
        "drop": np.array([[[0.9, 0.1, 0.6, np.nan], [0.9, 0.0, np.nan, np.nan]]]),
        "upstream_fired": np.array([[[True, True, True, False], [True, False, False, False]]]),
    }
    rows = {(r["pair"], r["method"]): r for r in success_table(data, 0.5)}
    assert rows[("x->y", "cosine")]["success_rate"] == pytest.approx(2 / 3)
    assert rows[("x->y", "cosine")]["mean_drop"] == pytest.approx(1.6 / 3)
    assert rows[("all pairs", "random")]["success_rate"] == pytest.approx(1 / 3)  # undefined = failure
    assert rows[("x->y", "random")]["defined"] == 2
    np.testing.assert_allclose(method_agreement(data), [[1, 1 / 3], [1 / 3, 2 / 3]])


def test_random_control_never_picks_a_dead_feature(matched):
    exp, out, _, _, _, data = matched
    fired = load_artefact(exp, "dead_features", out)["fired"]
    for p in range(len(exp.site_pairs)):
        picks = data["partner"][p, -1][data["downstream"][p] >= 0]
        assert (fired[p][picks] > 0).all()
    fired_a = np.array([0, 5, 0, 0, 1, 0])
    draws = random_partners(fired_a, 1000, np.random.default_rng(0))
    assert set(draws.tolist()) == {1, 4}


def test_example_windows_hold_the_position():
    ids = list(range(100))
    (start, w), = example_windows(ids, [3], radius=5, room=62)
    assert start == 0 and w == list(range(9))
    (start, w), = example_windows(ids, [50], radius=40, room=20)
    assert start == 10 and len(w) == 20  # cut to the room the model leaves


def test_bad_input(matched, tmp_path):
    exp, out, saes, _, subject, _ = matched
    with pytest.raises(ConfigError, match="unknown matching method 'spearman'"):
        check_methods(("cosine", "spearman"))
    with pytest.raises(ConfigError, match="unknown matching method"):
        build_matching(exp, methods=("mutual-info",), subject=subject, saes=saes, out=out, progress=False)
    with pytest.raises(ConfigError, match=r"10 downstream features asked for, but only 3 are alive.*at most 3"):
        sample_downstream(np.array([1, 2, 3]), 10, np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"downstream features asked for, but only \d+ are alive"):
        build_matching(exp, n_downstream=10_000, subject=subject, saes=saes, out=out, progress=False)
    with pytest.raises(ConfigError, match="no upstream feature ever fired"):
        random_partners(np.zeros(4), 3, np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"success threshold 1.5 must lie in \(0, 1\]"):
        success(np.array([0.5]), 1.5)
    with pytest.raises(ArtefactMismatchError, match="another experiment.*python -m helpers matching"):
        load_matching(exp.replace(seed=7), out)
    with pytest.raises(MissingArtefactError, match="python -m helpers matching --experiment smoke"):
        load_matching(exp, tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = (copy / "matching.npz").read_bytes()
    (copy / "matching.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArtefactError, match="matching.npz is corrupted.*python -m helpers matching"):
        load_matching(exp, copy)
    assert not matching_ready(exp, copy) and matching_ready(exp, out)
    meta = json.loads((copy / "partners.json").read_text())  # newer partner tables: results are stale
    meta["sha256"] = "0" * 64
    (copy / "partners.json").write_text(json.dumps(meta))
    with pytest.raises(ArtefactMismatchError, match="other partner tables"):
        load_matching(exp, copy)


def test_cli_without_statistics_is_one_line(capsys, artefacts_tmp):
    from helpers.cli import main

    assert main(["matching", "--experiment", "smoke", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# ----------------------------------------------------------------------------- measured edges

def tiny_matching():
    """2 pairs, methods cosine/pearson + the control, 3 downstream slots each (hand-built)."""
    nan = np.nan
    return {
        "methods": np.array(["cosine", "pearson", "random"]), "sites": np.array(["s.0", "s.1", "s.2"]),
        "pairs": np.array(["s.0->s.1", "s.1->s.2"]),
        "downstream": np.array([[5, 7, -1], [2, 3, 4]]),
        "partner": np.array([[[1, 2, 9], [1, 3, 9], [4, 2, 9]],
                             [[0, -1, 0], [0, 1, 0], [6, 1, 6]]]),
        "drop": np.array([[[0.8, 0.1, nan], [0.8, 0.3, nan], [0.0, 0.1, nan]],
                          [[-0.2, nan, 0.5], [-0.2, 0.9, 0.5], [0.0, 0.9, nan]]]),
        "upstream_fired": np.array([[[1, 1, 0], [1, 1, 0], [0, 1, 0]], [[1, 0, 1], [1, 1, 1], [0, 1, 0]]], bool),
        "n_firing": np.array([[4, 6, 0], [3, 2, 5]]),
    }


def test_measured_edges_are_distinct_and_skip_undefined():
    from helpers.evolution.measured_edges import measured_edges

    e = measured_edges(tiny_matching())
    got = sorted(zip(e.site_a, e.a.tolist(), e.site_b, e.b.tolist(), e.drop.round(6).tolist(), e.chosen_names(),
                     e.upstream_fired.tolist(), e.n_firing.tolist()))
    assert got == [
        ("s.0", 1, "s.1", 5, 0.8, "cosine+pearson", True, 4),  # two methods, one edge
        ("s.0", 2, "s.1", 7, 0.1, "cosine+random", True, 6),
        ("s.0", 3, "s.1", 7, 0.3, "pearson", True, 6),
        ("s.0", 4, "s.1", 5, 0.0, "random", False, 4),  # silent partner: measured, drop 0
        ("s.1", 0, "s.2", 2, -0.2, "cosine+pearson", True, 3),
        ("s.1", 0, "s.2", 4, 0.5, "cosine+pearson", True, 5),  # random's NaN drop for #4 is left out
        ("s.1", 1, "s.2", 3, 0.9, "pearson+random", True, 2),  # cosine's -1 partner is left out
        ("s.1", 6, "s.2", 2, 0.0, "random", False, 3),
    ]
    assert e.choices == 13 and len(e) == 8 and e.n_methods().tolist() == [2, 2, 1, 1, 2, 2, 2, 1]
    assert e.chosen_by_method("pearson").sum() == 5
    # sorted by pair, a, b; the frame has one row per edge
    assert list(zip(e.pair, e.a, e.b)) == sorted(zip(e.pair, e.a, e.b))
    assert len(e.to_frame()) == 8
    assert e.drop[e.lookup()[("s.1", 1, "s.2", 3)]] == pytest.approx(0.9) and ("s.1", 1, "s.2", 4) not in e.lookup()
    no_control = measured_edges(tiny_matching(), include_control=False)
    assert len(no_control) == 6 and "random" not in set("+".join(no_control.chosen_names()).split("+"))


def test_measured_edges_disagreeing_duplicates_and_bad_input(caplog):
    from helpers.evolution.measured_edges import describe, measured_edges

    m = tiny_matching()
    m["drop"][0, 1, 0] = 0.6  # pearson's copy of (s.0 #1 -> s.1 #5) disagrees with cosine's 0.8
    with caplog.at_level("WARNING"):
        e = measured_edges(m)
    assert e.drop[(e.pair == 0) & (e.a == 1) & (e.b == 5)][0] == pytest.approx(0.7)
    assert "different drops" in caplog.text
    m["drop"][:] = np.nan
    empty = measured_edges(m)
    assert len(empty) == 0 and "no measured edge" in describe(empty)
    del m["drop"]
    with pytest.raises(ConfigError, match=r"lack \['drop'\].*python -m helpers matching") as err:
        measured_edges(m)
    assert "\n" not in str(err.value)
    m = tiny_matching()
    m["downstream"] = m["downstream"][:, :2]
    with pytest.raises(ConfigError, match="inconsistent.*rebuild them"):
        measured_edges(m)
    with pytest.raises(ConfigError, match="unknown method 'necessity'"):
        measured_edges(tiny_matching()).chosen_by_method("necessity")


def test_measured_edges_of_the_artefact_equal_a_loop(matched, tmp_path):
    from helpers.evolution.measured_edges import load_measured_edges, measured_edges_or_note

    exp, out, _, _, _, data = matched
    e = load_measured_edges(exp, out)
    want: dict = {}
    P, K, N = data["partner"].shape
    for p in range(P):
        for k in range(K):
            for j in range(N):
                a, b, d = int(data["partner"][p, k, j]), int(data["downstream"][p, j]), float(data["drop"][p, k, j])
                if a >= 0 and b >= 0 and np.isfinite(d):
                    want.setdefault((p, a, b), []).append((data["methods"][k], d))
    assert set(zip(e.pair.tolist(), e.a.tolist(), e.b.tolist())) == set(want)
    for i, key in enumerate(zip(e.pair.tolist(), e.a.tolist(), e.b.tolist())):
        drops = [d for _, d in want[key]]
        assert max(drops) - min(drops) == 0  # one measurement shared by the methods that chose it
        assert e.drop[i] == pytest.approx(drops[0])
        assert e.chosen_names()[i] == "+".join(m for m, _ in want[key])
    edges, note = measured_edges_or_note(exp, out)
    assert len(edges) == len(want) and f"{len(want):,} distinct edges" in note
    none, note = measured_edges_or_note(exp, tmp_path)
    assert none is None and "python -m helpers matching --experiment smoke" in note and "\n" not in note


def test_overall_rows_ranked_methods_and_ranges():
    from helpers.evolution.matching import overall_rows, ranked_methods, success_range

    rows = [{"pair": p, "method": m, "success_rate": v} for p, m, v in [
        ("x", "cosine", 0.2), ("x", "pearson", 0.5), ("x", "jaccard", 0.5), ("x", "random", 0.9),
        ("y", "cosine", 0.4), ("y", "pearson", 0.1), ("y", "jaccard", 0.3), ("y", "random", 0.0),
        ("all pairs", "cosine", 0.3), ("all pairs", "pearson", 0.3), ("all pairs", "jaccard", 0.4),
        ("all pairs", "random", 0.45)]]
    assert overall_rows(rows)["random"]["success_rate"] == 0.45 and len(overall_rows(rows)) == 4
    assert ranked_methods(rows) == ["jaccard", "cosine", "pearson"]  # the control left out, ties in order
    assert success_range(rows, "pearson") == (0.1, 0.5) and success_range(rows, "random") == (0.0, 0.9)
    with pytest.raises(ConfigError, match="no per-pair row of method 'necessity'"):
        success_range(rows, "necessity")


def test_measured_edges_per_method_and_their_spread():
    from helpers.evolution.measured_edges import measured_edges

    e = measured_edges(tiny_matching())
    only = e.chosen_only_by("random")
    assert sorted(zip(e.a[only].tolist(), e.b[only].tolist())) == [(4, 5), (6, 2)]  # random alone chose these
    assert not measured_edges(tiny_matching(), include_control=False).chosen_only_by("random").any()
    rows = {r["method"]: r for r in e.method_rows(0.5)}
    # pearson chose drops 0.8, 0.3, -0.2, 0.5, 0.9, all with a firing partner
    assert rows["pearson"]["edges chosen"] == 5 and rows["pearson"]["median drop"] == pytest.approx(0.5)
    assert rows["pearson"]["mean drop"] == pytest.approx(2.3 / 5) and rows["pearson"]["share >= 0.5"] == 0.6
    assert rows["random"]["partner silent in b's windows"] == 0.5  # 2 of its 4 edges
    s = e.drop_summary(0.5)
    assert (s["min"], s["max"], s["share"]) == (pytest.approx(-0.2), pytest.approx(0.9), 3 / 8)
    assert s["control_share"] == 0.0 and s["control_median"] == 0.0
    assert s["matched_share"] == 0.5 and s["matched_median"] == pytest.approx(0.4)
    strong = e.strongest(min_support=4, n=2)
    assert strong["drop"].round(3).tolist() == [0.8, 0.5] and (strong.n_firing >= 4).all()
