"""The width sweep: SAEs of widths each 4x the last at one site, trained on the same activations
with the same samples per feature (a tiny random Llama), and the same rows for official widths
of one Gemma Scope 2 layer (random weights of the official layout, served offline)."""

import json

import pytest
import torch

import helpers.subject.widths as widths_mod
from helpers.cli import main
from helpers.errors import ConfigError
from helpers.experiment import Experiment
from helpers.subject.saes import sae_quality
from helpers.subject.widths import (WidthSweep, format_width_rows, load_width_rows, official_width_rows,
                                    parse_widths, train_width_sweep)

SITES = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post")


@pytest.fixture
def tiny_base(tiny_llama_dir):
    """A tiny Llama (d_model 32) whose preset trains 32-feature SAEs on 1,200 tokens for 2 epochs."""
    return Experiment(name="tiny-llama", model=str(tiny_llama_dir), sites=SITES, corpus="wiki-summaries",
                      max_documents=30, context_length=32, batch_size=8, sae_width=32, sae_k=4,
                      sae_train_tokens=1200, sae_heldout_tokens=300, sae_train_batch=128, sae_epochs=2,
                      sae_lr=3e-3, sae_ce_tokens=256, device="cpu")


@pytest.fixture
def llama_subject(tiny_base):
    from helpers.subject.models import load_subject

    return load_subject(tiny_base)


def test_defaults_come_from_the_base(tiny_base):
    sweep = WidthSweep(tiny_base)
    assert sweep.site == SITES[1]  # the middle site
    assert sweep.widths == (8, 32, 128) and sweep.ks == (4, 4, 4)
    assert sweep.tokens_per_feature == 1200 * 2 / 32  # the base's samples per feature
    assert [sweep.samples(w) for w in sweep.widths] == [600, 2400, 9600]
    exp = sweep.experiment(128)
    assert (exp.sites, exp.sae_width, exp.sae_k, exp.name) == ((SITES[1],), 128, 4, "tiny-llama-widths")
    assert WidthSweep.from_dict(json.loads(json.dumps(sweep.to_dict()))) == sweep
    gemma = WidthSweep("gemma")
    assert (gemma.site, gemma.widths) == ("blocks.4.hook_resid_post", (512, 2048, 8192))
    assert round(gemma.tokens_per_feature) == 293


@pytest.mark.parametrize("kw, message", [
    (dict(widths=(512,)), r"widths \[512\]: a width sweep needs at least 3 widths, each 4x the last: give e\.g\. "
                          r"--widths 512,2048,8192"),
    (dict(widths=(512, 2048)), "needs at least 3 widths"),
    (dict(widths=(2048, 512, 128)), r"are not increasing \(512 after 2048\): give them smallest first"),
    (dict(widths=(512, 512, 2048)), "are not increasing"),
    (dict(widths=(512, 1024, 4096)), r"1024 is not 4x 512: give each width 4x the last, e\.g\. --widths 512,"),
    (dict(widths=(512, 2048.0, 8192)), "must be positive whole numbers"),
    (dict(site="blocks.40.hook_resid_post"), r"unknown site 'blocks.40.hook_resid_post' for model 'gemma-3-270m': "
                                             r"choose one of the preset's sites \['blocks.0"),
    (dict(site="hidden.2"), "unknown site 'hidden.2'"),
    (dict(ks=(8, 8)), "2 values of k for 3 widths"),
    (dict(ks=(8, 3000, 8)), r"k=3000 for width 2048: k must be a whole number in 1\.\.width"),
    (dict(tokens_per_feature=0), "tokens_per_feature=0 must be a positive number"),
])
def test_bad_sweeps_are_one_line(kw, message):
    with pytest.raises(ConfigError, match=message) as info:
        WidthSweep("gemma", **kw)
    assert "\n" not in str(info.value)


def test_pretrained_base_and_bad_width_text_are_refused():
    with pytest.raises(ConfigError, match=r"uses pretrained SAEs .* --release NAME --layers L"):
        WidthSweep("gpt2-res-jb")
    assert parse_widths("512, 2k,8K") == (512, 2048, 8192) and parse_widths("1m") == (1 << 20,)
    with pytest.raises(ConfigError, match="--widths 'a,b': expected widths separated by commas"):
        parse_widths("a,b")


