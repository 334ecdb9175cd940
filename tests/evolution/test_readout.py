"""The linear read-out of a feature from a whole dictionary equals a brute-force regression."""

import numpy as np

from helpers.evolution.readout import readout_r2_dense


def _lstsq_r2(y, x):
    X = np.column_stack([x, np.ones(len(x))])
    out = []
    for a in range(y.shape[1]):
        coef, *_ = np.linalg.lstsq(X, y[:, a], rcond=None)
        resid = y[:, a] - X @ coef
        var = ((y[:, a] - y[:, a].mean()) ** 2).sum()
        out.append(np.nan if var == 0 else 1 - (resid**2).sum() / var)
    return np.array(out)


def test_readout_equals_a_least_squares_regression_with_intercept():
    rng = np.random.default_rng(0)
    n, fx, fy = 2000, 12, 7
    x = np.maximum(rng.normal(size=(n, fx)), 0) * (rng.random((n, fx)) < 0.3)  # sparse, non-negative codes
    x[:, 3] = 0.0  # a dead feature of the dictionary is left out
    y = np.maximum(x @ rng.normal(size=(fx, fy)) + 0.5 * rng.normal(size=(n, fy)), 0)
    y[:, 0] = 2.0 * x[:, 1] + 1.0  # read out exactly
    y[:, 5] = 0.0  # never varies: NaN
    got = readout_r2_dense(y, x)
    want = _lstsq_r2(y, x)
    assert np.isnan(got[5]) and np.isnan(want[5])
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], atol=1e-6)
    assert got[0] > 1 - 1e-6


def test_a_dictionary_that_is_a_rotation_of_another_reads_it_out_fully():
    """Two dictionaries that span the same codes (another seed, the same subspace) read each other out,
    where one-to-one matching sees no partner at all."""
    rng = np.random.default_rng(1)
    n, f = 3000, 8
    z = rng.normal(size=(n, f))
    q, _ = np.linalg.qr(rng.normal(size=(f, f)))
    a, b = z, z @ q  # every b feature mixes every a feature
    r = np.corrcoef(a.T, b.T)[:f, f:]
    assert np.abs(r).max(1).mean() < 0.9  # no single partner explains a feature
    np.testing.assert_allclose(readout_r2_dense(a, b), 1.0, atol=1e-8)
