"""Pairs in several passes on one device: every artefact equals one ordinary pass exactly.

A random 6-block GPT-2 (d_model 64) with 7 sites (6 adjacent pairs) and random SAEs: the pass
run as 2 passes over the pairs (3 pairs each) and as 3 passes (2 pairs each) writes the same
arrays as one pass, float sums included, bit for bit (the same updates in the same order),
although each pass encodes only the sites of its pairs and holds the heavy per-site statistics
of only the sites it owns.
"""

import json

import numpy as np
import pytest
import torch

import helpers.stats.collect as collect
from helpers.cli import main
from helpers.errors import ConfigError
from helpers.experiment import PRESETS, ModelSpec
from helpers.stats import ARTEFACT_FILES, host_bill, load_artefact, memory_bill, run_pass

from ..conftest import make_random_sae, make_tiny_gpt2

SITES = tuple(f"blocks.{i}.hook_resid_pre" for i in range(6)) + ("blocks.5.hook_resid_post",)
EXP = PRESETS["gpt2-res-jb"].replace(
    sites=SITES, corpus="wiki-summaries", max_documents=8, token_budget=500, context_length=32,
    batch_size=4, sae_width=24, sae_k=8, step_tokens=96, top_k_examples=3, device="cpu",
)


@pytest.fixture(scope="module")
def six_blocks(tiny_tokenizer):
    from helpers.subject.models import wrap

    model = make_tiny_gpt2(tiny_tokenizer, n_layer=6)
    spec = ModelSpec(name="tiny-gpt2-6", family="gpt2", source="test", n_layers=6, d_model=64, causal=True)
    return wrap(model, tiny_tokenizer, spec, torch.device("cpu"))


@pytest.fixture(scope="module")
def saes():
    out = {s: make_random_sae(64, 24, seed=10 + i) for i, s in enumerate(SITES)}
    with torch.no_grad():  # a dead feature: its curves and Pearson rows must agree too
        out[SITES[3]].b_enc[2] = -1e3
    return out


def _exp(sums: str):
    return EXP if sums == "float64" else EXP.replace(sum_dtype="float32", flush_tokens=64)


@pytest.fixture(scope="module")
def reference(six_blocks, saes, tmp_path_factory):
    """One ordinary pass per sum precision."""
    out = {}
    for sums in ("float64", "float32"):
        folder = tmp_path_factory.mktemp(f"one-{sums}")
        run_pass(_exp(sums), out=folder, progress=False, subject=six_blocks, saes=saes)
        out[sums] = folder
    return out


def same_artefacts(exp, a, b):
    for name in ARTEFACT_FILES:
        x, y = load_artefact(exp, name, a), load_artefact(exp, name, b)
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name}:{key}")


@pytest.mark.parametrize("passes,words", [(2, "2 passes over the pairs, 3 pairs each"),
                                          (3, "3 passes over the pairs, 2 pairs each")])
@pytest.mark.parametrize("sums", ["float64", "float32"])
def test_passes_equal_one_pass_exactly(six_blocks, saes, reference, tmp_path, monkeypatch, passes, words, sums):
    exp = _exp(sums)
    encoded = []  # the sites each batch encodes
    real = collect.encode_batch

    def spy(subject, saes_, exp_, batch, index, floors=None, sites=None, **kw):
        encoded.append(tuple(sites or exp_.sites))
        return real(subject, saes_, exp_, batch, index, floors, sites, **kw)

    monkeypatch.setattr(collect, "encode_batch", spy)
    res = run_pass(exp, out=tmp_path, progress=False, subject=six_blocks, saes=saes, plan="passes", passes=passes)
    assert res.plan == words and res.tokens == 500
    same_artefacts(exp, reference[sums], tmp_path)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["plan"] == words
    # every pass encodes only the sites of its pairs (the first pass too)
    per_pass = len(encoded) // passes
    assert len(encoded) == per_pass * passes
    each = [set(encoded[j * per_pass:(j + 1) * per_pass]) for j in range(passes)]
    expected = {2: [{SITES[:4]}, {SITES[3:]}], 3: [{SITES[:3]}, {SITES[2:5]}, {SITES[4:]}]}[passes]
    assert each == expected
    # the per-token codes: each pass wrote those of the sites it owns, the same bytes as one pass
    one, many = reference[sums] / "codes", tmp_path / "codes"
    bins = sorted(p.name for p in one.glob("*.bin"))
    assert len(bins) == 3 * len(SITES) and bins == sorted(p.name for p in many.glob("*.bin"))
    for site_file in bins:
        assert (one / site_file).read_bytes() == (many / site_file).read_bytes(), site_file
    meta_one, meta_many = (json.loads((d / "codes.json").read_text()) for d in (one, many))
    for m in (meta_one, meta_many):
        m.pop("metadata_sha256")
    assert meta_one == meta_many


