"""Notebook outputs made for reading: HTML tables and tokens highlighted in their context.

Everything here returns :class:`Html` (a ``str`` with ``_repr_html_``), which a notebook
shows as HTML and the book embeds as is: no fixed-width text, nothing wider than the column
(tables scroll inside their own box when they must).
"""

from __future__ import annotations

import html
import math
import numbers
from typing import Any, Iterable, Mapping, Sequence

# the colour of a highlighted token (orange), its opacity scaled by activation
HIGHLIGHT_RGB = (255, 140, 0)


class Html(str):
    """A string of HTML that notebooks display as HTML."""

    def _repr_html_(self) -> str:
        return str(self)


def _cell(value: Any, fmt: str | None) -> tuple[str, bool]:
    """(escaped text, numeric?) of one cell."""
    if isinstance(value, Html):
        return str(value), False
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        if isinstance(value, numbers.Real) and math.isnan(float(value)):
            return "–", True
        if fmt:
            return html.escape(format(value, fmt)), True
        if isinstance(value, numbers.Integral):
            return f"{int(value):,}", True
        return f"{float(value):.4g}", True
    return html.escape("" if value is None else str(value)), False


def html_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None,
               formats: Mapping[str, str] | None = None, caption: str | None = None) -> Html:
    """An HTML table of ``rows`` (dicts), one column per key (or per ``columns``, in order).

    Numbers are right-aligned and formatted by ``formats[column]`` (a ``format`` spec such as
    ``".1%"``) or by default (integers with thousands separators, floats to 4 significant
    digits, NaN as a dash); strings are escaped; :class:`Html` values are inserted as they are.
    """
    rows = list(rows)
    formats = dict(formats or {})
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f'<th style="text-align:left">{html.escape(str(c))}</th>' for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            text, numeric = _cell(row.get(c), formats.get(c))
            style = "text-align:right;white-space:nowrap" if numeric else "text-align:left"
            cells.append(f'<td style="{style}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return Html(
        '<div class="sae-table" style="max-width:100%;overflow-x:auto">'
        f'<table class="dataframe">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def highlight(left: str, token: str, right: str, strength: float = 1.0) -> Html:
    """The token highlighted in its context: ``…left[token]right…`` as HTML.

    ``strength`` in [0, 1] sets the highlight's opacity (e.g. activation / the feature's max);
    the text wraps like prose.
    """
    alpha = 0.25 + 0.75 * min(max(float(strength), 0.0), 1.0)
    r, g, b = HIGHLIGHT_RGB
    return Html(
        '<span class="sae-context" style="white-space:normal">'
        f"…{html.escape(left)}"
        f'<mark style="background:rgba({r},{g},{b},{alpha:.2f});color:inherit;padding:0 1px;'
        f'border-radius:2px;font-weight:bold">{html.escape(token)}</mark>'
        f"{html.escape(right)}…</span>"
    )


def examples_table(rows: Sequence[Mapping[str, Any]], caption: str | None = None,
                   max_activation: float | None = None) -> Html:
    """A feature's examples (rows of :func:`helpers.explore.examples`) as a table: activation,
    document, and the context with the token highlighted (opacity relative to
    ``max_activation``, default the largest activation listed)."""
    top = max_activation if max_activation else max((r["activation"] for r in rows), default=0.0)
    return html_table(
        ({"activation": r["activation"], "document": r["document"],
          "context": highlight(r["left"], r["token"], r["right"], r["activation"] / top if top > 0 else 1.0)}
         for r in rows),
        columns=["activation", "document", "context"], formats={"activation": ".2f"}, caption=caption,
    )


def html_list(items: Iterable[str]) -> Html:
    """A bulleted list of HTML snippets (e.g. links made by
    :func:`helpers.explore.links.feature_anchor`), inserted as they are."""
    return Html("<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>")


def paired_examples_table(up: tuple[str, Sequence[Mapping[str, Any]]], down: tuple[str, Sequence[Mapping[str, Any]]],
                          caption: str | None = None) -> Html:
    """Two features' examples side by side, one example of each per row: ``up`` and ``down`` are
    ``(column title, rows of helpers.explore.examples)``; each context with its token highlighted,
    then its activation (as many rows as the shorter list)."""
    (up_title, up_rows), (down_title, down_rows) = up, down
    rows = [{up_title: highlight(x["left"], x["token"], x["right"]), "activation up": x["activation"],
             down_title: highlight(y["left"], y["token"], y["right"]), "activation down": y["activation"]}
            for x, y in zip(up_rows, down_rows)]
    return html_table(rows, formats={"activation up": ".2f", "activation down": ".2f"}, caption=caption)
