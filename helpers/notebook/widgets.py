"""Threshold sliders for the notebooks.

:func:`slider` draws the figure for the default value as an ordinary output
(so the rendered book shows it), then returns a slider that redraws it live.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence


def slider(draw: Callable[[Any], Any], options: Sequence[Any], default: Any, description: str = "threshold"):
    """Show ``draw(default)`` now; return an ipywidgets slider over ``options`` that redraws."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    fig = draw(default)
    display(fig)
    plt.close(fig)
    out = widgets.Output()
    control = widgets.SelectionSlider(options=list(options), value=default, description=description,
                                      continuous_update=False)

    def redraw(change):
        with out:
            out.clear_output(wait=True)
            f = draw(change["new"])
            display(f)
            plt.close(f)

    control.observe(redraw, names="value")
    return widgets.VBox([control, out])
