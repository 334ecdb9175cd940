"""Short names for wide tables: ``L4`` for ``blocks.4.hook_resid_post``, ``L4 → L5`` for a pair of
sites, the full names in the caption (:func:`sites_caption`)."""

from __future__ import annotations

import re
from typing import Iterable

_BLOCK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)(@w(\d+))?$")
_HIDDEN = re.compile(r"^hidden\.(\d+)(@w(\d+))?$")


def short_site(site: str) -> str:
    """``blocks.4.hook_resid_post`` -> ``L4``; ``...resid_pre`` -> ``L4 pre``; ``hidden.3`` -> ``h3``;
    a width site gets its width (``L4 w512``); anything else stays as it is."""
    m = _BLOCK.match(site)
    if m:
        return f"L{m.group(1)}" + (" pre" if m.group(2) == "pre" else "") + (f" w{m.group(4)}" if m.group(4) else "")
    m = _HIDDEN.match(site)
    if m:
        return f"h{m.group(1)}" + (f" w{m.group(3)}" if m.group(3) else "")
    return site


def short_pair(pair: str) -> str:
    """``"<site a>-><site b>"`` -> ``"L4 → L5"`` (other labels, such as ``all pairs``, stay)."""
    if "->" not in pair:
        return pair
    a, b = pair.split("->", 1)
    return f"{short_site(a)} → {short_site(b)}"


def sites_caption(sites: Iterable[str]) -> str:
    """``"L0 = blocks.0.hook_resid_post, ..."``: what the short names stand for (one per distinct kind)."""
    sites = list(sites)
    shortened = [(short_site(s), s) for s in sites if short_site(s) != s]
    if not shortened:
        return ""
    if all(_BLOCK.match(s) and _BLOCK.match(s).group(2) == "post" and not _BLOCK.match(s).group(3) for _, s in shortened):
        first, last = shortened[0], shortened[-1]
        return (f"L<i> is the residual stream after decoder layer i (blocks.<i>.hook_resid_post), "
                f"from {first[0]} to {last[0]}")
    return "; ".join(f"{short} = {full}" for short, full in shortened)


def threshold_label(value: float, name: str = "") -> str:
    """A threshold as read: ``0.4`` (not ``0.400000``), after ``name`` when given (``r ≥ 0.4``)."""
    text = f"{float(value):g}"
    return f"{name} ≥ {text}" if name else text
