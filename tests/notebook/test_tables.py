import re

import numpy as np

from helpers.notebook.tables import Html, examples_table, highlight, html_table


def _cells(markup):
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", markup)]


def test_table_formats_numbers_and_escapes_text():
    t = html_table([{"site": "<b>", "n": 12345, "share": 0.256, "r": float("nan")},
                    {"site": "x", "n": np.int64(7), "share": 0.5, "r": np.float32(0.125)}],
                   formats={"share": ".1%"}, caption="a & b")
    assert isinstance(t, Html) and t._repr_html_() == str(t)
    assert _cells(t) == ["&lt;b&gt;", "12,345", "25.6%", "–", "x", "7", "50.0%", "0.125"]
    assert "<caption>a &amp; b</caption>" in t
    assert re.findall(r"<th[^>]*>([^<]*)</th>", t) == ["site", "n", "share", "r"]
    assert "overflow-x:auto" in t  # never wider than the column


def test_table_column_order_and_missing_cells():
    t = html_table([{"a": 1}, {"b": 2}], columns=["b", "a"])
    assert _cells(t) == ["", "1", "2", ""]


def test_highlight_marks_the_token_and_scales_the_colour():
    strong = highlight("the <cat", " sat", " on", 1.0)
    weak = highlight("the", " sat", " on", 0.0)
    assert re.search(r"<mark[^>]*> sat</mark>", strong)
    assert "…the &lt;cat<mark" in strong and "</mark> on…" in strong
    assert "rgba(255,140,0,1.00)" in strong and "rgba(255,140,0,0.25)" in weak


def test_html_values_are_inserted_as_they_are():
    t = html_table([{"context": highlight("a", "b", "c")}])
    assert "<mark" in t


def test_examples_table_scales_by_the_largest_activation():
    rows = [{"activation": 4.0, "document": "Cats", "left": "a", "token": "b", "right": "c"},
            {"activation": 1.0, "document": "Dogs", "left": "d", "token": "e", "right": "f"}]
    t = examples_table(rows)
    assert _cells(t)[:2] == ["4.00", "Cats"] and _cells(t)[3:5] == ["1.00", "Dogs"]
    alphas = [float(a) for a in re.findall(r"rgba\(255,140,0,([0-9.]+)\)", t)]
    assert alphas == [1.0, round(0.25 + 0.75 * 0.25, 2)]


def test_html_list_inserts_its_items():
    from helpers.notebook.tables import html_list

    out = html_list(f'<a href="#{i}">{i}</a>' for i in range(2))
    assert out == '<ul><li><a href="#0">0</a></li><li><a href="#1">1</a></li></ul>' and out._repr_html_() == out


def test_paired_examples_table_zips_the_two_features():
    from helpers.notebook.tables import paired_examples_table

    up = [{"left": "the ", "token": "sea", "right": " is", "activation": 2.5},
          {"left": "a ", "token": "port", "right": "", "activation": 1.25}]
    down = [{"left": "", "token": "harbour", "right": " <b>", "activation": 3.0}]
    out = paired_examples_table(("up#1 (sea)", up), ("down#2 (harbour)", down), caption="c")
    assert out.count("<tr>") == 2  # the head and one row: as many as the shorter list
    assert "up#1 (sea)" in out and "down#2 (harbour)" in out and "<caption>c</caption>" in out
    assert ">2.50<" in out and ">3.00<" in out and "1.25" not in out and "&lt;b&gt;" in out
