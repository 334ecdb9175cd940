"""What the notebooks draw: figures (:mod:`.plots`) and threshold sliders (:mod:`.widgets`)."""

from .plots import (
    plot_coactivation_curves,
    plot_dead_curves,
    plot_fraction_above,
    plot_max_histogram,
    plot_neighbourhood,
    plot_sae_quality,
    plot_scatter,
    plot_value_histograms,
)
from .widgets import slider

__all__ = [
    "plot_coactivation_curves", "plot_dead_curves", "plot_fraction_above", "plot_max_histogram",
    "plot_neighbourhood", "plot_sae_quality", "plot_scatter", "plot_value_histograms", "slider",
]
