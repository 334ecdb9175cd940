"""Links from the book's pages to the feature explorer."""

from __future__ import annotations

import html
from urllib.parse import quote

from ..experiment import Experiment
from .pages import check_feature

#: where the explorer sits relative to a notebook page of the built book (notebooks/<name>.html)
FROM_NOTEBOOK = "../explorer.html"


def feature_link(exp: Experiment, site: str, feature: int, base: str = FROM_NOTEBOOK) -> str:
    """Relative URL of a feature's page in the explorer (``../explorer.html#site=...&feature=...``)."""
    check_feature(exp, site, feature)
    return f"{base}#site={quote(site)}&feature={int(feature)}"


def feature_anchor(exp: Experiment, site: str, feature: int, text: str | None = None,
                   base: str = FROM_NOTEBOOK) -> str:
    """An HTML ``<a>`` to the feature's page (for notebook HTML tables)."""
    label = text if text is not None else f"{site} #{int(feature)}"
    return f'<a href="{html.escape(feature_link(exp, site, feature, base))}">{html.escape(label)}</a>'
