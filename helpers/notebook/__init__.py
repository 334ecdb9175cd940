"""What the notebooks draw: figures (:mod:`.plots`), threshold sliders that move without a kernel
(:mod:`.widgets`) and HTML tables and highlighted contexts (:mod:`.tables`), and our figures beside the references'
(:mod:`.reference_plots`)."""

from .plots import (
    plot_coactivation_curves,
    plot_community_shapes,
    plot_dead_curves,
    plot_fraction_above,
    plot_max_histogram,
    plot_neighbourhood,
    plot_sae_quality,
    plot_scatter,
    plot_spurious_share,
    plot_value_histograms,
)
from .reference_plots import (
    plot_dead_beside_study,
    plot_disappearing_beside_study,
    plot_matching_beside_feature_flow,
    plot_max_beside_study,
    plot_never_beside_study,
    reference_table,
)
from .tables import Html, examples_table, highlight, html_list, html_table, paired_examples_table
from .widgets import StaticSlider, slider

__all__ = [
    "plot_coactivation_curves", "plot_dead_curves", "plot_fraction_above", "plot_max_histogram",
    "plot_neighbourhood", "plot_sae_quality", "plot_scatter", "plot_value_histograms", "slider",
    "StaticSlider", "Html", "html_table", "highlight", "examples_table", "html_list", "paired_examples_table",
    "plot_community_shapes", "plot_spurious_share",
    "plot_dead_beside_study", "plot_never_beside_study", "plot_max_beside_study",
    "plot_disappearing_beside_study", "plot_matching_beside_feature_flow", "reference_table",
]