def test_each_pass_holds_only_its_sites(six_blocks, saes, tmp_path, monkeypatch):
    """3 passes (pairs 0-1, 2-3, 4-5): pass j encodes the sites of its pairs and holds the
    histograms, top examples and graph of the sites it owns (the first pass holding a site)."""
    seen = []
    real = collect.PassState.end_pass

    def spy(state):
        seen.append({
            "encoded": state.encoded, "owned": state.owned, "features": state.features.sites,
            "histograms": state.histograms.sites, "histogram rows": state.histograms.counts.shape[0],
            "top": state.top.sites, "top rows": state.top.hi_val.shape[0], "graph": state.graph.sites,
            "graph sums": state.graph.sum_xy.device_sums.numel(),
            "pairs": [i for i, p in enumerate(state.pairs) if p is not None],
        })
        real(state)

    monkeypatch.setattr(collect.PassState, "end_pass", spy)
    run_pass(EXP, out=tmp_path, progress=False, subject=six_blocks, saes=saes, plan="passes", passes=3)
    tri = 24 * 23 // 2
    owned = [SITES[:3], SITES[3:5], SITES[5:]]
    for j, (s, own) in enumerate(zip(seen, owned)):
        assert s["encoded"] == s["features"] == SITES[2 * j:2 * j + 3]
        assert s["owned"] == s["histograms"] == s["top"] == s["graph"] == own
        assert s["histogram rows"] == s["top rows"] == len(own) and s["graph sums"] == len(own) * tri
        assert s["pairs"] == [2 * j, 2 * j + 1]
    # each site has exactly one owner
    assert sum(owned, ()) == SITES


def test_pair_parallel_rank_holds_only_its_group():
    """Pair-parallel over 2 ranks: rank 1 holds pairs 3-5, encodes sites 3-6 and owns sites 4-6."""
    from helpers.stats import PassState, pass_groups

    exp = EXP.replace(sum_dtype="float64")
    groups = pass_groups(6, 2)
    assert groups == [[0, 1, 2], [3, 4, 5]]
    ranks = [PassState(exp, 24, torch.device("cpu"), groups=groups, group=r, mode="pairs") for r in (0, 1)]
    assert [r.encoded for r in ranks] == [SITES[:4], SITES[3:]]
    assert [r.owned for r in ranks] == [SITES[:4], SITES[4:]]
    for r, rows in zip(ranks, (4, 3)):
        assert r.features.fired.shape == (4, 24)  # the sites it encodes
        assert r.histograms.counts.shape[0] == r.top.hi_val.shape[0] == rows  # the sites it owns
        assert r.graph.sum_xy.device_sums.numel() == rows * 24 * 23 // 2
    assert [i for i, p in enumerate(ranks[1].pairs) if p is not None] == [3, 4, 5]


def test_a_changed_stream_between_passes_is_caught(six_blocks, saes, tmp_path, monkeypatch):
    """Site 2 is encoded by passes 1 and 2: if it fires otherwise in pass 2, the pass stops."""
    real = collect.encode_batch

    def changed(subject, saes_, exp_, batch, index, floors=None, sites=None, **kw):
        acts, doc, pos = real(subject, saes_, exp_, batch, index, floors, sites, **kw)
        if tuple(sites) == SITES[2:5] and index == 1:
            a = acts[SITES[2]]
            acts[SITES[2]] = type(a)(a.indices, torch.zeros_like(a.values), a.n_features, a.finite)
        return acts, doc, pos

    monkeypatch.setattr(collect, "encode_batch", changed)
    with pytest.raises(ConfigError, match=r"site 'blocks.2.hook_resid_pre' fired differently in pass 2 than "
                                          r"in pass 1: the token stream or the SAEs changed between passes: "
                                          r"rerun the pass from the start"):
        run_pass(EXP, out=tmp_path, progress=False, subject=six_blocks, saes=saes, plan="passes", passes=3)


