"""The memory plan: one process, data-parallel, pair-parallel or several passes (arithmetic only)."""

import pytest
import torch

from helpers.errors import ConfigError
from helpers.stats import (Machine, Precision, choose_plan, describe_plan, host_bill, memory_bill, pass_groups,
                           plan_for)
from helpers.stats.memory import group_sites, host_items, spool_bytes
from helpers.subject.releases import experiment_from_release

GIB = 2**30
GEMMA_2B = 2_614_341_888


@pytest.fixture(scope="module")
def gemma16k():
    return experiment_from_release("gemma-scope-2b-pt-res-canonical", width=16384, token_budget=17_500_000,
                                   context_length=1024, batch_size=8, dtype="bfloat16")


def test_pairs_held_scale_the_pair_bill(gemma16k):
    full = memory_bill(gemma16k, 16384, GEMMA_2B, world=1)
    half = memory_bill(gemma16k, 16384, GEMMA_2B, world=2, pairs_held=13)
    key = next(k for k in full if k.startswith("pair statistics"))
    assert full[key] == 25 * 16384**2 * (8 + 8) and half[key] == 13 * 16384**2 * (8 + 8)  # int64 + float64
    assert "step synchronisation buffers" not in half  # pair-parallel ranks sum no counts per step
    assert "step synchronisation buffers" in memory_bill(gemma16k, 16384, GEMMA_2B, world=2)
    assert full["model"] == GEMMA_2B * 2  # bfloat16


def test_groups_own_each_site_once():
    assert group_sites(7, pass_groups(6, 3)) == [([0, 1, 2], [0, 1, 2]), ([2, 3, 4], [3, 4]), ([4, 5, 6], [5, 6])]
    assert group_sites(7, pass_groups(6, 2)) == [([0, 1, 2, 3], [0, 1, 2, 3]), ([3, 4, 5, 6], [4, 5, 6])]
    assert group_sites(3, pass_groups(2, 1)) == [([0, 1, 2], [0, 1, 2])]
    assert group_sites(1, pass_groups(0, 1)) == [([0], [0])]  # one site, no pair
    for n_pairs in range(1, 9):
        for passes in range(1, n_pairs + 1):
            owned = [s for _, own in group_sites(n_pairs + 1, pass_groups(n_pairs, passes)) for s in own]
            assert owned == list(range(n_pairs + 1))


def test_the_bill_of_a_group_counts_only_its_sites(gemma16k):
    """Gemma Scope 2B at 16k, 26 sites: a device holding 13 pairs (2 passes) encodes and owns 14
    sites, one holding 4 pairs (pair-parallel over 8) 5; every per-site item shrinks with them."""
    f, d, k = 16384, 2304, gemma16k.top_k_examples
    tri = f * (f - 1) // 2
    prec = Precision(torch.int32, torch.float32)
    bills = {held: memory_bill(gemma16k, f, GEMMA_2B, precision=prec, max_tokens=17_500_000, pairs_held=held)
             for held in (None, 13, 4)}
    for held, sites in ((None, 26), (13, 14), (4, 5)):
        bill = bills[held]
        assert bill["saes"] == sites * (2 * d * f + f + d) * 4
        assert bill["feature statistics"] == sites * f * 28
        assert bill["activation histograms (int64, log bins)"] == sites * f * 66 * 8
        assert bill["top examples"] == sites * f * k * 2 * 20
        assert bill["co-activation graph (float32 sums, upper triangle)"] == sites * tri * 4
        assert bill["pair statistics (int32 counts + float32 sums)"] == (held or 25) * f * f * 8
        assert bill["batch (residuals, SAE codes)"] == 8 * 1024 * (sites * d * 4 + 3 * f * 4 + sites * 256 * 12)
    totals = [sum(bills[h].values()) for h in (None, 13, 4)]
    assert totals[0] > totals[1] > totals[2]
    assert [round(t / 2**30, 1) for t in totals] == [84.0, 47.4, 19.9]
    # the host: each process the float64 copies of its flushed sums; the writer also one pair's full
    # results and its compact counts and r at a time (the pairs are spooled to disk as they become
    # final), Pearson's float64 blocks and the per-site results
    other = host_bill(gemma16k, f, prec, 13, writer=False)
    assert other == (13 * f * f + 14 * tri) * 8
    items = host_items(gemma16k, f, prec, 13, max_tokens=17_500_000)
    one_pair = "one pair's results while spooled (counts + float64 sums, compact counts + float32 r)"
    assert items[one_pair] == f * f * (4 + 8) + f * f * (4 + 4)
    assert items["Pearson r blocks (float64 temporaries)"] == 4 * 2048 * f * 8
    assert set(items) == {"float64 copies of the flushed float32 sums", one_pair,
                          "Pearson r blocks (float64 temporaries)", "per-site results until written"}
    # not every pair's results: the same whatever the pairs held, the number of pairs or the sums
    assert host_items(gemma16k, f, Precision(torch.int32), None)[one_pair] == items[one_pair]
    assert host_items(gemma16k, f, prec, 1)[one_pair] == items[one_pair]
    # on the CPU the pair's results are its accumulators: only its derived arrays
    assert host_items(gemma16k, f, Precision(torch.int32), 13, device_type="cpu")[one_pair] == f * f * 8
    assert host_items(gemma16k, f, Precision(torch.int64), 13)[one_pair] == f * f * (8 + 8) + f * f * (8 + 4)
    # the spool's disk: every pair's compact counts (at most as wide as the counts) and float32 r
    assert spool_bytes(gemma16k, f, prec) == 25 * f * f * (4 + 4)
    # the writer's whole bill, in GiB: 2 passes of 13 pairs on a GPU (float32 sums flushed; 40 GiB of
    # copies), 94.1 GiB when every pair's results waited on the host
    assert round(sum(items.values()) / 2**30, 1) == 50.1


