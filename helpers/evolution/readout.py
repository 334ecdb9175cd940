"""A seed-robust reading of "the same feature": how well a site's whole dictionary reads a feature out.

Matching one feature to one partner (Pearson, Jaccard, decoder cosine) asks whether the next site has
*the same* feature; two SAEs of one site that differ only in their seed already disagree on that for
about half their features (the noise floor). The **linear read-out** asks a weaker question that a
seed change leaves high: is the feature's activation a linear function of the other site's codes? For a
feature ``a`` (activations ``y`` over the tokens) and a dictionary ``X`` (codes of every feature of the
other site), it is the share of ``y``'s variance that the best affine map of ``X`` explains::

    R^2(a) = c_a^T S^-1 c_a / var(a),   S = cov(X),  c_a = cov(X, y)

over the tokens of the statistics. Everything it needs is a sum the statistics pass keeps: the sums
and sums of squares per feature, the sums of products of adjacent sites' features (Pearson's) and of
one site's features with each other (the co-activation graph's weights). :func:`readout_r2` takes those
sums; :func:`readout_r2_dense` computes the same from dense codes (the brute force). Features of ``X``
that never vary are left out; ``ridge`` (relative to each feature's variance) keeps ``S`` invertible
when codes are collinear.
"""

from __future__ import annotations

import numpy as np

#: relative ridge added to the diagonal of cov(X): tiny, so R^2 is the least-squares one where S is well
#: conditioned
RIDGE = 1e-8


def readout_r2(n: int, sum_y: np.ndarray, sumsq_y: np.ndarray, sum_x: np.ndarray, gram_x: np.ndarray,
               cross: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """``[Fy]`` R^2 of reading each feature ``y`` out of the whole dictionary ``x``, from sums over ``n``
    tokens: ``sum_y``, ``sumsq_y`` ``[Fy]``; ``sum_x`` ``[Fx]``; ``gram_x`` ``[Fx, Fx]`` (sum of ``x_j x_k``,
    its diagonal the sums of squares); ``cross`` ``[Fy, Fx]`` (sum of ``y_a x_j``). NaN where ``y`` never
    varies."""
    n = float(n)
    mu_x, mu_y = sum_x / n, sum_y / n
    S = gram_x / n - np.outer(mu_x, mu_x)
    var_y = sumsq_y / n - mu_y**2
    C = cross / n - np.outer(mu_y, mu_x)
    keep = np.diag(S) > 1e-12 * max(float(np.abs(np.diag(S)).max(initial=0.0)), 1e-300)
    out = np.full(sum_y.shape[0], np.nan)
    alive_y = var_y > 1e-12 * max(float(var_y.max(initial=0.0)), 1e-300)
    if not keep.any():
        out[alive_y] = 0.0
        return out
    Sk = S[np.ix_(keep, keep)]
    Sk = Sk + ridge * np.diag(np.diag(Sk))
    Ck = C[:, keep]
    L = np.linalg.cholesky(Sk)
    Z = np.linalg.solve(L, Ck.T)  # L^-1 C^T: R^2 = |L^-1 c_a|^2 / var_a
    explained = (Z * Z).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = explained / var_y
    out[alive_y] = np.clip(r2[alive_y], 0.0, 1.0)
    return out


def readout_r2_dense(y: np.ndarray, x: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """The same R^2 from dense codes ``y`` ``[n, Fy]`` and ``x`` ``[n, Fx]`` (float64 sums)."""
    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    return readout_r2(y.shape[0], y.sum(0), (y * y).sum(0), x.sum(0), x.T @ x, y.T @ x, ridge)