def test_auto_takes_passes_when_all_pairs_do_not_fit(six_blocks, saes, reference, tmp_path, monkeypatch, caplog):
    import helpers.stats.memory as memory

    n_params = sum(p.numel() for p in six_blocks.hf_model.parameters())
    prec = memory.Precision(torch.int32)

    def need(held):  # on the CPU the device bill and the host's (the results of the other pairs) add up
        return (sum(memory_bill(EXP, 24, n_params, max_tokens=500, pairs_held=held, precision=prec).values())
                + host_bill(EXP, 24, prec, held, device_type="cpu", max_tokens=500))

    three, six = need(3), need(None)
    free = int(three / 0.9) + 1
    assert six > 0.9 * free  # all six pairs do not fit, three do
    monkeypatch.setattr(memory, "available_memory", lambda device: free)
    with caplog.at_level("INFO", logger="helpers.stats"):
        res = run_pass(EXP, out=tmp_path, progress=False, subject=six_blocks, saes=saes)
    assert res.plan == "2 passes over the pairs, 3 pairs each"
    assert any("memory bill on cpu (2 passes over the pairs, 3 pairs each)" in r.message for r in caplog.records)
    same_artefacts(EXP, reference["float64"], tmp_path)
    # a device that cannot hold even one pair: refused with the way out
    monkeypatch.setattr(memory, "available_memory", lambda device: 1 << 20)
    with pytest.raises(ConfigError, match="even one pair per pass does not fit.*--plan pairs"):
        run_pass(EXP, out=tmp_path / "x", progress=False, subject=six_blocks, saes=saes)


class Crash(Exception):
    pass


def crash_in_three_passes(monkeypatch, out, subject, saes, pass_sites, crash):
    """Run 3 passes over the pairs with checkpoints every 100 tokens, and crash in the pass that encodes
    ``pass_sites`` at its first batch where ``crash(batches of that pass so far, batch index)`` holds;
    the real ``encode_batch`` is back afterwards."""
    real = collect.encode_batch
    calls = [0]

    def crashing(subject_, saes_, exp_, batch, index, floors=None, sites=None, **kw):
        if sites is not None and tuple(sites) == pass_sites:
            calls[0] += 1
            if crash(calls[0], index):
                raise Crash
        return real(subject_, saes_, exp_, batch, index, floors, sites, **kw)

    monkeypatch.setattr(collect, "encode_batch", crashing)
    with pytest.raises(Crash):
        run_pass(EXP, out=out, progress=False, subject=subject, saes=saes, plan="passes", passes=3,
                 checkpoint_tokens=100)
    monkeypatch.setattr(collect, "encode_batch", real)


