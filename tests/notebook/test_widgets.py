import base64
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from helpers.errors import ConfigError
from helpers.notebook.widgets import StaticSlider, slider


def _draw(t):
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, t])
    ax.set_title(f"t = {t}")
    return fig


def _frames(markup):
    return re.findall(r'<img class="sae-slider-frame" data-option="([^"]*)"[^>]*style="([^"]*)"[^>]*'
                      r'src="data:image/png;base64,([^"]+)"', markup)


def test_every_option_is_rendered_once_and_only_the_default_shows():
    calls = []

    def draw(t):
        calls.append(t)
        return _draw(t)

    plt.close("all")
    s = slider(draw, [1, 2, 5], 2, description="t ≥")
    assert calls == [1, 2, 5]
    assert plt.get_fignums() == []  # every figure closed: nothing displayed twice
    markup = s._repr_html_()
    frames = _frames(markup)
    assert [f[0] for f in frames] == ["1", "2", "5"]
    assert ["display:none" in f[1] for f in frames] == [True, False, True]
    pngs = [base64.b64decode(f[2]) for f in frames]
    assert all(p.startswith(b"\x89PNG") for p in pngs)
    assert len(set(pngs)) == 3  # different figures per option
    assert 'type="range"' in markup and 'min="0" max="2"' in markup and 'value="1"' in markup
    assert "<output" in markup and ">2</output>" in markup


def test_the_markup_is_self_contained():
    markup = slider(_draw, [0.1, 0.2], 0.1)._repr_html_()
    assert "<script" not in markup  # inline handler only: nothing to load, nothing a sanitiser strips first
    assert not re.search(r'(src|href)="(https?:)?//', markup)
    assert "oninput=" in markup


def test_the_id_is_stable_and_depends_on_the_frames():
    a = slider(_draw, [1, 2], 1)
    b = slider(_draw, [1, 2], 1)
    c = slider(_draw, [1, 3], 1)
    assert a.slider_id == b.slider_id != c.slider_id


def test_html_special_characters_are_escaped():
    s = StaticSlider((b"x", b"y"), ("a<b", 'q"'), 0, "<desc>")
    markup = s.to_html()
    assert "a&lt;b" in markup and "q&quot;" in markup and "&lt;desc&gt;" in markup
    assert "<desc>" not in markup


def test_bad_default_or_no_options_is_a_clear_error():
    with pytest.raises(ConfigError, match="not one of the options"):
        slider(_draw, [1, 2], 3)
    with pytest.raises(ConfigError, match="at least one option"):
        slider(_draw, [], 1)
