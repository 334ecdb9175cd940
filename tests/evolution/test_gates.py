"""Gate candidates, their truth tables and the upstream explanations equal a numpy brute force
from dense activations (smoke subject, tiny random TopK SAEs, batched exactly as the pass)."""

import re
import json
from collections import Counter

import numpy as np
import pytest
import torch

from helpers.errors import ArtefactMismatchError, ConfigError, CorruptArtefactError, MissingArtefactError
from helpers.evolution.focused_pass import FocusPlan, run_focused_pass
from helpers.evolution.gate_artefact import (build_gates, explanation_sizes, gate_rows, gate_summary,
                                             gates_ready, load_gates, plan_gates)
from helpers.evolution.gates import pair_gate_candidates, survives, truth_table_scores
from helpers.evolution.measures import load_pair_inputs
from helpers.evolution.upstream import explanation, greedy_cover, upstream_candidates
from helpers.experiment import PRESETS
from helpers.stats import run_pass

from ..stats.test_collect import dense_stream, random_topk_saes
from .test_partners import stable_topk

# random SAEs have no 0.999 gates: a lower threshold makes AND and OR candidates exist
THRESHOLD, MIN_FIRES, K = 0.5, 3, 5


@pytest.fixture(scope="module")
def gate_run(tmp_path_factory):
    from helpers.subject.models import load_subject

    exp = PRESETS["smoke"].replace(token_budget=1200, step_tokens=400, batch_size=8, device="cpu",
                                   sae_width=64, sae_k=6, gate_threshold=THRESHOLD,
                                   gate_min_fires=MIN_FIRES, upstream_candidates=K)
    subject = load_subject(exp)
    saes = random_topk_saes(exp.sites, width=64, k=6)
    out = tmp_path_factory.mktemp("gates")
    run_pass(exp, out=out, progress=False, subject=subject, saes=saes)
    build_gates(exp, out=out, subject=subject, saes=saes, progress=False, keep_masks=True)
    X, _, _ = dense_stream(subject, saes, exp)
    fire = {s: X[s] > 0 for s in exp.sites}
    return exp, out, subject, saes, fire


def brute_candidates(A, B, threshold, min_fires):
    """``{(kind, b): (a1, a2)}`` by the Table 2 rule, one feature at a time."""
    C = A.astype(np.int64).T @ B.astype(np.int64)
    fa, fb = A.sum(0), B.sum(0)
    found = {}
    for b in range(B.shape[1]):
        if fb[b] < min_fires:
            continue
        for kind, value in (("and", C[:, b] / fb[b]), ("or", C[:, b] / np.maximum(fa, 1))):
            hits = [a for a in range(A.shape[1]) if fa[a] >= min_fires and value[a] >= threshold]
            if len(hits) == 2:
                found[(kind, b)] = tuple(hits)
    return found


def brute_greedy(masks: Counter, k: int):
    """Greedy cover of one feature from its {mask: tokens}: chosen slots and coverage counts."""
    chosen, covered, slots, steps = 0, 0, [], []
    for _ in range(k):
        gains = [sum(c for m, c in masks.items() if m >> j & 1 and not m & chosen) for j in range(k)]
        j = int(np.argmax(gains))  # first maximum: the higher necessity
        if gains[j] == 0:
            break
        chosen |= 1 << j
        covered += gains[j]
        slots.append(j)
        steps.append(covered)
    return slots, steps


def test_candidates_equal_brute_force(gate_run):
    exp, out, _, _, fire = gate_run
    gates = load_gates(exp, out)
    total = Counter()
    for p, (a, b) in enumerate(exp.site_pairs):
        want = brute_candidates(fire[a], fire[b], THRESHOLD, MIN_FIRES)
        mine = gates["gate_pair"] == p
        got = {(("and", "or")[k], int(bb)): (int(x), int(y)) for k, bb, x, y in
               zip(gates["gate_kind"][mine], gates["gate_b"][mine], gates["gate_a1"][mine], gates["gate_a2"][mine])}
        assert got == want, f"pair {p}"
        total.update(kind for kind, _ in want)
    assert total["and"] > 0 and total["or"] > 0  # the test exercises both rules
    # column blocks that do not divide F give the same candidates
    inputs = load_pair_inputs(exp, 1, out=out)
    full = pair_gate_candidates(inputs.count, inputs.fired_a, inputs.fired_b, THRESHOLD, MIN_FIRES)
    blocks = pair_gate_candidates(inputs.count, inputs.fired_a, inputs.fired_b, THRESHOLD, MIN_FIRES, chunk=7)
    for key in full:
        np.testing.assert_array_equal(np.sort(full[key]), np.sort(blocks[key]))


