"""The relative-activation variant: active only above a share of the feature's maximum."""

import json

import numpy as np
import pytest

from helpers.errors import ConfigError, MissingArtefactError
from helpers.experiment import PRESETS
from helpers.stats import load_artefact, run_pass

from .test_collect import dense_stream, random_topk_saes


def test_relative_pass_equals_brute_force_with_maxima_of_the_plain_pass(tmp_path):
    from helpers.subject.models import load_subject

    exp = PRESETS["smoke"].replace(token_budget=700, step_tokens=350, batch_size=8, device="cpu",
                                   sae_width=48, sae_k=6)
    subject = load_subject(exp)
    saes = random_topk_saes(exp.sites, width=48, k=6)
    rel = exp.replace(relative_threshold=0.3)
    assert rel.stats_name == "smoke-rel0.3" and exp.stats_name == "smoke"
    # without the plain pass's maxima: one clear error, before the model is run
    with pytest.raises(MissingArtefactError, match=r"needs each feature's maximum .* collect --experiment smoke"):
        run_pass(rel, out=tmp_path / "rel", progress=False, subject=subject, saes=saes, maxima_from=tmp_path / "base")
    assert not (tmp_path / "rel" / "metadata.json").exists()
    run_pass(exp, out=tmp_path / "base", progress=False, subject=subject, saes=saes)
    run_pass(rel, out=tmp_path / "rel", progress=False, subject=subject, saes=saes, maxima_from=tmp_path / "base")
    X, _, _ = dense_stream(subject, saes, exp)
    R = {s: np.where(X[s] > 0.3 * X[s].max(0), X[s], 0) for s in exp.sites}
    fired = load_artefact(rel, "dead_features", tmp_path / "rel")["fired"]
    np.testing.assert_array_equal(fired, np.stack([(R[s] > 0).sum(0) for s in exp.sites]))
    assert (fired <= load_artefact(exp, "dead_features", tmp_path / "base")["fired"]).all()
    counts = load_artefact(rel, "pair_coactivation", tmp_path / "rel")
    for i, (a, b) in enumerate(exp.site_pairs):
        want = (R[a] > 0).astype(np.int64).T @ (R[b] > 0).astype(np.int64)
        np.testing.assert_array_equal(counts[f"count_{i}"].astype(np.int64), want)
    meta = json.loads((tmp_path / "rel" / "metadata.json").read_text())
    assert "0.3 x the feature's maximum" in meta["activity"]["rule"]
    assert meta["activity"]["maxima_from"].endswith("base/max_activations.npz")
    assert meta["activity"]["maxima_sha256"] == json.loads((tmp_path / "base" / "metadata.json").read_text())["sha256"]["max_activations.npz"]
    # the plain statistics are not those of the relative experiment
    with pytest.raises(Exception, match="another experiment"):
        load_artefact(rel, "dead_features", tmp_path / "base")


@pytest.mark.parametrize("value, message", [(-0.1, r"must be in \[0, 1\)"), (1.0, r"must be in \[0, 1\)"),
                                            ("0.2", "must be a number")])
def test_relative_threshold_out_of_range_is_refused(value, message):
    with pytest.raises(ConfigError, match="relative_threshold=.* " + message):
        PRESETS["smoke"].replace(relative_threshold=value)
