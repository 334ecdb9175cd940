"""Completeness of a pass on the smoke subject: from the recorded codes, equal to re-encoding the
stream with the same SAEs (the route of SAEs without codes, e.g. the widths of a sweep)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.errors import ConfigError
from helpers.explain.completeness import completeness
from helpers.explain.completeness_run import sae_firings, site_completeness
from helpers.explain.concepts import ConceptFamily

from ..evolution.test_partners import smoke_run  # noqa: F401  (the fixture: a pass on the smoke subject)

WORDS = ConceptFamily("words", {"the": ["the"], "of": ["of"], "and": ["and", "And"], "in": ["in", "In"]})


def test_site_completeness_from_codes_equals_the_model(smoke_run):  # noqa: F811
    from helpers.stats.codes import open_codes
    from helpers.subject.corpus import load_corpus
    from helpers.subject.models import load_subject

    exp, out, saes, X = smoke_run
    res = site_completeness(exp, [WORDS], out=out)
    assert res.firing_from == "the statistics pass's recorded codes" and res.tokens == exp.token_budget
    assert [r["saes"] for r in res.rows] == list(exp.sites) and all(r["found"] == 4 for r in res.rows)
    men = res.mentions["words"]
    assert men.counts.sum() > 20
    codes = open_codes(exp, out)
    subject = load_subject(exp)
    docs = load_corpus(exp.corpus, exp.max_documents)
    site = exp.sites[-1]
    ran = sae_firings(exp, site, {64: saes[site]}, subject, docs)[64]
    pairs = lambda t, f: set(zip(np.asarray(t).tolist(), np.asarray(f).tolist()))  # noqa: E731
    assert pairs(*ran) == pairs(*codes.firings(site))
    rows, members = completeness(men, {64: ran}, 64)
    mine = [m for m in res.members if m["saes"] == site]
    assert [(m["best_feature"], m["covered"]) for m in members] == [(m["best_feature"], m["covered"]) for m in mine]
    # the dense activations agree: a member's best feature has the precision they give
    fires = X[site] > 0
    for m, row in zip(range(4), mine):
        tokens = np.zeros(res.tokens, bool)
        tokens[men.member_tokens()[m].indices] = True
        f = row["best_feature"]
        assert row["precision"] == pytest.approx((fires[:, f] & tokens).sum() / fires[:, f].sum())


def test_site_completeness_refuses_unknown_sites_and_absent_families(smoke_run):  # noqa: F811
    exp, out, _, _ = smoke_run
    with pytest.raises(ConfigError, match="not sites of experiment"):
        site_completeness(exp, [WORDS], sites=["blocks.99.hook_resid_post"], out=out)
    with pytest.raises(ConfigError, match="none of the 1 members of concept family 'none'"):
        site_completeness(exp, [ConceptFamily("none", {"Zyzzyva": ["Zyzzyva"]})], out=out)
    with pytest.raises(ConfigError, match="unknown concept family 'boroughs'"):
        site_completeness(exp, "boroughs", out=out)