def test_truth_tables_equal_brute_force(gate_run):
    exp, out, _, _, fire = gate_run
    gates = load_gates(exp, out)
    assert len(gates["gate_b"]) > 0
    for i in range(len(gates["gate_b"])):
        p = int(gates["gate_pair"][i])
        A, B = fire[exp.sites[p]], fire[exp.sites[p + 1]]
        a1, a2, b = int(gates["gate_a1"][i]), int(gates["gate_a2"][i]), int(gates["gate_b"][i])
        code = 4 * A[:, a1].astype(int) + 2 * A[:, a2].astype(int) + B[:, b].astype(int)
        want = np.bincount(code, minlength=8)
        np.testing.assert_array_equal(gates["gate_table"][i], want)
        gate = (A[:, a1] & A[:, a2]) if gates["gate_kind"][i] == 0 else (A[:, a1] | A[:, a2])
        both = (gate & B[:, b]).sum()
        rows = [r for r in gate_rows(gates, 0.0) if r["pair_index"] == p and r["b"] == b and r["a1"] == a1
                and r["kind"] == ("and", "or")[gates["gate_kind"][i]]]
        assert len(rows) == 1
        assert rows[0]["precision"] == pytest.approx(both / gate.sum() if gate.sum() else np.nan, nan_ok=True)
        assert rows[0]["recall"] == pytest.approx(both / B[:, b].sum())
        assert rows[0]["iou"] == pytest.approx(both / (gate | B[:, b]).sum())
    assert gates["meta"]["consistent_with_statistics"] is True
    assert int(gates["n_tokens"]) == 1200


def test_survivors_and_summary_follow_the_iou_threshold(gate_run):
    exp, out, _, _, _ = gate_run
    gates = load_gates(exp, out)
    iou = truth_table_scores(gates["gate_table"], gates["gate_kind"])["iou"]
    cut = float(np.median(iou))
    alive = survives(gates["gate_table"], gates["gate_kind"], cut)
    np.testing.assert_array_equal(alive, iou >= cut)
    summary = gate_summary(gates, cut)
    assert sum(r["and survivors"] + r["or survivors"] for r in summary) == int(alive.sum())
    assert sum(r["and candidates"] + r["or candidates"] for r in summary) == len(iou)
    assert [r["survives"] for r in gate_rows(gates, 1.0)].count(True) == int((iou >= 1.0).sum())
    # a planted gate: b = a1 AND a2 exactly scores 1; b firing on a1 only scores 1/2
    table = np.zeros((2, 8), dtype=np.int64)
    table[0, [0, 2, 4, 7]] = [50, 5, 6, 9]  # 000, 010, 100, 111
    table[1, [7, 5]] = [10, 10]  # 111, 101
    s = truth_table_scores(table, np.array([0, 0]))
    np.testing.assert_allclose(s["iou"], [1.0, 0.5])
    np.testing.assert_allclose(s["precision"], [1.0, 1.0])
    np.testing.assert_allclose(s["recall"], [1.0, 0.5])


