"""Table rows of features labelled by their corpus examples, for :func:`.tables.html_table`."""

from __future__ import annotations

from typing import Any

from .tables import Html


def decoder_match_rows(exp, matches, text, n: int = 8) -> list[dict[str, Any]]:
    """The ``n`` highest-cosine best decoder matches
    (:class:`~helpers.evolution.decoder_matches.DecoderMatches`): both features with their top
    tokens (``text``: :class:`~helpers.explore.examples.FeatureText`), cosine, r, and a link to
    the upstream feature's Neuronpedia page where the release has one."""
    from ..evolution.decoder import neuronpedia_url

    rows = []
    for j in matches.highest(n):
        p, a, b = int(matches.pair[j]), int(matches.a[j]), int(matches.b[j])
        site_a, site_b = exp.site_pairs[p]
        url = neuronpedia_url(exp, site_a, a)
        rows.append({"sites": f"{site_a}->{site_b}", "feature": a, "top tokens": text.label(p, a),
                     "next-site feature": b, "its top tokens": text.label(p + 1, b),
                     "cosine": matches.cos[j], "r": matches.r[j],
                     "link": Html(f'<a href="{url}">Neuronpedia</a>') if url else ""})
    return rows
