"""The width sweep in one figure: FVU, L0, dead features and loss recovered against the SAE width."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt

Rows = Sequence[Mapping[str, Any]]


def _width_label(width: int) -> str:
    """``512``, ``2k``, ``16k``, ``1m`` (k = 1024, m = 2^20)."""
    if width >= 1 << 20 and width % (1 << 20) == 0:
        return f"{width >> 20}m"
    return f"{width // 1024}k" if width >= 1024 and width % 1024 == 0 else str(width)


def plot_width_sweep(rows: Rows | Mapping[str, Rows], title: str = "SAE quality against width"):
    """One panel per measure against the width (log axis, one point per width): FVU, L0 (active
    features per token), dead features (% of the width) and, where every row has it, the loss
    recovered (%). ``rows``: the rows of :func:`~helpers.subject.widths.width_rows` (one series), or
    ``{label: rows}`` for several (e.g. trained here beside the official SAEs of one layer)."""
    series = dict(rows) if isinstance(rows, Mapping) else {"": rows}
    all_rows = [r for rs in series.values() for r in rs]
    panels = [
        ("fvu", "FVU (fraction of variance unexplained)", 1.0),
        ("l0", "L0 (active features per token)", 1.0),
        ("dead_fraction", "dead features (% of width)", 100.0),
    ]
    if all_rows and all("loss_recovered" in r for r in all_rows):
        panels.append(("loss_recovered", "loss recovered (%)", 1.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.6), constrained_layout=True,
                             squeeze=False)
    widths = sorted({int(r["width"]) for r in all_rows})
    for ax, (key, label, scale) in zip(axes[0], panels):
        for name, rs in series.items():
            rs = sorted(rs, key=lambda r: r["width"])
            ax.plot([r["width"] for r in rs], [r[key] * scale for r in rs], marker="o", label=name or None)
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [_width_label(w) for w in widths])
        ax.minorticks_off()
        ax.set_xlabel("SAE width (features, log scale)")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0])
        if len(series) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig
