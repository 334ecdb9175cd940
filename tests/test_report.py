from helpers.report import format_info, info_rows

INFO = {
    "preset": "p", "description": "a test", "sites": ["a", "b"], "token_budget": None, "context_length": 64,
    "model": {"name": "m", "source": "s", "family": "gpt2", "n_layers": 2, "d_model": 8, "causal": True},
    "saes": {"source": "trained", "release": None, "width": 16, "k": 4, "trained": True,
             "quality": {"a": {"fvu": 0.5, "l0": 4.0, "dead_fraction": 0.25}}},
    "corpus": {"name": "c", "max_documents": 10, "documents": 10, "tokens": 12345},
    "artefacts": {"saes": "/x/saes", "statistics": "/x/stats"},
}


def test_info_rows_are_what_the_command_line_prints():
    rows = info_rows(INFO)
    assert [f for f, _ in rows] == ["experiment", "model", "sites", "SAEs", "corpus", "tokens", "artefacts", ""]
    assert dict(rows)["sites"] == "2: a, b"
    assert dict(rows)["corpus"] == "c, 10 documents, 12,345 tokens (first 10 documents)"
    text = format_info(INFO).splitlines()
    assert text[:len(rows)] == [f"{f:<12} {v}" for f, v in rows]
    assert "25.0%" in text[-1]  # the quality table follows


def test_quality_summary_reads_the_table():
    from helpers.experiment import PRESETS
    from helpers.report import quality_summary, quality_table

    report = {"a": {"fvu": 0.2, "l0": 16.0, "dead_fraction": 0.1, "n_tokens": 1000, "train_tokens": 6000},
              "b": {"fvu": 0.35, "l0": 15.0, "dead_fraction": 0.0, "n_tokens": 1000, "train_tokens": 6000}}
    text = quality_summary(PRESETS["smoke"], quality_table(report))
    assert text.splitlines() == [
        "On preset 'smoke', 2 SAEs of 256 features each (TopK, k=16) were measured on 1,000 held-out tokens.",
        "FVU ranges from 0.200 to 0.350 (worst at b); L0 is 15.5 on average; dead features range from 0.0% "
        "to 10.0% of the width."]
    lines = quality_summary(PRESETS["smoke"], quality_table(report), report).splitlines()
    assert lines[2:] == ["Sites that miss FVU <= 0.25, dead <= 15%:", "  b: FVU 0.350 > 0.25"]
    for q in report.values():
        q.update(fvu=0.1, loss_recovered=90.0, ce_clean=2.5, ce_spliced=2.7, ce_zero=7.0)
    report["a"]["loss_recovered"] = 80.0
    lines = quality_summary(PRESETS["smoke"], quality_table(report), report).splitlines()
    assert lines[2] == ("Splicing an SAE in recovers 80.0% to 90.0% of the loss (clean CE 2.500 nats/token, "
                        "spliced 2.700-2.700, zero-ablated 7.000-7.000).")
    assert lines[3:] == ["Sites that miss FVU <= 0.25, dead <= 15% and loss recovered >= 85%:",
                         "  a: loss recovered 80.0% < 85%"]
    report["a"]["loss_recovered"] = 86.0
    assert quality_summary(PRESETS["smoke"], quality_table(report), report).splitlines()[-1] == (
        "Every site meets FVU <= 0.25, dead <= 15% and loss recovered >= 85%.")
    report["b"]["dead_fraction"] = 0.2  # the held-out dead share is a target too
    assert quality_summary(PRESETS["smoke"], quality_table(report), report).splitlines()[-1] == "  b: dead 20.0% > 15%"


def test_info_says_where_the_saes_come_from_once():
    assert dict(info_rows(INFO))["SAEs"] == "trained here, 16 features, TopK k=4, ready"
    untrained = {**INFO, "saes": {**INFO["saes"], "trained": False}}
    assert dict(info_rows(untrained))["SAEs"].endswith(", not trained yet")


def test_info_states_the_corpus_split_and_an_unfinished_training(artefacts_tmp):
    import json

    from helpers.experiment import PRESETS
    from helpers.report import describe

    exp = PRESETS["smoke"].replace(corpus_split=(0.5, 0.2))
    info = describe(exp)
    parts = info["corpus"]["parts"]
    assert set(parts) == {"stats", "sae_heldout", "sae_train"}
    assert sum(p["documents"] for p in parts.values()) == info["corpus"]["documents"] == 80
    assert sum(p["tokens"] for p in parts.values()) == info["corpus"]["tokens"]
    split = dict(info_rows(info))["split"]
    assert split.startswith("by document, none in two parts: statistics ") and "SAE training" in split
    # a set in training: the sites done so far, with their quality
    from helpers.subject.training import SITE_QUALITY_FILE, staging_dir

    staging = staging_dir(exp)
    (staging / exp.sites[0]).mkdir(parents=True)
    exp.save(staging)
    (staging / exp.sites[0] / SITE_QUALITY_FILE).write_text(json.dumps({"fvu": 0.1, "l0": 16.0, "dead_fraction": 0.0}))
    info = describe(exp, count_tokens=False)
    assert dict(info_rows(info))["SAEs"].endswith(f"not trained yet (1 of 7 sites trained in {staging})")
    assert list(info["saes"]["quality"]) == [exp.sites[0]]
