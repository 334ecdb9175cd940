"""The convergence study: budgets, the token subset, the knee, a resumable run on a tiny model."""

from __future__ import annotations

import pytest
import torch

from helpers.errors import ConfigError
from helpers.subject.convergence import (ConvergenceStudy, axis_rows, convergence_findings, knee, load_convergence,
                                         run_convergence, token_subset)

from .test_training import split_experiment  # noqa: F401 - the fixture


def test_token_subset_takes_whole_rows_seeded():
    idx = token_subset(1000, 300, 32, seed=0)
    assert idx.shape[0] == 300 and torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 300
    rows = (idx // 32).unique()
    assert len(rows) <= 300 // 32 + 2  # whole rows of 32 tokens, not scattered tokens
    assert sum(int(((idx // 32) == r).sum()) != min(32, 1000 - 32 * int(r)) for r in rows) <= 1  # one cut row
    assert torch.equal(token_subset(1000, 300, 32, seed=0), idx)
    assert not torch.equal(token_subset(1000, 300, 32, seed=1), idx)
    assert torch.equal(token_subset(1000, 5000, 32, seed=0), torch.arange(1000))


def _row(axis, spf, tokens, fvu, dead, lr):
    return {"axis": axis, "samples_per_feature": spf, "tokens": tokens, "fvu": fvu, "dead_fraction": dead,
            "loss_recovered": lr, "epochs": 1.0}


def test_knee_is_the_first_budget_whose_doubling_no_longer_pays():
    rows = [_row("samples", 100, 1000, 0.40, 0.50, 70.0), _row("samples", 200, 1000, 0.25, 0.30, 80.0),
            _row("samples", 400, 1000, 0.20, 0.02, 86.0), _row("samples", 800, 1000, 0.185, 0.015, 86.5)]
    # 400 -> 800: FVU -7.5% (< 10%), dead -0.5 point, loss recovered +0.5 point: the knee is 400
    assert knee(rows, "samples")["samples_per_feature"] == 400
    rows[-1]["loss_recovered"] = 88.0  # +2 points: the doubling still pays, no knee
    assert knee(rows, "samples") is None
    rows[-1]["loss_recovered"] = 86.5
    rows[-1]["fvu"] = 0.17  # -15%: still pays
    assert knee(rows, "samples") is None
    rows.append(_row("samples", 1600, 1000, 0.165, 0.01, 86.6))  # 800 -> 1600 no longer pays
    assert knee(rows, "samples")["samples_per_feature"] == 800
    assert [r["samples_per_feature"] for r in axis_rows(rows[::-1], "samples")] == [100, 200, 400, 800, 1600]
    text = convergence_findings({"rows": rows, "shipped_samples_per_feature": 600, "train_tokens": 1000})
    assert "the knee is at 800 samples per feature" in text and "before the knee (800)" in text
    text = convergence_findings({"rows": rows, "shipped_samples_per_feature": 900, "train_tokens": 1000})
    assert "900 samples per feature on 1,000 tokens: past the knee" in text
    rows[-1]["fvu"] = 0.10
    text = convergence_findings({"rows": rows, "shipped_samples_per_feature": 900, "train_tokens": 1000})
    assert "no knee" in text and "more training would still help" in text
    assert "run `x`" in convergence_findings(None, "x")


def test_bad_studies_are_one_line(split_experiment):  # noqa: F811
    with pytest.raises(ConfigError, match="at least 4 increasing budgets"):
        ConvergenceStudy(base=split_experiment, samples_per_feature=(1, 2, 3))
    with pytest.raises(ConfigError, match="shares of the training tokens in"):
        ConvergenceStudy(base=split_experiment, token_shares=(0.5, 2.0))
    with pytest.raises(ConfigError, match="is not a site of preset"):
        ConvergenceStudy(base=split_experiment, site="blocks.3.hook_resid_pre")


def test_a_study_runs_resumes_and_measures_each_budget(split_experiment, artefacts_tmp, monkeypatch):  # noqa: F811
    import helpers.subject.training as training
    from helpers.subject.models import load_subject

    exp = split_experiment
    study = ConvergenceStudy(base=exp, samples_per_feature=(10, 20, 40, 80), token_shares=(0.25, 0.5, 1.0),
                             tokens_samples_per_feature=20)
    assert study.site == exp.sites[1]
    subject = load_subject(exp)
    seen = []
    real = training.train_sae
    monkeypatch.setattr(training, "train_sae", lambda acts, e, site, **kw: (seen.append((acts.shape[0],
                                                                                         kw["samples"])),
                                                                            real(acts, e, site, **kw))[1])
    rows = run_convergence(study, progress=False, subject=subject)
    saved = load_convergence(exp, study.site)
    n = saved["train_tokens"]
    shipped = saved["shipped_samples_per_feature"]
    assert shipped == pytest.approx(exp.sae_epochs * n / exp.sae_width)
    assert [(r["samples_per_feature"], r["tokens"]) for r in axis_rows(rows, "samples")] == \
        [(s, n) for s in (10, 20, 40, 80)]
    assert [(r["samples_per_feature"], r["tokens"]) for r in axis_rows(rows, "tokens")] == \
        [(20, round(0.25 * n)), (20, round(0.5 * n)), (20, n)]
    # every budget trained once (the run on all tokens at 20 serves both axes), with samples = samples
    # per feature x width, on the tokens asked
    assert seen == [(n, 10 * 32), (n, 20 * 32), (n, 40 * 32), (n, 80 * 32), (round(0.25 * n), 20 * 32),
                    (round(0.5 * n), 20 * 32)]
    both = [r for r in rows if r["tokens"] == n and r["samples_per_feature"] == 20]
    assert len(both) == 2 and both[0]["fvu"] == both[1]["fvu"]
    assert all(0 < r["fvu"] < 1.5 and "loss_recovered" in r for r in rows)
    # a rerun reuses every row, also once the preset trains for more epochs (each row has its own budget);
    # the shipped budget is then read from the preset
    seen.clear()
    assert run_convergence(study, progress=False, subject=subject) == rows and seen == []
    longer = exp.replace(sae_epochs=exp.sae_epochs * 2)
    again = ConvergenceStudy(base=longer, samples_per_feature=(10, 20, 40, 80), token_shares=(0.25, 0.5, 1.0),
                             tokens_samples_per_feature=20)
    assert run_convergence(again, progress=False, subject=subject) == rows and seen == []
    assert load_convergence(longer, study.site)["shipped_samples_per_feature"] == pytest.approx(2 * shipped)
