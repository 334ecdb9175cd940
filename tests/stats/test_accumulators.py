"""Accumulators: chunked == whole, merge is associative, results == numpy brute force."""

import numpy as np
import pytest
import torch

from helpers.stats.accumulators import FeatureStats, PairStats, SparseActs, jaccard, pearson, sparsify
from helpers.errors import ConfigError

SITES = ("s0", "s1", "s2")
F = 12


def random_sparse_acts(n, f=F, density=0.25, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, f, generator=g) * 5
    keep = torch.rand(n, f, generator=g) < density
    return x * keep


def random_batch(n, seed=0):
    return {s: random_sparse_acts(n, seed=seed * 10 + i) for i, s in enumerate(SITES)}


def feed(acc, dense_batches):
    for b in dense_batches:
        acc.update(sparsify(b))
    return acc


def split(dense, sizes):
    out, start = [], 0
    for size in sizes:
        out.append({s: a[start : start + size] for s, a in dense.items()})
        start += size
    return out


def test_sparse_round_trip():
    x = random_sparse_acts(50)
    s = SparseActs.from_dense(x)
    assert s.indices.shape[1] == int((x > 0).sum(1).max())
    torch.testing.assert_close(s.to_dense(), x)


def test_feature_stats_equal_brute_force():
    dense = random_batch(200)
    acc = feed(FeatureStats(SITES, F), split(dense, [70, 1, 129]))
    res = acc.result()
    assert res["n_tokens"] == 200
    for i, s in enumerate(SITES):
        x = dense[s].numpy().astype(np.float64)
        np.testing.assert_array_equal(res["fired"][i], (x > 0).sum(0))
        np.testing.assert_allclose(res["max"][i], x.max(0), rtol=1e-6)
        np.testing.assert_allclose(res["sum"][i], x.sum(0), rtol=1e-6)
        np.testing.assert_allclose(res["sum_sq"][i], (x**2).sum(0), rtol=1e-6)
    assert res["fired"].dtype == np.int64


def test_pair_stats_equal_brute_force_and_pearson_jaccard():
    dense = random_batch(300, seed=3)
    # small chunk_pairs forces the inner token chunking
    acc = feed(PairStats("s0", "s1", F, chunk_pairs=50), split(dense, [100, 200]))
    feats = feed(FeatureStats(SITES, F), [dense])
    res, fr = acc.result(), feats.result()
    x, y = dense["s0"].numpy().astype(np.float64), dense["s1"].numpy().astype(np.float64)
    np.testing.assert_array_equal(res["count"], (x > 0).T.astype(np.int64) @ (y > 0).astype(np.int64))
    np.testing.assert_allclose(res["sum_xy"], x.T @ y, rtol=1e-9)
    r = pearson(300, fr["sum"][0], fr["sum_sq"][0], fr["sum"][1], fr["sum_sq"][1], res["sum_xy"])
    np.testing.assert_allclose(r, np.corrcoef(x.T, y.T)[:F, F:], atol=1e-9)
    j = jaccard(res["count"], fr["fired"][0], fr["fired"][1])
    xb, yb = x > 0, y > 0
    brute = (xb.T.astype(int) @ yb) / ((xb[:, :, None] | yb[:, None, :]).sum(0))
    np.testing.assert_allclose(j, brute)


def test_dead_features_give_nan_not_garbage():
    x = random_sparse_acts(40)
    x[:, 3] = 0  # feature 3 never fires at s0
    dense = {"s0": x, "s1": random_sparse_acts(40, seed=9), "s2": random_sparse_acts(40, seed=8)}
    pair = feed(PairStats("s0", "s1", F), [dense]).result()
    fr = feed(FeatureStats(SITES, F), [dense]).result()
    r = pearson(40, fr["sum"][0], fr["sum_sq"][0], fr["sum"][1], fr["sum_sq"][1], pair["sum_xy"])
    assert np.isnan(r[3]).all() and not np.isnan(r[2]).any()
    dense["s1"][:, 5] = 0
    pair = feed(PairStats("s0", "s1", F), [dense]).result()
    fr = feed(FeatureStats(SITES, F), [dense]).result()
    j = jaccard(pair["count"], fr["fired"][0], fr["fired"][1])
    assert np.isnan(j[3, 5]) and j[3, 4] == 0.0


