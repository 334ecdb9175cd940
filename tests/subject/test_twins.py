"""Seed twins: a second SAE at a site, one more adjacent pair of the pass (the noise floor)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers.errors import ConfigError
from helpers.experiment import PRESETS, get_experiment, seed_of_site, seed_site, seeds_experiment, twin_sites
from helpers.subject.saes import load_saes, trained_sae_path, trained_saes_ready
from helpers.subject.training import train_saes

from .test_training import split_experiment  # noqa: F401 - the fixture


def test_seeds_experiments_put_each_twin_after_its_site():
    exp = get_experiment("gemma-all-seeds")
    assert [s.split(".")[1] for s in exp.sites[::2]] == ["1", "5", "9", "13"]
    assert exp.sites[1] == "blocks.1.hook_resid_post@seed1" and exp.twin_pairs == (0, 2, 4, 6)
    assert seed_of_site(exp.sites[1]) == 1 and seed_of_site(exp.sites[0]) is None
    assert twin_sites(PRESETS["smoke"], 10) == PRESETS["smoke"].sites[1:]
    with pytest.raises(ConfigError, match=r"the seed twin 'hidden.2@seed1' must come right after its site"):
        PRESETS["smoke"].replace(sites=("hidden.1", "hidden.2@seed1"))
    with pytest.raises(ConfigError, match=r"after '@seed' give the twin's number"):
        PRESETS["smoke"].replace(sites=("hidden.1", "hidden.1@seedx"))
    with pytest.raises(ConfigError, match=r"are not sites of preset 'smoke'"):
        seeds_experiment(PRESETS["smoke"], sites=("hidden.9",))
    with pytest.raises(ConfigError, match=r"has no seed twins"):
        seeds_experiment(PRESETS["gpt2-res-jb"])


def test_twins_train_with_their_own_seed_and_the_pass_measures_them(split_experiment, artefacts_tmp):  # noqa: F811
    from helpers.stats import load_artefact, run_pass
    from helpers.subject.models import load_subject

    from ..stats.test_collect import brute_force_check, dense_stream

    base = split_experiment
    exp = seeds_experiment(base, sites=(base.sites[1],))
    assert exp.sites == (base.sites[1], seed_site(base.sites[1])) and exp.name.endswith("-seeds")
    subject = load_subject(exp)
    train_saes(base, progress=False, subject=subject)
    result = train_saes(exp, progress=False, subject=subject)  # the base's SAEs (reused), then the twin
    assert trained_saes_ready(base) and trained_saes_ready(exp) and not result.reused
    twin = seed_site(base.sites[1])
    assert set(result.report) == set(base.sites) | {twin}
    saes = load_saes(exp)
    own, other = saes[base.sites[1]], saes[twin]
    assert other.cfg.metadata.hook_name == base.sites[1]  # the twin reads the model site
    assert not torch.allclose(own.W_dec, other.W_dec)  # another seed: another dictionary
    assert trained_sae_path(exp, twin).parent.parent.name == exp.name
    assert json.loads((trained_sae_path(exp, twin) / "twin.json").read_text())["seed"] == 1
    assert train_saes(exp, progress=False, subject=subject).reused
    # the pass over (site, twin) equals a brute force from dense activations, batched as the pass batches
    out = artefacts_tmp / "seeds-stats"
    run_pass(exp, out=out, progress=False, subject=subject, saes=saes)
    X, doc, pos = dense_stream(subject, saes, exp)
    brute_force_check(exp, out, X, doc, pos)

    # identical SAEs: every alive feature correlates 1 with itself, none disappears, decoder cosine 1
    from helpers.evolution.lineages import flows
    from helpers.evolution.partners import build_partners, load_partners

    same = {base.sites[1]: own, twin: own}
    out2 = artefacts_tmp / "same-stats"
    run_pass(exp, out=out2, progress=False, subject=subject, saes=same)
    r = load_artefact(exp, "correlation", out2)["r_0"]
    fired = load_artefact(exp, "dead_features", out2)["fired"]
    alive = fired[0] > 0
    np.testing.assert_allclose(np.diag(r)[alive], 1.0, rtol=1e-5)
    build_partners(exp, saes=same, out=out2, progress=False)
    partners = load_partners(exp, out2)
    for t in (0.5, 0.9, 0.99):
        shares = flows(partners, fired, t)[0].shares
        assert shares["disappear"] == 0.0 and shares["appear"] == 0.0
    W = torch.nn.functional.normalize(own.W_dec, dim=1)
    assert torch.allclose((W @ W.T).diagonal(), torch.ones(W.shape[0]), atol=1e-5)
    # matching on identical SAEs: every method names the feature itself, whose ablation the twin reads
    from helpers.evolution.matching import success_table
    from helpers.evolution.matching_artefact import build_matching, load_matching

    build_matching(exp, n_downstream=8, subject=subject, saes=same, out=out2, progress=False)
    rows = [r for r in success_table(load_matching(exp, out2), 0.5) if r["pair"] != "all pairs"]
    named = {r["method"]: r for r in rows}
    assert named["pearson"]["success_rate"] == 1.0 and named["cosine"]["success_rate"] == 1.0
    data = load_matching(exp, out2)
    methods = [str(m) for m in data["methods"]]
    for m in ("pearson", "jaccard", "cosine"):
        got = data["partner"][0, methods.index(m)]
        down = data["downstream"][0]
        assert np.array_equal(got[down >= 0], down[down >= 0])  # the partner is the feature itself

