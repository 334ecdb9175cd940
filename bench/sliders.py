"""Benchmark: what pre-rendering every slider option adds to a notebook run.

    python bench/sliders.py --experiment smoke

A slider that moves without a kernel (``helpers.notebook.slider``) draws the
figure of every option when the cell runs, where an ipywidgets slider drew only
the default. For the sliders of notebooks 02, 03, 04 and 06 (same draw
functions and options as the notebooks), this prints, measured in one run: the
seconds to draw the default only, to draw every option, the ratio, and the
bytes of inline PNG the page carries. Needs the experiment's artefacts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.evolution.graph import build_graph, degree_frequency  # noqa: E402
from helpers.experiment import get_experiment  # noqa: E402
from helpers.notebook.plots import (  # noqa: E402
    plot_coactivation_curves,
    plot_dead_curves,
    plot_fraction_above,
    plot_scatter,
)
from helpers.notebook.widgets import figure_png, slider  # noqa: E402
from helpers.stats import load_artefact  # noqa: E402


def sliders(exp):
    """(name, draw, options, default) of the notebooks' sliders."""
    d = load_artefact(exp, "dead_features")
    pc = load_artefact(exp, "pair_coactivation")
    corr = load_artefact(exp, "correlation")
    g = load_artefact(exp, "coactivation_graph")
    F = d["fired"].shape[1]
    thresholds = [int(t) for t in d["thresholds"]]
    pair_thresholds = [int(t) for t in pc["thresholds"]]
    pairs = [str(p) for p in pc["pairs"]]
    R = [corr[f"r_{i}"] for i in range(len(pairs))]
    site_i = len(exp.sites) // 2

    def graph_draw(min_count):
        degree, freq, r = degree_frequency(build_graph(g, site_i, min_count=min_count))
        return plot_scatter(freq, np.maximum(degree, 0.5), "frequency", "degree", f"r = {r:.2f}",
                            logx=True, logy=True)

    return [
        ("02 dead features", lambda t: plot_dead_curves(d["dead"], d["tokens"], thresholds, exp.sites,
                                                        thresholds.index(t), F), thresholds, thresholds[0]),
        ("03 co-activation", lambda t: plot_coactivation_curves(
            pc["never_all"], pc["tokens"], pair_thresholds, pairs, pair_thresholds.index(t),
            total=np.full(len(pairs), F * F)), pair_thresholds, pair_thresholds[0]),
        ("04 correlation", lambda t: plot_fraction_above(R, pairs, t), [0.1, 0.2, 0.3, 0.5, 0.7, 0.9], 0.2),
        ("06 graph", graph_draw, [1, 2, 5, 10, 50], 1),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="smoke")
    args = parser.parse_args()
    exp = get_experiment(args.experiment)
    total_one = total_all = 0.0
    total_bytes = 0
    print(f"{'slider':<18} {'options':>7} {'default only (s)':>17} {'every option (s)':>17} {'ratio':>6} {'PNG KiB':>8}")
    for name, draw, options, default in sliders(exp):
        t0 = time.perf_counter()
        figure_png(draw(default))
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = slider(draw, options, default)
        every = time.perf_counter() - t0
        size = sum(len(f) for f in s.frames)
        total_one, total_all, total_bytes = total_one + one, total_all + every, total_bytes + size
        print(f"{name:<18} {len(options):>7} {one:>17.2f} {every:>17.2f} {every / one:>6.1f} {size / 1024:>8.0f}")
    print(f"{'all':<18} {'':>7} {total_one:>17.2f} {total_all:>17.2f} {total_all / total_one:>6.1f} "
          f"{total_bytes / 1024:>8.0f}")
    print(f"pre-rendering adds {total_all - total_one:.1f} s to the book build on {exp.name!r} "
          f"and {total_bytes / 2**20:.2f} MiB of inline PNG")


if __name__ == "__main__":
    main()
