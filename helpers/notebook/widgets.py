"""Threshold sliders that move without a kernel.

:func:`slider` renders the figure of every option once, when the cell runs,
and returns a :class:`StaticSlider`: HTML holding one inline PNG per option and
an ``<input type="range">`` whose inline handler shows the chosen one. The same
output works in the built book (no kernel, no network, no widget manager) and
in a running notebook (all options are already drawn, so moving it is instant).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import ConfigError

# Switch frames: show the image whose index is the range's value, update the value label.
_ONINPUT = (
    "var r=this.closest('.sae-slider'),v=+this.value;"
    "r.querySelectorAll('img.sae-slider-frame').forEach(function(m,i){m.style.display=(i===v)?'':'none';});"
    "r.querySelector('output').textContent=r.querySelectorAll('img.sae-slider-frame')[v].dataset.option;"
)


def figure_png(fig, dpi: int = 100) -> bytes:
    """The PNG bytes of a matplotlib figure (closed afterwards, so nothing is displayed twice)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


@dataclass(frozen=True)
class StaticSlider:
    """Pre-rendered frames (PNG bytes, one per option) behind a range input; shown as HTML."""

    frames: tuple[bytes, ...]
    options: tuple[str, ...]
    index: int
    description: str

    @property
    def slider_id(self) -> str:
        digest = hashlib.sha1(self.description.encode())
        for frame in self.frames:
            digest.update(frame)
        return "sae-slider-" + digest.hexdigest()[:12]

    def to_html(self) -> str:
        sid = self.slider_id
        n = len(self.frames)
        imgs = "".join(
            f'<img class="sae-slider-frame" data-option="{html.escape(opt)}" '
            f'alt="{html.escape(self.description)} {html.escape(opt)}" '
            f'style="max-width:100%;height:auto;{"" if i == self.index else "display:none"}" '
            f'src="data:image/png;base64,{base64.b64encode(frame).decode("ascii")}"/>'
            for i, (frame, opt) in enumerate(zip(self.frames, self.options))
        )
        ticks = " · ".join(html.escape(o) for o in self.options)
        return (
            f'<div class="sae-slider" id="{sid}">'
            f'<div class="sae-slider-control" style="display:flex;gap:0.6em;align-items:center;flex-wrap:wrap">'
            f'<label for="{sid}-range">{html.escape(self.description)}</label>'
            f'<input type="range" id="{sid}-range" min="0" max="{n - 1}" step="1" value="{self.index}" '
            f'style="flex:0 1 18em" aria-label="{html.escape(self.description)}" '
            f'oninput="{html.escape(_ONINPUT)}"/>'
            f'<output for="{sid}-range" style="font-weight:bold">{html.escape(self.options[self.index])}</output>'
            f'<small style="opacity:0.7">({ticks})</small></div>'
            f"{imgs}</div>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return (f"<slider {self.description!r}: {len(self.options)} options, "
                f"showing {self.options[self.index]}>")


def slider(draw: Callable[[Any], Any], options: Sequence[Any], default: Any,
           description: str = "threshold", dpi: int = 100) -> StaticSlider:
    """Draw ``draw(option)`` (a matplotlib figure) for every option now; return a slider showing
    ``draw(default)`` first that switches between them in the browser, with or without a kernel.

    Cost: one figure per option, drawn once when the cell runs; keep ``options`` short.
    """
    options = list(options)
    if not options:
        raise ConfigError(f"slider {description!r} needs at least one option")
    if default not in options:
        raise ConfigError(f"slider {description!r}: default {default!r} is not one of the options {options}")
    frames = tuple(figure_png(draw(option), dpi=dpi) for option in options)
    return StaticSlider(frames, tuple(str(o) for o in options), options.index(default), description)