@pytest.mark.parametrize("make", [lambda: FeatureStats(SITES, F), lambda: PairStats("s1", "s2", F)])
def test_merge_is_associative_and_equals_one_pass(make):
    parts = [random_batch(n, seed=s) for s, n in [(1, 30), (2, 45), (3, 17)]]
    whole = feed(make(), parts).result()
    a, b, c = (feed(make(), [p]) for p in parts)
    left = make()
    left.load_state_dict(a.state_dict())
    left.merge(b).merge(c)  # (a + b) + c
    bc = make()
    bc.load_state_dict(b.state_dict())
    bc.merge(c)
    right = make()
    right.load_state_dict(a.state_dict())
    right.merge(bc)  # a + (b + c)
    for res in (left.result(), right.result()):
        for key, value in whole.items():
            np.testing.assert_allclose(res[key], value, rtol=1e-12)


def test_state_dict_round_trip_continues_exactly():
    b1, b2 = random_batch(20, seed=1), random_batch(25, seed=2)
    ref = feed(PairStats("s0", "s1", F), [b1, b2]).result()
    first = feed(PairStats("s0", "s1", F), [b1])
    resumed = PairStats("s0", "s1", F)
    resumed.load_state_dict({k: v.clone() for k, v in first.state_dict().items()})
    res = feed(resumed, [b2]).result()
    np.testing.assert_array_equal(res["count"], ref["count"])
    np.testing.assert_array_equal(res["sum_xy"], ref["sum_xy"])


def test_counts_are_exact_beyond_float32():
    acc = FeatureStats(("s0",), 2)
    acc.fired += 2**24  # float32 would stop counting here
    acc.update({"s0": SparseActs(torch.tensor([[0]]), torch.tensor([[1.0]]), 2)})
    assert int(acc.result()["fired"][0, 0]) == 2**24 + 1


def test_bad_activations():
    with pytest.raises(ConfigError, match=r"need activations \[n_tokens, n_features\]"):
        SparseActs.from_dense(torch.zeros(3))


def _provenance(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5, (n,), generator=g), torch.randperm(n, generator=g)


def test_top_examples_equal_brute_force_any_chunking():
    from helpers.stats.accumulators import TopExamples

    n, k = 120, 4
    dense = random_batch(n, seed=5)
    doc, pos = _provenance(n)
    whole = TopExamples(SITES, F, k)
    whole.update(sparsify(dense), doc, pos)
    chunked = TopExamples(SITES, F, k)
    for lo, hi in [(0, 7), (7, 60), (60, 120)]:
        chunked.update(sparsify({s: a[lo:hi] for s, a in dense.items()}), doc[lo:hi], pos[lo:hi])
    other = TopExamples(SITES, F, k)  # merge of two halves
    half = TopExamples(SITES, F, k)
    other.update(sparsify({s: a[:50] for s, a in dense.items()}), doc[:50], pos[:50])
    half.update(sparsify({s: a[50:] for s, a in dense.items()}), doc[50:], pos[50:])
    other.merge(half)
    for acc in (chunked, other):
        for key, value in whole.result().items():
            np.testing.assert_array_equal(acc.result()[key], value)
    res = whole.result()
    for i, s in enumerate(SITES):
        x = dense[s].numpy()
        for f in range(F):
            nz = np.flatnonzero(x[:, f] > 0)
            hi = nz[np.argsort(-x[nz, f], kind="stable")][:k]
            lo = nz[np.argsort(x[nz, f], kind="stable")][:k]
            np.testing.assert_allclose(res["hi_values"][i, f, : len(hi)], x[hi, f])
            np.testing.assert_allclose(res["lo_values"][i, f, : len(lo)], x[lo, f])
            assert res["hi_doc"][i, f, : len(hi)].tolist() == doc[hi].tolist()
            assert res["hi_pos"][i, f, : len(hi)].tolist() == pos[hi].tolist()
            assert res["lo_pos"][i, f, : len(lo)].tolist() == pos[lo].tolist()
            assert np.isnan(res["hi_values"][i, f, len(hi) :]).all()
            assert (res["hi_doc"][i, f, len(hi) :] == -1).all()


