import numpy as np
import pytest

from helpers.evolution.decoder import decoder_directions
from helpers.evolution.decoder_matches import best_decoder_matches

from ..conftest import make_random_sae


@pytest.fixture(scope="module")
def matches():
    saes = {s: make_random_sae(8, 12, seed=i) for i, s in enumerate(("a", "b", "c"))}
    rng = np.random.default_rng(0)
    corr = {f"r_{p}": rng.uniform(-0.2, 0.6, (12, 12)) for p in range(2)}
    corr["r_1"][3] = np.nan  # feature 3 of site b never fired
    return saes, corr, best_decoder_matches(saes, [("a", "b"), ("b", "c")], corr)


def test_best_matches_equal_a_dense_brute_force(matches):
    saes, corr, m = matches
    assert len(m) == 24 and m.pair.tolist() == [0] * 12 + [1] * 12 and m.a.tolist() == list(range(12)) * 2
    for p, (x, y) in enumerate([("a", "b"), ("b", "c")]):
        dense = decoder_directions(saes[x]).numpy() @ decoder_directions(saes[y]).numpy().T
        rows = m.pair == p
        assert m.b[rows].tolist() == dense.argmax(1).tolist()
        np.testing.assert_allclose(m.cos[rows], dense.max(1), rtol=1e-5)
        np.testing.assert_array_equal(m.r[rows], corr[f"r_{p}"][np.arange(12), dense.argmax(1)])


def test_spurious_matches_and_the_correlation(matches):
    _, _, m = matches
    for t in (-1.0, 0.3, 0.5):
        high = m.cos >= t
        bad = high & ~(m.r >= 0.1)  # NaN r counts as not firing together
        assert m.spurious(t) == (high.sum(), bad.sum())
    assert m.spurious(-1.0)[1] >= 1 and m.spurious(2.0) == (0, 0)
    rows = m.spurious_rows([-1.0, 2.0])
    assert rows[0]["best-match pairs"] == 24 and rows[0]["share"] == pytest.approx(m.spurious(-1.0)[1] / 24)
    assert rows[1] == {"cosine ≥": 2.0, "best-match pairs": 0, "do not fire together (r < 0.1)": 0, "share": 0.0}
    ok = np.isfinite(m.r)
    assert ok.sum() == 23 and m.cosine_r_correlation() == pytest.approx(np.corrcoef(m.cos[ok], m.r[ok])[0, 1])
    assert m.cos[m.highest(3)].tolist() == sorted(m.cos, reverse=True)[:3]