def test_choose_plan_prefers_data_parallel_then_pairs(gemma16k):
    gpu = torch.device("cuda")
    kw = dict(max_tokens=17_500_000, host_available=2000 * GIB)
    assert choose_plan(gemma16k, 16384, GEMMA_2B, gpu, 2, available=400 * GIB, **kw)[0] == "data"
    mode, prec, _ = choose_plan(gemma16k, 16384, GEMMA_2B, gpu, 8, available=79 * GIB, **kw)
    assert mode == "pairs" and prec.counts == torch.int32
    with pytest.raises(ConfigError, match="data-parallel|free"):
        choose_plan(gemma16k, 16384, GEMMA_2B, gpu, 8, plan="data", available=79 * GIB, **kw)
    # one H100: all 25 pairs do not fit, 13 do: two passes over the pairs, and since each pass
    # holds the statistics of only its 14 sites, with float64 sums
    mode, prec, passes = choose_plan(gemma16k, 16384, GEMMA_2B, gpu, 1, available=79 * GIB, **kw)
    assert (mode, passes) == ("passes", 2) and prec.sums == torch.float64
    assert choose_plan(gemma16k, 16384, GEMMA_2B, gpu, 1, plan="passes", passes=5, available=79 * GIB,
                       **kw).passes == 5
    with pytest.raises(ConfigError, match=r"several passes \(--plan passes\) or on several devices"):
        choose_plan(gemma16k, 16384, GEMMA_2B, gpu, 1, plan="data", available=79 * GIB, **kw)
    # one pair and its two sites: 10.8 GiB with float32 sums (the model alone is 4.9 GiB)
    assert choose_plan(gemma16k, 16384, GEMMA_2B, gpu, 1, available=12 * GIB, **kw).passes == 25
    with pytest.raises(ConfigError, match="even one pair per pass does not fit"):
        choose_plan(gemma16k, 16384, GEMMA_2B, gpu, 1, available=11 * GIB, **kw)
    with pytest.raises(ConfigError, match="needs several processes"):
        choose_plan(gemma16k, 16384, GEMMA_2B, gpu, 1, plan="pairs", **kw)
    with pytest.raises(ConfigError, match="at least one of the 25 adjacent pairs: run at most 25 processes"):
        choose_plan(gemma16k, 16384, GEMMA_2B, gpu, 26, plan="pairs", **kw)
    with pytest.raises(ConfigError, match="run in one process: under torchrun use --plan pairs"):
        choose_plan(gemma16k, 16384, GEMMA_2B, gpu, 8, plan="passes", **kw)


def test_pass_groups_and_plan_words():
    assert pass_groups(6, 3) == [[0, 1], [2, 3], [4, 5]]
    assert pass_groups(25, 2) == [list(range(13)), list(range(13, 25))]
    assert pass_groups(6, 4) == [[0, 1], [2, 3], [4], [5]]
    assert describe_plan("passes", 6, passes=3) == "3 passes over the pairs, 2 pairs each"
    assert describe_plan("passes", 25, passes=2) == "2 passes over the pairs, 12-13 pairs each"
    assert describe_plan("passes", 6, passes=6) == "6 passes over the pairs, 1 pair each"
    assert describe_plan("pairs", 25, world=8) == "pair-parallel over 8 processes, at most 4 of the 25 pairs each"
    with pytest.raises(ConfigError, match="choose 1..6"):
        pass_groups(6, 7)


def test_plans_for_machines(gemma16k):
    h100, h200 = Machine("1 x H100", 1, 79 * GIB, 120 * GIB), Machine("1 x H200", 1, 139 * GIB, 120 * GIB)
    eight = Machine("8 x H100", 8, 79 * GIB, 1800 * GIB)
    assert plan_for(gemma16k, 16384, GEMMA_2B, h200, 17_500_000)["plan"] == "one process"
    one = plan_for(gemma16k, 16384, GEMMA_2B, h100, 17_500_000)
    assert one["plan"] == "2 passes over the pairs, 12-13 pairs each" and one["device_bytes"] <= 0.9 * 79 * GIB
    par = plan_for(gemma16k, 16384, GEMMA_2B, eight, 17_500_000)
    assert par["plan"] == "pair-parallel" and par["pairs_per_device"] == 4
    wide = experiment_from_release("gemma-scope-2b-pt-res-canonical", width=65536, token_budget=17_500_000)
    assert plan_for(wide, 65536, GEMMA_2B, eight, 17_500_000)["plan"] == "does not fit"