def test_crash_in_a_later_pass_then_resume_equals_one_pass(six_blocks, saes, reference, tmp_path, monkeypatch):
    # the third pass (pairs 4 and 5), half way through its 5 batches
    crash_in_three_passes(monkeypatch, tmp_path, six_blocks, saes, SITES[4:], lambda calls, index: calls == 3)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["state"]["pass_index"] == 2 and set(saved["state"]["done_pairs"]) == {0, 1, 2, 3}
    # the finished passes' per-site results; the third pass's accumulators hold only its sites
    assert set(saved["state"]["site_results"]) == {0, 1}
    assert saved["state"]["encoded"] == SITES[4:] and saved["state"]["owned"] == SITES[5:]
    assert saved["state"]["acc"]["histograms"]["counts"].shape[0] == 2
    assert not (tmp_path / "metadata.json").exists()
    # another number of passes cannot continue it: one line, the checkpoint left as it was
    with pytest.raises(ConfigError, match=r"3 passes over the pairs, 2 pairs each\), this run would be "
                                          r"2 passes over the pairs.*--passes"):
        run_pass(EXP, out=tmp_path, progress=False, subject=six_blocks, saes=saes, plan="passes", passes=2,
                 resume=True)
    # the first two passes' pairs are spooled; a stale file of a pair the checkpoint does not record
    # (a killed run's) is rewritten, not read
    from helpers.stats.spool import SPOOL_DIR

    spool = tmp_path / SPOOL_DIR
    spooled = sorted(f"{k}_{i}.npy" for i in range(4) for k in ("count", "r"))
    assert sorted(f.name for f in spool.glob("*.npy")) == spooled
    np.save(spool / "count_4.npy", np.full((24, 24), 7, dtype=np.uint8))
    run_pass(EXP, out=tmp_path, progress=False, subject=six_blocks, saes=saes, plan="passes", passes=3, resume=True)
    assert not spool.exists()
    assert not (tmp_path / "checkpoint.pt").exists()
    same_artefacts(EXP, reference["float64"], tmp_path)