def test_sweep_trains_each_width_on_the_same_activations(tiny_base, llama_subject, artefacts_tmp, monkeypatch):
    from sae_lens import SAE

    collected, trained = [], []
    real_collect, real_train = widths_mod.collect_activations, widths_mod.train_sae

    def collect(subject, exp, n, **kw):
        collected.append((exp.sites, n))
        return real_collect(subject, exp, n, **kw)

    def train(acts, exp, site, **kw):
        trained.append((acts, exp.sae_width, exp.sae_k, site, kw["samples"]))
        return real_train(acts, exp, site, **kw)

    monkeypatch.setattr(widths_mod, "collect_activations", collect)
    monkeypatch.setattr(widths_mod, "train_sae", train)
    sweep = WidthSweep(tiny_base, ks=(2, 4, 8))
    result = train_width_sweep(sweep, progress=False, subject=llama_subject)

    assert collected == [((SITES[1],), 1500)]  # once, for the one site
    assert [t[1:] for t in trained] == [(8, 2, SITES[1], 600), (32, 4, SITES[1], 2400), (128, 8, SITES[1], 9600)]
    assert all(t[0] is trained[0][0] for t in trained) and trained[0][0].shape == (1200, 32)  # the same tokens
    assert result.reused == () and [r["width"] for r in result.rows] == [8, 32, 128]
    assert [r["samples_per_feature"] for r in result.rows] == [pytest.approx(75, rel=0.15)] * 3
    for row in result.rows:
        assert row["k"] / 2 < row["l0"] <= row["k"]  # TopK: at most k a token
        assert 0 < row["fvu"] < 1 and 0 <= row["dead_fraction"] < 1
        assert "loss_recovered" in row and row["ce_zero"] > row["ce_clean"]
    assert result.rows[0]["fvu"] > result.rows[-1]["fvu"]  # 16x the features, 4x the k: better

    # the rows are sae_quality of the saved SAEs on the held-out tokens, recomputed here
    acts = real_collect(llama_subject, sweep.experiment(8), 1500, progress=False)[SITES[1]][1200:]
    for row in result.rows:
        folder = artefacts_tmp / "saes" / "tiny-llama-widths" / SITES[1] / f"w{row['width']}"
        sae = SAE.load_from_disk(str(folder))
        assert sae.cfg.d_sae == row["width"] == row["d_sae"]
        again = sae_quality(sae, acts)
        assert {k: row[k] for k in again} == pytest.approx(again, rel=1e-5)
        saved = json.loads((folder / "width.json").read_text())
        assert WidthSweep.from_dict(saved["sweep"]) == sweep and saved["row"] == row
    report = json.loads((sweep.folder / "widths_report.json").read_text())
    assert report["rows"] == result.rows and WidthSweep.from_dict(report["sweep"]) == sweep
    assert WidthSweep.from_dict(json.loads((sweep.folder / "sweep.json").read_text())) == sweep
    assert load_width_rows(sweep) == result.rows

    # reuse: nothing collected nor trained; a new width trains only that width, on new activations
    collected.clear(), trained.clear()
    again = train_width_sweep(sweep, progress=False, subject=llama_subject)
    assert (collected, trained, again.reused, again.rows) == ([], [], (8, 32, 128), result.rows)
    wider = sweep.replace(widths=(8, 32, 128, 512), ks=(2, 4, 8, 8))
    grown = train_width_sweep(wider, progress=False, subject=llama_subject)
    assert [t[1] for t in trained] == [512] and len(collected) == 1 and grown.reused == (8, 32, 128)
    # another budget per feature retrains every width
    trained.clear()
    train_width_sweep(sweep.replace(tokens_per_feature=50.0), progress=False, subject=llama_subject)
    assert [t[1:] for t in trained] == [(8, 2, SITES[1], 400), (32, 4, SITES[1], 1600), (128, 8, SITES[1], 6400)]
    # no temporary folders left behind
    assert not list((artefacts_tmp / "saes").rglob(".~*"))


def test_a_failing_width_keeps_the_finished_ones(tiny_base, llama_subject, artefacts_tmp, monkeypatch):
    real_train = widths_mod.train_sae

    def train(acts, exp, site, **kw):
        if exp.sae_width == 128:
            raise RuntimeError("out of memory")
        return real_train(acts, exp, site, **kw)

    monkeypatch.setattr(widths_mod, "train_sae", train)
    sweep = WidthSweep(tiny_base)
    with pytest.raises(RuntimeError, match="out of memory"):
        train_width_sweep(sweep, progress=False, subject=llama_subject)
    assert sorted(p.name for p in sweep.folder.iterdir()) == ["w32", "w8"]
    monkeypatch.setattr(widths_mod, "train_sae", real_train)
    assert train_width_sweep(sweep, progress=False, subject=llama_subject).reused == (8, 32)