def test_coactivation_graph_equals_brute_force():
    from helpers.stats.accumulators import CoactivationGraph

    dense = random_batch(150, seed=7)
    g = CoactivationGraph(SITES, F, top_k=4, chunk_pairs=100)
    for lo, hi in [(0, 40), (40, 150)]:
        g.update(sparsify({s: a[lo:hi] for s, a in dense.items()}))
    sum_sq = np.stack([(dense[s].double() ** 2).sum(0).numpy() for s in SITES])
    res = g.result(sum_sq)
    for i, s in enumerate(SITES):
        x = dense[s].numpy().astype(np.float64)
        counts = np.zeros((F, F), dtype=np.int64)
        for row in x:
            nz = np.flatnonzero(row > 0)
            top = nz[np.argsort(-row[nz], kind="stable")][:4]
            for p in range(len(top)):
                for q in range(p + 1, len(top)):
                    a, b = sorted((top[p], top[q]))
                    counts[a, b] += 1
        mine = res["edge_site"] == i
        got = np.zeros((F, F), dtype=np.int64)
        got[res["edge_src"][mine], res["edge_dst"][mine]] = res["edge_count"][mine]
        np.testing.assert_array_equal(got, counts)
        cos = (x.T @ x) / np.outer(np.linalg.norm(x, axis=0), np.linalg.norm(x, axis=0))
        np.testing.assert_allclose(res["edge_weight"][mine], cos[res["edge_src"][mine], res["edge_dst"][mine]], rtol=1e-9)
        assert (res["edge_src"][mine] < res["edge_dst"][mine]).all()


# --------------------------------------------------------------------------- 32-bit device plan
def _pair32(flush_tokens=16):
    return PairStats("s0", "s1", F, count_dtype=torch.int32, sum_dtype=torch.float32, flush_tokens=flush_tokens)


def test_count_dtype_for():
    from helpers.stats.accumulators import count_dtype_for

    assert count_dtype_for(17_500_000) == torch.int32  # the reference study's stream
    assert count_dtype_for(2**31 - 1) == torch.int32
    assert count_dtype_for(2**31) == torch.int64
    assert count_dtype_for(None) == torch.int64  # unknown length: no promise


def test_pair_stats_32bit_flushed_equal_brute_force_and_64bit():
    dense = random_batch(300, seed=11)
    parts = split(dense, [10, 40, 7, 243])
    acc = feed(_pair32(flush_tokens=16), parts)
    # no float32 partial ever held more than flush_tokens tokens, and the host copy took them
    assert int(acc.sum_xy.pending) <= 16 and acc.sum_xy.host_sums.abs().sum() > 0
    assert acc.count.dtype == torch.int32 and acc.sum_xy.device_sums.dtype == torch.float32
    res = acc.result()
    ref = feed(PairStats("s0", "s1", F), parts).result()
    x, y = dense["s0"].numpy().astype(np.float64), dense["s1"].numpy().astype(np.float64)
    np.testing.assert_array_equal(res["count"], ref["count"])
    np.testing.assert_array_equal(res["count"], (x > 0).T.astype(np.int64) @ (y > 0))
    assert res["sum_xy"].dtype == np.float64
    np.testing.assert_allclose(res["sum_xy"], x.T @ y, rtol=1e-6)


def test_pair_stats_32bit_merge_and_resume():
    parts = [random_batch(n, seed=s) for s, n in [(1, 30), (2, 45), (3, 17)]]
    whole = feed(_pair32(), parts).result()
    a, b, c = (feed(_pair32(), [p]) for p in parts)
    left = _pair32()
    left.load_state_dict(a.state_dict())
    left.merge(b).merge(c)
    bc = _pair32()
    bc.load_state_dict(b.state_dict())
    right = _pair32()
    right.load_state_dict(a.state_dict())
    right.merge(bc.merge(c))
    for res in (left.result(), right.result()):
        np.testing.assert_array_equal(res["count"], whole["count"])
        np.testing.assert_allclose(res["sum_xy"], whole["sum_xy"], rtol=1e-6)


def test_int32_counts_refuse_to_overflow():
    acc = _pair32()
    acc.n_tokens.fill_(2**31 - 5)
    with pytest.raises(ConfigError, match="2\\^31-1 tokens in int32 pair counts"):
        feed(acc, [random_batch(10)])