def test_upstream_masks_and_greedy_cover_equal_brute_force(gate_run):
    exp, out, _, _, fire = gate_run
    assert "mask_key_0" not in load_gates(exp, out)  # the largest arrays only on demand
    gates = load_gates(exp, out, masks=True)
    F = exp.sae_width
    for p, (a, b) in enumerate(exp.site_pairs):
        A, B = fire[a].astype(np.int64), fire[b].astype(np.int64)
        C = A.T @ B
        fb = B.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            nec = np.where(fb > 0, C / np.maximum(fb, 1), np.nan).T  # [Fb, Fa]
        top = stable_topk(nec, K)
        top = np.where(np.take_along_axis(np.nan_to_num(nec, nan=0.0), np.maximum(top, 0), 1) > 0, top, -1)
        np.testing.assert_array_equal(gates["upstream_index"][p], top)
        keys = gates[f"mask_key_{p}"]
        assert np.all(np.diff(keys) > 0)  # sorted, distinct
        got = dict(zip(keys.tolist(), gates[f"mask_count_{p}"].tolist()))
        want = Counter()
        for f in range(F):
            cand = top[f]
            for t in np.flatnonzero(B[:, f]):
                mask = sum(1 << j for j, c in enumerate(cand) if c >= 0 and A[t, c])
                want[f * 2**K + mask] += 1
        assert got == dict(want)
        for f in range(F):
            masks = Counter({m & (2**K - 1): c for m, c in want.items() if m >> K == f})
            slots, steps = brute_greedy(masks, K)
            n = len(slots)
            np.testing.assert_array_equal(gates["cover_slot"][p, f, :n], slots)
            assert (gates["cover_slot"][p, f, n:] == -1).all()
            np.testing.assert_array_equal(gates["cover_count"][p, f, :n], steps)
            assert gates["cover_fired"][p, f] == B[:, f].sum()
            ex = explanation(gates, p, f, coverage=0.9)
            assert [s["upstream"] for s in ex["steps"]] == [int(top[f, j]) for j in slots]
            need = 0.9 * B[:, f].sum()
            size = next((i + 1 for i, c in enumerate(steps) if c >= need), -1) if B[:, f].sum() else 0
            assert ex["size"] == size
            assert explanation_sizes(gates, 0.9)[p, f] == size


def test_greedy_cover_ties_and_uncoverable_firings():
    # feature 0: masks 0b011 x 3, 0b100 x 3 -> slot 0 first (ties with slot 1 by necessity order), then 2
    keys = np.array([0 * 8 + 0b011, 0 * 8 + 0b100, 1 * 8 + 0], dtype=np.int64)
    counts = np.array([3, 3, 4])
    cov = greedy_cover(keys, counts, 2, 3)
    np.testing.assert_array_equal(cov["slot"][0], [0, 2, -1])
    np.testing.assert_array_equal(cov["covered"][0], [3, 6, 6])
    np.testing.assert_array_equal(cov["slot"][1], [-1, -1, -1])  # never covered by a candidate
    np.testing.assert_array_equal(cov["covered"][1], [0, 0, 0])
    np.testing.assert_array_equal(cov["fired"], [6, 4])


def test_the_pass_encodes_only_the_sites_it_needs(gate_run):
    exp, out, subject, saes, fire = gate_run
    plan, cands, _ = plan_gates(exp, out)
    p = int(cands["pair"][0])
    mine = cands["pair"] == p
    only = FocusPlan(sites=plan.sites, n_features=plan.n_features,
                     triples={p: (cands["a1"][mine], cands["a2"][mine], cands["b"][mine])})
    assert only.needed_sites() == (exp.sites[p], exp.sites[p + 1])

    class Refuse:
        def encode(self, x):
            raise AssertionError("encoded a site the plan does not need")

    guarded = {s: (saes[s] if s in only.needed_sites() else Refuse()) for s in exp.sites}
    calls = []
    last = subject.hf_model.encoder.layer[-1]
    handle = last.register_forward_hook(lambda *a: calls.append(1))
    try:
        res, _ = run_focused_pass(exp, only, subject, guarded, progress=False)
    finally:
        handle.remove()
    assert calls == []  # the model stopped after the last needed site
    gates = load_gates(exp, out)
    np.testing.assert_array_equal(res["tables"][p], gates["gate_table"][gates["gate_pair"] == p])


