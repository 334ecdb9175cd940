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