def test_cli_prints_the_table(tiny_base, llama_subject, artefacts_tmp, tmp_path, monkeypatch, capsys):
    import helpers.subject.models as models

    path = tmp_path / "tiny-llama.json"
    path.write_text(tiny_base.to_json())
    monkeypatch.setattr(models, "load_subject", lambda exp, *a, **k: llama_subject)
    assert main(["widths", "--experiment", str(path), "--widths", "8,32,128", "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"width sweep at {SITES[1]} of tiny-llama")
    assert lines[1].split() == ["width", "k", "FVU", "L0", "dead", "%", "dense", "%", "loss", "rec.", "%",
                                "samples/feature"]
    assert [line.split()[0] for line in lines[2:5]] == ["8", "32", "128"]
    # then the pass over the widths and their splitting (make widths)
    assert "feature splitting for preset 'tiny-llama-widths' written" in out
    assert main(["widths", "--experiment", str(path), "--widths", "8,16,64", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: widths [8, 16, 64]: 16 is not 4x 8") and err.count("\n") == 1
    assert main(["widths", "--experiment", str(path), "--site", "blocks.9.hook_resid_post", "--quiet"]) == 2
    assert "unknown site 'blocks.9.hook_resid_post'" in capsys.readouterr().err


def test_format_leaves_unmeasured_columns_out():
    text = format_width_rows([{"width": 16, "k": 4, "fvu": 0.5, "l0": 4.0, "dead_fraction": 0.25,
                               "dense_fraction": 0.0}], title="t")
    assert text.splitlines() == ["t", "width  k    FVU   L0  dead %  dense %", "   16  4  0.500  4.0    25.0      0.0"]


# --------------------------------------------------------------------------- official widths
RELEASE = "gemma-scope-2-270m-pt-res"


@pytest.fixture(scope="module")
def gemma_subject(tiny_tokenizer):
    from helpers.experiment import MODELS
    from helpers.subject.models import wrap

    from ..conftest import make_gemma3_270m_shaped

    return wrap(make_gemma3_270m_shaped(tiny_tokenizer), tiny_tokenizer, MODELS["google/gemma-3-270m"],
                torch.device("cpu"))


def test_official_widths_of_one_layer(gemma_scope_hub, gemma_subject):
    """Gemma Scope 2 at layer 9: 16k, 64k, 256k and 1m, served as random JumpReLU SAEs of the official
    layout with 1/1024 of the features each; one collection, one row per width, the same L0 variant."""
    import helpers.subject.training as training_module

    features = {"16k": 16, "65k": 64, "262k": 256, "1m": 1024}
    served = gemma_scope_hub(d_in=640, d_sae=lambda folder: features[folder.split("_width_")[1].split("_")[0]])
    real = training_module.collect_activations
    rows = official_width_rows(RELEASE, 9, subject=gemma_subject, n_tokens=300, progress=False,
                               corpus="wiki-summaries", max_documents=20, context_length=32, batch_size=8,
                               sae_ce_tokens=128, device="cpu")
    assert [r["width"] for r in rows] == [16384, 65536, 262144, 1048576]
    assert [r["d_sae"] for r in rows] == [16, 64, 256, 1024]
    assert [r["sae_id"] for r in rows] == [f"layer_9_width_{w}_l0_medium" for w in ("16k", "65k", "262k", "1m")]
    assert served == [f"resid_post/{r['sae_id']}/params.safetensors" for r in rows]
    assert {r["site"] for r in rows} == {"blocks.9.hook_resid_post"} and all(r["n_tokens"] >= 300 for r in rows)
    assert all("loss_recovered" in r for r in rows)
    # each row is sae_quality of that SAE on the same activations
    from helpers.subject.releases import experiment_from_release
    from helpers.subject.saes import load_pretrained_sae

    exp = experiment_from_release(RELEASE, layers=(9, 9), width=16384, l0="medium", corpus="wiki-summaries",
                                  max_documents=20, context_length=32, batch_size=8, device="cpu")
    x = real(gemma_subject, exp, 300, progress=False)["blocks.9.hook_resid_post"]
    for row in rows:
        again = sae_quality(load_pretrained_sae(RELEASE, row["sae_id"]), x)
        assert {k: row[k] for k in again} == pytest.approx(again, rel=1e-5)


def test_official_bad_input_is_one_line(gemma_scope_hub):
    with pytest.raises(ConfigError, match=r"no SAE of width\(s\) \[4096\] at blocks.9.hook_resid_post: its widths "
                                          r"there are \[16384, 65536, 262144, 1048576\]"):
        official_width_rows(RELEASE, 9, widths=(4096, 16384))
    with pytest.raises(ConfigError, match=r"has no SAE at layer 3: its layers are \[5, 9, 12, 15\]"):
        official_width_rows(RELEASE, 3)
    with pytest.raises(ConfigError, match=r"widths \[65536, 16384\] are not increasing"):
        official_width_rows(RELEASE, 9, widths=(65536, 16384))
    with pytest.raises(ConfigError, match=r"widths \[16384\]: a width sweep needs at least 2 widths"):
        official_width_rows(RELEASE, 9, widths=(16384,))


def test_official_site_with_one_width_is_refused(monkeypatch):
    import dataclasses

    import helpers.subject.releases as releases
    from helpers.subject.releases import get_release

    rel = get_release(RELEASE)
    monkeypatch.setattr(releases, "get_release",
                        lambda name: dataclasses.replace(rel, saes=tuple(s for s in rel.saes if s.width == 16384)))
    with pytest.raises(ConfigError, match=r"has only one width \(16384\) at blocks.9.hook_resid_post: a width sweep "
                                          r"needs a site with several widths") as info:
        official_width_rows(RELEASE, 9)
    assert "\n" not in str(info.value)


def test_cli_official_widths(gemma_scope_hub, gemma_subject, monkeypatch, capsys):
    import helpers.subject.models as models

    gemma_scope_hub(d_in=640, d_sae=32)
    monkeypatch.setattr(models, "load_subject", lambda exp, *a, **k: gemma_subject)
    args = ["widths", "--release", RELEASE, "--layers", "12", "--widths", "16k,64k", "--l0", "small", "--tokens",
            "200", "--quiet", "--set", "max_documents=20", "--set", "context_length=32", "--set", "sae_ce_tokens=64"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"official widths of {RELEASE} at blocks.12.hook_resid_post"
    assert [line.split()[0] for line in lines[2:]] == ["16384", "65536"]
    assert [line.split()[-1] for line in lines[2:]] == ["layer_12_width_16k_l0_small", "layer_12_width_65k_l0_small"]
    assert main(["widths", "--release", RELEASE, "--layers", "5:9"]) == 2
    assert "takes one layer (--layers L)" in capsys.readouterr().err


def test_a_busy_sweep_stops_in_one_line_before_the_model_loads(tiny_base, artefacts_tmp, tmp_path, monkeypatch,
                                                               capsys):
    import helpers.subject.models as models
    from helpers.locks import set_waiting

    from ..test_locks import _holder_elsewhere

    path = tmp_path / "tiny-llama.json"
    path.write_text(tiny_base.to_json())
    folder = WidthSweep(tiny_base).folder
    folder.mkdir(parents=True)
    monkeypatch.setattr(models, "load_subject", lambda *a, **k: pytest.fail("the model was loaded"))
    proc = _holder_elsewhere(folder)
    try:
        assert main(["widths", "--experiment", str(path), "--no-wait", "--quiet"]) == 2
    finally:
        proc.kill()
        proc.wait()
        set_waiting(True)
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder} is being written by pid {proc.pid}") and err.count("\n") == 1


def test_width_completeness_reads_the_site_once_and_equals_each_sae_alone(tiny_base, llama_subject, artefacts_tmp):
    """Completeness per width through the sweep's width sites (one capture, every width encodes it) equals
    re-encoding the stream with each width's SAE alone, batched the same way."""
    from sae_lens import SAE

    from helpers.explain.completeness import completeness
    from helpers.explain.completeness_run import _mentions, _stream, sae_firings, width_completeness
    from helpers.explain.concepts import ConceptFamily

    words = ConceptFamily("words", {"the": ["the"], "of": ["of"], "and": ["and", "And"], "in": ["in", "In"]})
    sweep = WidthSweep(tiny_base, widths=(8, 32, 128))
    train_width_sweep(sweep, progress=False, subject=llama_subject)
    got = width_completeness(sweep, [words], subject=llama_subject)
    assert [r["saes"] for r in got.rows] == [8, 32, 128] and got.tokens > 0
    docs, tok, stream = _stream(tiny_base, llama_subject.tokenizer)
    saes = {w: SAE.load_from_disk(str(sweep.width_folder(w))) for w in sweep.widths}
    alone = sae_firings(tiny_base, sweep.site, saes, llama_subject, docs)
    rows, members = completeness(list(_mentions([words], stream, docs, tok).values()), alone,
                                 {w: w for w in sweep.widths})
    assert got.rows == rows
    assert [(m["saes"], m["best_feature"], m["covered"]) for m in got.members] == \
        [(m["saes"], m["best_feature"], m["covered"]) for m in members]
