"""The report's curves: matplotlib (Agg, through audio/plots.py), one PNG per figure."""

import re
from pathlib import Path

from ..audio.plots import figure_to_png, plt
from ..files import atomic_write_bytes


def safe_name(text: str) -> str:
    """A file name for a metric: letters, digits, '-', '_' and '.' only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "metric"


#: Reference rows in the same colour on every judge's plot (the model is "C0").
ROW_COLORS = {"model": "C0", "real": "C1", "world": "C2", "griffin_lim": "C3", "vocoder": "C4"}


def judge_line_styles(labels) -> dict[str, dict]:
    """matplotlib styles of a judge's lines: the model solid, reference lines dashed, a colour
    per row whatever the plot; a speaker set's lines ("adaptation: model") with square markers."""
    styles, colors, others = {}, dict(ROW_COLORS), iter(f"C{i}" for i in range(len(ROW_COLORS), 10))
    for label in labels:
        set_name, _, row = label.rpartition(": ")
        if row not in colors:
            colors[row] = next(others, "0.3")
        style = {"linewidth": 2} if row == "model" else {"linestyle": "--", "linewidth": 1.2}
        styles[label] = {**style, "color": colors[row], "marker": "s" if set_name else "o",
                         "markersize": 4 if row == "model" else 3}
    return styles


def save_curves(path: Path, title: str, ylabel: str, series: dict[str, list[tuple[int, float]]],
                best_epoch: int | None = None, xlabel: str = "epoch", styles: dict | None = None) -> Path:
    """One line per series over epochs (markers, since a run may have few epochs), styled by
    `styles` (label -> matplotlib keywords); the best epoch as a grey dashed vertical line."""
    figure, axis = plt.subplots(figsize=(5.2, 3.0), constrained_layout=True)
    epochs = set()
    for label, points in series.items():
        if points:
            xs, ys = zip(*sorted(points))
            axis.plot(xs, ys, label=label or ylabel, **{"marker": "o", "markersize": 4, **(styles or {}).get(label, {})})
            epochs.update(xs)
    if 0 < len(epochs) <= 12:   # few epochs: a tick on each, and room around a single one
        axis.set_xticks(sorted(epochs))
        axis.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    else:
        axis.xaxis.get_major_locator().set_params(integer=True)
    if best_epoch is not None:
        axis.axvline(best_epoch, color="0.5", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    if len(series) > 1 or best_epoch is not None:
        axis.legend(fontsize="small")
    atomic_write_bytes(path, figure_to_png(figure))
    return path