@pytest.mark.parametrize("args,message", [
    (["--plan", "passes", "--passes", "7"], "--passes 7: the experiment has 6 adjacent pair(s); choose 1..6"),
    (["--plan", "data", "--passes", "2"], "--passes 2 goes with --plan passes (or auto), not --plan data"),
    (["--plan", "passes", "--passes", "0"], "--passes 0: the experiment has 6 adjacent pair(s)"),
])
def test_bad_passes_are_one_line_before_the_model_loads(args, message, tmp_path, capsys, monkeypatch):
    import helpers.subject.models as models

    monkeypatch.setattr(models, "load_subject", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["collect", "--experiment", "smoke", "--quiet", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_done_pairs_are_spooled_not_held_and_the_spool_is_gone_after(six_blocks, saes, reference, tmp_path,
                                                                    monkeypatch):
    """3 passes: at the end of each pass its 2 pairs' derived arrays are on disk (compact counts,
    float32 r: at most 24 x 24 x (4 + 4) bytes and a header each) and the host keeps no
    full-width array of a done pair; the writer spools nothing more and removes the spool."""
    from helpers.stats.spool import SPOOL_DIR, PairSpool

    seen, adds = [], []
    real_end, real_add = collect.PassState.end_pass, PairSpool.add

    def end_spy(state):
        real_end(state)
        files = sorted((tmp_path / SPOOL_DIR).glob("*.npy"))
        held = [a for rec in state.done_pairs.values() for a in rec["sums"]]
        seen.append({"pairs": sorted(state.done_pairs), "files": [f.name for f in files],
                     "bytes": sum(f.stat().st_size for f in files), "held": {a.shape for a in held},
                     "pairs held": [i for i, p in enumerate(state.pairs) if p is not None]})

    def add_spy(spool, i, result, *args):
        adds.append((i, result["count"].shape, len(seen)))
        real_add(spool, i, result, *args)
        assert result == {"count": None, "sum_xy": None}  # the full-width arrays are dropped

    monkeypatch.setattr(collect.PassState, "end_pass", end_spy)
    monkeypatch.setattr(PairSpool, "add", add_spy)
    run_pass(EXP, out=tmp_path, progress=False, subject=six_blocks, saes=saes, plan="passes", passes=3)
    header = 128  # an .npy header
    for j, s in enumerate(seen):
        done = list(range(2 * j + 2))
        assert s["pairs"] == done and s["pairs held"] == []
        assert s["files"] == sorted(f"{k}_{i}.npy" for i in done for k in ("count", "r"))
        assert s["bytes"] <= len(done) * (24 * 24 * (4 + 4) + 2 * header)
        assert s["held"] == {(24,)}  # a done pair keeps only its sites' feature sums (its r's inputs)
    # each pair spooled once, at the end of its pass (none at write time)
    assert adds == [(i, (24, 24), i // 2) for i in range(6)]
    assert not (tmp_path / SPOOL_DIR).exists()
    same_artefacts(EXP, reference["float64"], tmp_path)


@pytest.mark.parametrize("passes", [None, 3])
def test_a_stale_spool_of_a_killed_run_is_not_in_the_artefacts(six_blocks, saes, reference, tmp_path, passes):
    from helpers.stats.spool import SPOOL_DIR

    stale = tmp_path / SPOOL_DIR
    stale.mkdir(parents=True)
    for i in range(6):  # whole files of the right shapes and dtypes, other numbers
        np.save(stale / f"count_{i}.npy", np.full((24, 24), 7, dtype=np.uint8))
        np.save(stale / f"r_{i}.npy", np.full((24, 24), 0.5, dtype=np.float32))
    (stale / ".count_0.npy.x.npy").write_bytes(b"half a file")  # a write killed half way
    kw = dict(plan="passes", passes=passes) if passes else {}
    run_pass(EXP, out=tmp_path, progress=False, subject=six_blocks, saes=saes, **kw)
    assert not stale.exists()
    same_artefacts(EXP, reference["float64"], tmp_path)


def test_resume_with_a_spooled_pair_missing_is_one_line(six_blocks, saes, tmp_path, monkeypatch, capsys):
    from helpers.stats.spool import SPOOL_DIR

    # the second pass, at batch 3
    crash_in_three_passes(monkeypatch, tmp_path, six_blocks, saes, SITES[2:5], lambda calls, index: index == 3)
    spool = tmp_path / SPOOL_DIR
    assert sorted(f.name for f in spool.glob("*.npy")) == ["count_0.npy", "count_1.npy", "r_0.npy", "r_1.npy"]
    np.save(spool / "r_1.npy", np.zeros((24, 23), dtype=np.float32))  # another shape
    with pytest.raises(ConfigError, match=r"^--resume: the spooled results of pair 1 \(.*r_1.npy\) are missing or "
                                          r"do not match the checkpoint: run without --resume$"):
        run_pass(EXP, out=tmp_path, progress=False, subject=six_blocks, saes=saes, plan="passes", passes=3,
                 resume=True)
    (spool / "count_0.npy").unlink()
    with pytest.raises(ConfigError, match=r"spooled results of pair 0 .*run without --resume$"):
        run_pass(EXP, out=tmp_path, progress=False, subject=six_blocks, saes=saes, plan="passes", passes=3,
                 resume=True)


@pytest.mark.parametrize("passes", [None, 3])
def test_disk_bill_bounds_what_the_pass_writes(six_blocks, saes, tmp_path, monkeypatch, passes):
    """The disk the pass is checked for before its first token bounds what it writes: its largest
    checkpoint twice (the new one is written before the old one goes), the spool at its fullest, and
    the artefacts."""
    from helpers.stats import Precision, disk_bill
    from helpers.stats.spool import PairSpool

    biggest = {"checkpoint": 0, "spool": 0}
    real_save, real_clear = collect._save_checkpoint, PairSpool.clear

    def save(path, *args):
        real_save(path, *args)
        biggest["checkpoint"] = max(biggest["checkpoint"], path.stat().st_size)

    def clear(spool):  # (the spool is at its fullest when the artefacts are written and it is cleared)
        if spool.folder.is_dir():
            size = sum(f.stat().st_size for f in spool.folder.iterdir())
            biggest["spool"] = max(biggest["spool"], size)
        real_clear(spool)

    monkeypatch.setattr(collect, "_save_checkpoint", save)
    monkeypatch.setattr(PairSpool, "clear", clear)
    kw = dict(plan="passes", passes=passes) if passes else {}
    res = run_pass(EXP, out=tmp_path, progress=False, subject=six_blocks, saes=saes, checkpoint_tokens=100,
                   record_codes=False, **kw)
    assert biggest["checkpoint"] > 0 and biggest["spool"] > 0
    bill = disk_bill(EXP, 24, Precision(torch.int32), 500, 2 if passes else None)
    checkpoints, spool, artefacts = bill.values()
    assert checkpoints >= 2 * biggest["checkpoint"] and spool >= biggest["spool"]
    assert artefacts >= sum(f.stat().st_size for f in tmp_path.iterdir())
