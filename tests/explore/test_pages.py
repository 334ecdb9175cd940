"""The explorer's per-feature views equal a per-feature brute force (no model needed)."""

import numpy as np
import pytest

from helpers.explore.pages import decode_levels, graph_neighbours, level_string, levels, top_rows
from helpers.explore.site import ID_CHARS, encode_ids, pack_ints, unpack_ints


def test_graph_neighbours_equal_brute_force():
    rng = np.random.default_rng(0)
    S, F, E = 2, 30, 120
    pairs = {(int(s), *sorted(map(int, rng.choice(F, 2, replace=False)))) for s in rng.integers(0, S, E)}
    site, src, dst = (np.array(c) for c in zip(*sorted(pairs)))
    count = rng.integers(1, 6, site.size)  # ties are common: broken by the lower neighbour index
    idx, cnt = graph_neighbours({"edge_site": site, "edge_src": src, "edge_dst": dst, "edge_count": count}, (S, F), 4)
    for s in range(S):
        for f in range(F):
            nb = [(-c, (b if a == f else a)) for si, a, b, c in zip(site, src, dst, count) if si == s and f in (a, b)]
            want = sorted(nb)[:4]
            assert idx[s, f, :len(want)].tolist() == [n for _, n in want]
            assert cnt[s, f, :len(want)].tolist() == [-c for c, _ in want]
            assert (idx[s, f, len(want):] == -1).all()


def test_top_rows_skip_nan_and_rank_best_first():
    m = np.array([[0.1, np.nan, 0.5, -0.2], [np.nan, np.nan, np.nan, 0.3]])
    assert top_rows(m, 3).tolist() == [[2, 0, 3], [3, -1, -1]]


def test_levels_and_ids_round_trip():
    acts = np.array([0.0, 0.5, 1.0, 2.0, 4.0], dtype=np.float32)
    q = levels(acts, np.float32(2.0))
    assert q.tolist() == [0, 16, 32, 63, 63]  # clipped at the feature's max
    assert decode_levels(level_string(q)).tolist() == q.tolist()
    ids = np.array([0, 1, 63, 64, 30521, 50256, 262143])
    text = encode_ids(ids)
    digits = np.array([ID_CHARS.index(c) for c in text]).reshape(-1, 3)
    assert (digits[:, 0] * 4096 + digits[:, 1] * 64 + digits[:, 2]).tolist() == ids.tolist()


@pytest.mark.parametrize("values, width", [([0], 1), ([0, 5, 63], 1), ([64], 2), ([0, 127, 4095], 2),
                                           ([4096, 10032], 3), ([2**24 - 1], 4), ([], 1)])
def test_packed_ints_take_the_fewest_characters_and_round_trip(values, width):
    packed = pack_ints(np.array(values, dtype=np.int64))
    assert packed["width"] == width and len(packed["chars"]) == width * len(values)
    assert unpack_ints(packed).tolist() == values
    digits = np.array([ID_CHARS.index(c) for c in packed["chars"]], dtype=np.int64).reshape(-1, width)
    assert (digits @ (64 ** np.arange(width - 1, -1, -1))).tolist() == values  # most significant first


def test_pack_ints_refuses_negative_values():
    with pytest.raises(ValueError, match="non-negative"):
        pack_ints(np.array([3, -1]))
