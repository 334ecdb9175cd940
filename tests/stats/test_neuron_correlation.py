"""NeuronCorrelation equals numpy's Pearson r on dense activations, whatever the chunking,
batching, merging order or input form (sparse or dense)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.errors import ConfigError
from helpers.stats.accumulators import SparseActs
from helpers.stats.neuron_correlation import NeuronCorrelation


def stream(seed: int, n: int = 60, f: int = 12, m: int = 7, k: int = 3):
    """Sparse non-negative features (at most ``k`` per token, feature 0 never fires) and neurons
    (neuron 0 constant, neuron 1 a copy of feature 2 plus a little noise)."""
    gen = np.random.default_rng(seed)
    x = np.zeros((n, f))
    for t in range(n):
        active = gen.choice(np.arange(1, f), size=gen.integers(0, k + 1), replace=False)
        x[t, active] = gen.exponential(1.0, size=len(active))
    y = gen.normal(size=(n, m)) * gen.uniform(0.5, 3, size=m) + gen.normal(size=m)
    y[:, 0] = 1.5
    y[:, 1] = x[:, 2] + 0.01 * gen.normal(size=n)
    return x, y


def brute(x, y):
    f = x.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(x.T, y.T)[:f, f:]
    r[(x.std(0) == 0)[:, None] | (y.std(0) == 0)[None, :]] = np.nan
    return r


def fed(x, y, cuts=(), sparse=True, k=3):
    acc = NeuronCorrelation(x.shape[1], y.shape[1])
    bounds = [0, *cuts, len(x)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        xs = torch.tensor(x[lo:hi])
        feats = SparseActs.from_dense(xs, max_active=k) if sparse else xs
        acc.update(feats, torch.tensor(y[lo:hi], dtype=torch.float32 if sparse else torch.float64))
    return acc


def assert_same_r(a, b, tol=1e-9):
    assert np.array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(b), atol=tol, rtol=0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 59), max_size=5, unique=True).map(sorted))
def test_equals_numpy_whatever_the_chunks(seed, cuts):
    x, y = stream(seed)
    whole = fed(x, y).result()
    chunked = fed(x, y, cuts).result()
    y32 = y.astype(np.float32).astype(np.float64)  # the sparse path reads float32 neurons
    assert_same_r(whole["r"], brute(x, y32))
    assert_same_r(chunked["r"], whole["r"], 1e-12)
    assert whole["n_tokens"] == chunked["n_tokens"] == len(x)
    np.testing.assert_array_equal(whole["fired"], (x > 0).sum(0))


def test_dense_features_equal_sparse_ones_and_the_known_answers():
    x, y = stream(3)
    sparse = fed(x, y, (17, 40), sparse=True).result()["r"]
    dense = fed(x, y, (17, 40), sparse=False).result()["r"]
    assert_same_r(dense, brute(x, y), 1e-12)
    assert_same_r(sparse, dense, 1e-6)  # float32 neurons against float64 ones
    assert np.isnan(dense[0]).all() and np.isnan(dense[:, 0]).all()  # a dead feature, a constant neuron
    assert dense[2, 1] > 0.99 and np.nanargmax(np.abs(dense[:, 1])) == 2


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), a=st.integers(1, 58), b=st.integers(1, 58))
def test_merge_is_associative_and_equals_one_stream(seed, a, b):
    x, y = stream(seed)
    lo, hi = sorted((a, b))
    hi = max(hi, lo + 1)
    parts = [(x[:lo], y[:lo]), (x[lo:hi], y[lo:hi]), (x[hi:], y[hi:])]
    one, two, three = (fed(*p) for p in parts)
    left = fed(*parts[0]).merge(fed(*parts[1])).merge(fed(*parts[2]))
    right = one.merge(two.merge(three))
    whole = fed(x, y)
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(left.state_dict()[name], value, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(right.state_dict()[name], value, rtol=1e-12, atol=1e-12)


def test_state_dict_round_trip():
    x, y = stream(5)
    acc = fed(x[:30], y[:30])
    copy = NeuronCorrelation(x.shape[1], y.shape[1])
    copy.load_state_dict(acc.state_dict())
    acc.update(SparseActs.from_dense(torch.tensor(x[30:]), max_active=3), torch.tensor(y[30:], dtype=torch.float32))
    copy.update(SparseActs.from_dense(torch.tensor(x[30:]), max_active=3), torch.tensor(y[30:], dtype=torch.float32))
    assert_same_r(copy.result()["r"], acc.result()["r"], 0)
    assert NeuronCorrelation.nbytes(12, 7) == sum(t.numel() * t.element_size() for t in acc.state_dict().values())


def test_bad_shapes_are_one_clear_line():
    acc = NeuronCorrelation(4, 3)
    with pytest.raises(ConfigError, match=r"need features \[n, 4\] and neurons \[n, 3\] of the same tokens"):
        acc.update(torch.zeros(5, 4), torch.zeros(6, 3))
    with pytest.raises(ConfigError, match="cannot merge 4 x 2 moments into 4 x 3"):
        acc.merge(NeuronCorrelation(4, 2))
    with pytest.raises(ConfigError, match="at least one feature and one neuron"):
        NeuronCorrelation(0, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_state_stays_there_and_equals_the_cpu():
    x, y = stream(11)
    acc = NeuronCorrelation(x.shape[1], y.shape[1], device="cuda")
    for lo, hi in ((0, 25), (25, 60)):
        acc.update(SparseActs.from_dense(torch.tensor(x[lo:hi], device="cuda"), max_active=3, check_finite=False),
                   torch.tensor(y[lo:hi], dtype=torch.float32, device="cuda"))
    assert all(t.is_cuda for t in acc.state_dict().values())
    assert_same_r(acc.result()["r"], fed(x, y, (25,)).result()["r"], 1e-9)