def test_streamed_sums_reject_bad_settings():
    from helpers.stats.accumulators import StreamedSums

    with pytest.raises(ConfigError, match="float64 or float32"):
        StreamedSums(4, torch.float16)
    with pytest.raises(ConfigError, match="flush_tokens"):
        StreamedSums(4, torch.float32, flush_tokens=2**24 + 1)


def test_triangle_index_enumerates_the_upper_triangle():
    from helpers.stats.accumulators import triangle_index

    n = 7
    a, b = torch.triu_indices(n, n, offset=1)
    assert triangle_index(a, b, n).tolist() == list(range(n * (n - 1) // 2))


def _graph(**kw):
    from helpers.stats.accumulators import CoactivationGraph

    return CoactivationGraph(SITES, F, top_k=4, chunk_pairs=100, **kw)


@pytest.mark.parametrize("kw", [{}, {"sum_dtype": torch.float32, "flush_tokens": 8, "compact_every": 5}])
def test_coactivation_graph_chunked_merged_resumed_equal_whole(kw):
    parts = [random_batch(n, seed=s) for s, n in [(4, 30), (5, 45), (6, 17)]]
    everything = {s: torch.cat([p[s] for p in parts]) for s in SITES}
    sum_sq = np.stack([(everything[s].double() ** 2).sum(0).numpy() for s in SITES])
    whole = _graph()
    whole.update(sparsify(everything))
    want = whole.result(sum_sq)
    chunked = feed(_graph(**kw), parts)
    a, b, c = (feed(_graph(**kw), [p]) for p in parts)
    resumed = _graph(**kw)
    resumed.load_state_dict(a.state_dict())
    merged = resumed.merge(b.merge(c))
    for g in (chunked, merged):
        got = g.result(sum_sq)
        for key in ("edge_site", "edge_src", "edge_dst", "edge_count"):
            np.testing.assert_array_equal(got[key], want[key])
        np.testing.assert_allclose(got["edge_weight"], want["edge_weight"], rtol=1e-6)
    assert want["edge_count"].sum() > 0


def brute_histogram(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``[F, n_bins]`` counts of the non-zero entries of ``x`` ``[n, F]`` on the log bins."""
    n_bins = len(edges) + 1
    out = np.zeros((x.shape[1], n_bins), dtype=np.int64)
    for f in range(x.shape[1]):
        v = x[:, f][x[:, f] > 0].astype(np.float32)
        np.add.at(out[f], np.searchsorted(edges, v, side="right"), 1)
    return out


def test_histogram_equals_brute_force_chunked_and_merged():
    from helpers.stats.accumulators import HIST_EDGES, ActivationHistogram

    dense = random_batch(300)
    # activations over many decades, some exactly on a bin edge
    for i, s in enumerate(SITES):
        scale = torch.logspace(-5, 5, dense[s].numel()).reshape(dense[s].shape)
        dense[s] = dense[s] * scale[torch.randperm(scale.shape[0], generator=torch.Generator().manual_seed(i))]
    dense["s0"][0, :4] = HIST_EDGES[[0, 10, 40, 64]]
    whole = feed(ActivationHistogram(SITES, F), [dense]).result()
    chunked = feed(ActivationHistogram(SITES, F), split(dense, [1, 150, 149])).result()
    a = feed(ActivationHistogram(SITES, F), split(dense, [100, 200])[:1])
    b = feed(ActivationHistogram(SITES, F), split(dense, [100, 200])[1:])
    merged = a.merge(b).result()
    restored = ActivationHistogram(SITES, F)
    restored.load_state_dict(a.state_dict())
    for i, s in enumerate(SITES):
        expected = brute_histogram(dense[s].numpy(), whole["edges"])
        np.testing.assert_array_equal(whole["counts"][i], expected)
        np.testing.assert_array_equal(chunked["counts"][i], expected)
        np.testing.assert_array_equal(merged["counts"][i], expected)
        assert whole["counts"][i].sum() == int((dense[s] > 0).sum())
    np.testing.assert_array_equal(restored.result()["counts"], a.result()["counts"])
    # a value on an edge goes to the bin that starts there
    assert whole["counts"][0, 0, 1] >= 1 and whole["counts"][0, 3, 65] >= 1