def test_bad_input_is_one_clear_error(gate_run, tmp_path):
    exp, out, _, _, _ = gate_run
    inputs = load_pair_inputs(exp, 0, out=out)
    with pytest.raises(ConfigError, match=r"outside its range \[0, 1\]"):
        pair_gate_candidates(inputs.count, inputs.fired_a, inputs.fired_b, threshold=1.2)
    with pytest.raises(ConfigError, match=r"min_fires=0 must be an integer >= 1"):
        pair_gate_candidates(inputs.count, inputs.fired_a, inputs.fired_b, min_fires=0)
    with pytest.raises(ConfigError, match=r"gate_threshold=-0.1 is outside its range \[0, 1\]"):
        exp.replace(gate_threshold=-0.1)
    with pytest.raises(ConfigError, match=r"upstream_candidates=40 must be in 1..32"):
        exp.replace(upstream_candidates=40)
    with pytest.raises(ConfigError, match=r"upstream_candidates=65 must be between 1 and the number of features"):
        upstream_candidates(inputs.count, inputs.fired_b, 65)
    gates = load_gates(exp, out)
    with pytest.raises(ConfigError, match=r"unknown feature 64: features are numbered 0..63"):
        explanation(gates, 0, 64)
    with pytest.raises(ConfigError, match="pair index 6 out of range"):
        explanation(gates, 6, 0)
    with pytest.raises(ConfigError, match=r"outside its range \[0, 1\]"):
        explanation(gates, 0, 0, coverage=1.5)
    with pytest.raises(ArtefactMismatchError, match="another experiment.*python -m helpers gates --experiment smoke"):
        load_gates(exp.replace(seed=7), out)
    with pytest.raises(ArtefactMismatchError, match="gate_threshold"):
        load_gates(exp.replace(gate_threshold=0.999), out)
    assert gates_ready(exp, out) and not gates_ready(exp.replace(upstream_candidates=4), out)
    with pytest.raises(MissingArtefactError, match="no gate verification.*python -m helpers gates --experiment smoke"):
        load_gates(exp, tmp_path)
    # by default the (large) mask counts stay off the disk; asking for them names the flag
    import shutil

    lean = tmp_path / "lean"
    shutil.copytree(out, lean)
    build_gates(exp, out=lean, subject=gate_run[2], saes=gate_run[3], progress=False)
    assert not any(k.startswith("mask_") for k in np.load(lean / "gates.npz").files)
    np.testing.assert_array_equal(load_gates(exp, lean)["cover_count"], gates["cover_count"])
    with pytest.raises(ConfigError, match=r"no firing-mask counts.*helpers gates --experiment smoke --masks"):
        load_gates(exp, lean, masks=True)
    # a truncated gates.npz is named with the command that rebuilds it
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = (copy / "gates.npz").read_bytes()
    (copy / "gates.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArtefactError, match="gates.npz is corrupted or truncated.*helpers gates"):
        load_gates(exp, copy)
    meta = json.loads((copy / "gates.json").read_text())
    assert meta["options"] == {"gate_threshold": THRESHOLD, "gate_min_fires": MIN_FIRES, "upstream_candidates": K}
    assert meta["seconds"] > 0 and meta["sites_encoded"] == list(exp.sites)


def test_command_line_errors_are_one_line(capsys, artefacts_tmp):
    from helpers.cli import main

    assert main(["gates", "--experiment", "smoke", "--set", "gate_threshold=2"]) == 2
    # (the experiment stores the float field as a float: 2 -> 2.0)
    assert re.search(r"error: gate_threshold=2(\.0)? is outside its range \[0, 1\]", capsys.readouterr().err)
    assert main(["gates", "--experiment", "smoke", "--quiet"]) == 2  # no statistics yet
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no statistics in") and "python -m helpers collect --experiment smoke" in err
    assert len(err.splitlines()) == 1


def test_topk_shortcut_fires_exactly_as_encode_and_other_saes_use_the_dense_encode(gate_run, monkeypatch):
    from helpers.evolution.focused_pass import _dense_firing, _is_plain_topk, _topk_firing, fast_path, firing
    from helpers.subject.corpus import iter_token_batches, load_corpus

    from ..conftest import make_random_sae

    exp, _, subject, saes, _ = gate_run
    batch = next(iter_token_batches(load_corpus(exp.corpus, exp.max_documents), subject.tokenizer,
                                    subject.special_tokens, exp.context_length, exp.batch_size, exp.token_budget))
    fast = fast_path(saes, exp.sites[:2])
    assert fast == {s: True for s in exp.sites[:2]}
    checked = firing(subject, saes, exp.sites[:2], batch, fast, check=True)
    assert fast == {s: True for s in exp.sites[:2]}  # the shortcut agreed with encode on the batch
    reference = firing(subject, saes, exp.sites[:2], batch)
    assert all(torch.equal(checked[s].dense, reference[s].dense) for s in exp.sites[:2])
    x = torch.randn(300, 384)
    with torch.no_grad():
        quick, slow = _topk_firing(saes[exp.sites[0]], x), _dense_firing(saes[exp.sites[0]], x)
    assert torch.equal(quick.dense, slow.dense)
    got = sorted(zip(quick.tok.tolist(), quick.feat.tolist()))
    assert got == sorted(zip(slow.tok.tolist(), slow.feat.tolist())) and len(got) == int(slow.dense.sum())
    standard = make_random_sae(d_in=384, d_sae=64)
    assert not _is_plain_topk(standard)
    mixed = {exp.sites[0]: standard, exp.sites[1]: saes[exp.sites[1]]}
    assert fast_path(mixed, exp.sites[:2]) == {exp.sites[0]: False, exp.sites[1]: True}
    # a shortcut that disagrees on the checked batch is turned off and the dense encode used
    import helpers.evolution.focused_pass as fp

    def wrong(sae, x):
        got = _topk_firing(sae, x)
        got.dense[0] = ~got.dense[0]
        return got

    liar = {exp.sites[0]: True, exp.sites[1]: True}
    monkeypatch.setattr(fp, "_topk_firing", wrong)
    out = firing(subject, saes, exp.sites[:2], batch, liar, check=True)
    assert liar == {exp.sites[0]: False, exp.sites[1]: False}
    assert all(torch.equal(out[s].dense, reference[s].dense) for s in exp.sites[:2])


def test_gates_from_the_recorded_codes_equal_the_model_rerun(gate_run, tmp_path):
    """Without a model, the verification reads the pass's recorded codes: the same gates.npz."""
    import shutil

    exp, out = gate_run[0], gate_run[1]
    copy = tmp_path / "from-codes"
    shutil.copytree(out, copy)
    assert (copy / "codes" / "codes.json").is_file()
    build_gates(exp, out=copy, progress=False, keep_masks=True)  # no subject, no SAEs: nothing loaded
    meta = json.loads((copy / "gates.json").read_text())
    assert meta["firing_from"] == "the statistics pass's recorded codes" and meta["consistent_with_statistics"]
    assert json.loads((out / "gates.json").read_text())["firing_from"] == "a model re-run"
    a, b = np.load(out / "gates.npz"), np.load(copy / "gates.npz")
    assert a.files == b.files
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_gate_totals_and_explanation_rows_by_hand():
    from helpers.evolution.gate_artefact import explanation_rows, gate_totals

    table = np.zeros((3, 8), dtype=np.int64)
    table[0, [0, 7]] = [50, 9]  # an AND that holds: IoU 1
    table[1, [7, 5]] = [10, 10]  # an AND half wrong: IoU 1/2
    table[2, [1, 3, 5, 7]] = [1, 5, 5, 5]  # an OR: b fires alone once
    gates = {"gate_table": table, "gate_kind": np.array([0, 0, 1]), "pairs": ["a->b", "b->c"],
             # [pairs, features, k]: coverage after each greedy addition; firings per feature
             "cover_count": np.array([[[5, 9, 10], [1, 2, 3], [0, 0, 0]], [[4, 4, 4], [2, 4, 6], [0, 0, 0]]]),
             "cover_fired": np.array([[10, 6, 0], [4, 6, 0]])}
    iou = truth_table_scores(table, gates["gate_kind"])["iou"]
    t = gate_totals(gates, 0.9)
    assert (t["candidates"], t["and"], t["or"], t["survivors"]) == (3, 2, 1, int((iou >= 0.9).sum()))
    assert t["share"] == pytest.approx(t["survivors"] / 3) and t["iou"] == pytest.approx(np.median(iou))
    empty = {**gates, "gate_table": table[:0], "gate_kind": np.array([], int)}
    assert gate_totals(empty, 0.9)["candidates"] == 0 and np.isnan(gate_totals(empty, 0.9)["iou"])
    rows = explanation_rows(gates, 0.9)
    # pair 0: 10 firings covered to 9 by two features; 6 firings reach 3 only; one never fired
    assert rows[0] == {"pair": "a->b", "firing": 2, "covered": 0.5, "median size": 2.0, "at most 3": 0.5}
    assert rows[1] == {"pair": "b->c", "firing": 2, "covered": 1.0, "median size": 2.0, "at most 3": 1.0}
