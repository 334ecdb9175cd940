"""Links from the book's pages to the feature explorer."""

from __future__ import annotations

import html
from urllib.parse import quote

from ..experiment import Experiment
from .pages import check_feature

#: where the explorer sits relative to a notebook page of the built book (notebooks/<name>.html)
FROM_NOTEBOOK = "../explorer.html"
#: a width sweep's explorer (``book/_widths/widths``), from a notebook page
WIDTHS_FROM_NOTEBOOK = "../widths/explorer.html"


def _base(exp: Experiment, base: str | None) -> str:
    return base if base is not None else WIDTHS_FROM_NOTEBOOK if exp.width_pairs else FROM_NOTEBOOK


def feature_link(exp: Experiment, site: str, feature: int, base: str | None = None) -> str:
    """Relative URL of a feature's page in the explorer (``../explorer.html#site=...&feature=...``; a width
    sweep's: ``../widths/explorer.html#...``)."""
    check_feature(exp, site, feature)
    return f"{_base(exp, base)}#site={quote(site)}&feature={int(feature)}"


def feature_anchor(exp: Experiment, site: str, feature: int, text: str | None = None,
                   base: str | None = None) -> str:
    """An HTML ``<a>`` to the feature's page (for notebook HTML tables)."""
    label = text if text is not None else f"{site} #{int(feature)}"
    return f'<a href="{html.escape(feature_link(exp, site, feature, base))}">{html.escape(label)}</a>'
