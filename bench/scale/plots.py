"""Cost-against-size plots (matplotlib, PNG), one function per shape of figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Series = Mapping[str, Sequence[tuple[float, float | None]]]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def lines(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Series,
    *,
    logx: bool = False,
    logy: bool = False,
    goal: float | None = None,
) -> str | None:
    """One line per series; ``goal`` as a dashed horizontal line. The file name, or None."""
    try:
        plt = _pyplot()
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for label, points in series.items():
        known = [(x, y) for x, y in points if y is not None]
        if known:
            xs, ys = zip(*known, strict=True)
            ax.plot(xs, ys, marker="o", label=label)
    if goal is not None:
        ax.axhline(goal, linestyle="--", color="grey", label=f"goal {goal:g}")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _save(plt, fig, ax, path)


def _save(plt: Any, fig: Any, ax: Any, path: Path) -> str:
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path.name


def bars(
    path: Path, title: str, ylabel: str, groups: Mapping[str, Mapping[str, float]]
) -> str | None:
    """Grouped bars: ``groups[group][bar] = value``."""
    try:
        plt = _pyplot()
    except ImportError:
        return None
    names = sorted({bar for bars_ in groups.values() for bar in bars_})
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        xs = [i + k * width for i in range(len(groups))]
        ys = [groups[g].get(name, 0.0) for g in groups]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(groups))], list(groups))
    ax.set(title=title, ylabel=ylabel)
    return _save(plt, fig, ax, path)
