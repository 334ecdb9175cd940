"""The reference figures load with the shapes and values the study's README documents, carry
their sources, equal the study's original files where those are at hand, and ship with the
package."""

import fnmatch
from pathlib import Path

import numpy as np
import pytest

from helpers.io import REPO_ROOT
from helpers.reference import FEATURE_FLOW, STUDY, figures, load_study, pack_study
from helpers.reference.figures import STUDY_FILE

# the study's README: dead features at threshold 0 at the end, and never co-activating shares
DEAD_AT_END = [4070, 2555, 4039, 3049, 460, 58, 9, 6, 6, 3, 4, 35]
NEVER_SHARE = [0.863, 0.889, 0.825, 0.727, 0.578, 0.466, 0.360, 0.302, 0.234, 0.233, 0.245]


def test_study_arrays_have_the_documented_shapes():
    s = load_study()
    assert s.dead.shape == (266, 9, 12) and s.never.shape == (5, 11, 266)
    assert s.max_sorted.shape == (12, 24576) and s.max_largest.shape == (12,)
    assert list(s.dead_thresholds) == [0, 5, 10, 50, 100, 500, 1000, 5000, 10000]
    assert list(s.never_thresholds) == [0, 5, 10, 50, 100]
    assert s.tokens[0] == 65_536 and s.tokens[-1] == 266 * 65_536 == STUDY.n_tokens
    assert len(s.layers) == 12 and s.pairs[0] == "0->1" and s.pairs[-1] == "10->11"
    assert (np.diff(s.dead[:, 0].astype(int), axis=0) <= 0).all()  # dead only fall with tokens
    assert (np.diff(s.dead.astype(int), axis=1) >= 0).all()  # a higher threshold counts more dead


def test_study_figures_match_the_readme():
    s = load_study()
    np.testing.assert_array_equal(s.dead_at_end(0), DEAD_AT_END)
    np.testing.assert_allclose(s.never_share_at_end(0), NEVER_SHARE, atol=5e-4)
    assert figures()["never_coactivating"].value == pytest.approx(0.52, abs=5e-4)
    assert figures()["max_activation"].value == pytest.approx(639.8, abs=0.05)
    mx = s.max_sorted.astype(np.float32)
    assert (mx < 100).mean() == pytest.approx(0.994, abs=1e-3)
    median = np.median(mx, axis=1)
    assert median[0] == pytest.approx(2.9, abs=0.05)
    assert 32 <= median[1:].min() and median[1:].max() <= 53
    assert (np.diff(mx, axis=1) >= 0).all()  # sorted per layer


def test_every_figure_names_its_source():
    f = figures()
    assert set(f) == {"dead", "never_coactivating", "max_activation", "disappearing", "matching_success"}
    assert f["disappearing"].value == (0.19, 0.34) and f["disappearing"].source is STUDY
    assert f["matching_success"].value == {"cosine": 0.65, "pearson": 0.65}
    assert f["matching_success"].source is FEATURE_FLOW
    assert "2502.03032" in FEATURE_FLOW.cite and "Laptev" in FEATURE_FLOW.cite
    assert "Stefan-Heimersheim/spar-2024 @ c68d126" in STUDY.cite and "2410.08869" in STUDY.cite
    for fig in f.values():
        assert fig.what and fig.how and fig.source.url.startswith("https://arxiv.org/abs/")


def _original_folder():
    for root in (REPO_ROOT.parent, REPO_ROOT.parent.parent):
        folder = root / "shared" / "reference" / "spar-2024"
        if (folder / "res_jb_max_sae_activations_17.5M.npz").is_file():
            return folder
    return None


@pytest.mark.skipif(_original_folder() is None, reason="the study's original files are not at hand")
def test_the_shipped_copy_equals_the_originals():
    folder = _original_folder()
    s = load_study()
    np.testing.assert_array_equal(s.dead, np.load(folder / "res_jb_sae_dead_features_17.5M_0.0.npz")["arr_0"])
    never = np.load(folder / "res_jb_sae_pair_co_activation_17.5M_100_24576_0.0.npz")["arr_0"]
    np.testing.assert_array_equal(s.never, never)
    mx = np.load(folder / "res_jb_max_sae_activations_17.5M.npz")["arr_0"]
    np.testing.assert_array_equal(s.max_largest, mx.max(1))
    # float16 keeps every maximum to its relative precision (2^-11), zeros as zeros
    np.testing.assert_allclose(s.max_sorted.astype(np.float32), np.sort(mx, 1), rtol=2**-11, atol=1e-7)
    packed = pack_study(folder)
    with np.load(STUDY_FILE) as shipped:
        assert sorted(shipped.files) == sorted(packed)
        for key, value in packed.items():
            np.testing.assert_array_equal(shipped[key], value)


def test_the_data_file_is_small_and_ships_with_the_package():
    tomllib = pytest.importorskip("tomllib")
    assert STUDY_FILE.stat().st_size < 300_000
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["helpers.reference"]
    relative = STUDY_FILE.relative_to(REPO_ROOT / "helpers" / "reference")
    assert any(fnmatch.fnmatch(str(relative), p) for p in patterns)
    assert any(fnmatch.fnmatch("helpers.reference", p) for p in config["packages"]["find"]["include"])
    assert Path(REPO_ROOT / "helpers" / "reference" / "__init__.py").is_file()
