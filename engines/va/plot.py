"""PNG plot of a VA curve with the shot cuts marked (matplotlib's Agg canvas, no pyplot state)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from core.atomic import atomic_output

from .curve import VACurve

__all__ = ["plot_curve"]


def plot_curve(curve: VACurve, path: str | os.PathLike[str], cuts_s: Sequence[float] = (),
               title: str = "") -> None:
    """Write both curves over time (cuts as thin vertical lines) to a PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for index, cut in enumerate(cuts_s):
        axes.axvline(cut, color="0.75", linewidth=0.8, zorder=0, label="cut" if index == 0 else None)
    axes.plot(curve.time_s, curve.valence, color="tab:blue", linewidth=1.5, label="valence")
    axes.plot(curve.time_s, curve.arousal, color="tab:red", linewidth=1.5, label="arousal")
    axes.axhline(0.0, color="0.4", linewidth=0.6)
    axes.set_ylim(-1.05, 1.05)
    axes.set_xlim(0.0, max(curve.duration_s, 1e-3))
    axes.set_xlabel("time (s)")
    axes.set_ylabel("[-1, 1]")
    if title:
        axes.set_title(title, fontsize=10)
    axes.legend(loc="upper right", fontsize=8, ncols=3)
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png")
