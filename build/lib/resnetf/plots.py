"""Figures drawn off-screen: the one matplotlib set-up behind every PNG the package writes, and
the training curves of one run (its folder's curves.png) or several (resnetf.compare).

Curves are drawn against epochs (steps / steps per epoch), so runs of different batch sizes line
up; accuracies are percentages, as the console prints them; the loss axis is logarithmic, so
one run's spike does not flatten the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ACCURACY_STYLES = (("train", ":"), ("val", "--"), ("test", "-"))
STYLE_NAMES = {":": "dotted", "--": "dashed", "-": "solid"}
_PAIRED = {"paired_ci_low", "paired_ci_high", "paired_p_value"}


def subplots(*grid, figsize=None, dpi=100, **kwargs):
    """(figure, axes) as pyplot.subplots gives them, on a bare matplotlib Figure: drawn to files
    without pyplot, so no display is needed and no global backend is switched (a notebook's inline
    figures keep working after a run). `grid` empty: the figure alone."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return (fig, fig.subplots(*grid, **kwargs)) if grid or kwargs else (fig, None)


def palette(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


@dataclass
class Curves:
    """One run's series: steps.csv and metrics.csv as read, and its steps per epoch."""

    label: str
    steps: pd.DataFrame | None
    metrics: pd.DataFrame | None
    steps_per_epoch: float | None = None

    def epochs_of_steps(self) -> pd.Series:
        per_epoch = self.steps_per_epoch or len(self.steps) / max(self._epochs_done(), 1)
        return (self.steps["step"] + 1) / per_epoch

    def _epochs_done(self) -> int:
        return int(self.metrics["epoch"].max()) if self.metrics is not None else 1


def draw(axes, run: Curves, color, faint: bool = False) -> None:
    """One run on the three panels (LR, training loss, accuracy), in one colour."""
    lr_ax, loss_ax, acc_ax = axes
    width, alpha = (0.6, 0.35) if faint else (1.4, 1.0)
    if run.steps is not None and len(run.steps):
        x = run.epochs_of_steps()
        lr_ax.plot(
            x,
            run.steps["lr"],
            color=color,
            linewidth=width,
            alpha=alpha,
            label=run.label,
            gid=run.label,
        )
        loss_ax.plot(
            x,
            run.steps["train_loss"],
            color=color,
            linewidth=0.5,
            alpha=0.25 * alpha,
            gid=run.label,
        )
    m = run.metrics
    if m is None or not len(m):
        return
    if "train_loss" in m:
        loss_ax.plot(
            m["epoch"],
            m["train_loss"],
            "o-",
            color=color,
            markersize=3,
            linewidth=width,
            alpha=alpha,
            gid=run.label,
        )
    for split, style in ACCURACY_STYLES:
        if f"{split}_acc" in m:
            points = m.dropna(subset=[f"{split}_acc"])
            # markers: a run evaluated once is one visible point, not an invisible line
            acc_ax.plot(
                points["epoch"],
                100 * points[f"{split}_acc"],
                style,
                marker="o",
                markersize=4 if len(points) > 1 else 7,
                color=color,
                linewidth=width,
                alpha=alpha,
                gid=run.label,
            )


def label_axes(axes, splits: set[str]) -> None:
    from matplotlib.ticker import MaxNLocator

    lr_ax, loss_ax, acc_ax = axes
    lr_ax.set(xlabel="epoch", ylabel="learning rate", title="learning rate of every step")
    loss_ax.set(
        xlabel="epoch",
        ylabel="training loss (log scale)",
        yscale="log",
        title="training loss: every step (faint), epoch means (dots)",
    )
    shown = [f"{s} ({STYLE_NAMES[st]})" for s, st in ACCURACY_STYLES if s in splits]
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy: " + ", ".join(shown))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)


def splits_in(runs) -> set[str]:
    return {
        s
        for r in runs
        if r.metrics is not None
        for s, _ in ACCURACY_STYLES
        if f"{s}_acc" in r.metrics and r.metrics[f"{s}_acc"].notna().any()
    }


def plot_curves(run: Curves, path: Path, title: str = "") -> Path:
    """curves.png of one run: LR, training loss and train/val/test accuracy against epochs."""
    fig, axes = subplots(1, 3, figsize=(15, 4.5))
    draw(axes, run, "tab:blue")
    label_axes(axes, splits_in([run]))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return path


def read_curves(run_dir: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(steps, metrics) of a run folder; None for a file the run has not written yet."""
    run_dir = Path(run_dir)
    steps, metrics = run_dir / "steps.csv", run_dir / "metrics.csv"
    return (
        pd.read_csv(steps) if steps.is_file() else None,
        pd.read_csv(metrics) if metrics.is_file() else None,
    )


def steps_per_epoch(config: dict) -> float | None:
    """A run's optimizer steps per epoch, from its config.json (the last partial batch dropped)."""
    images, batch = config.get("train_images"), config.get("batch_size")
    return images // batch if images and batch and images >= batch else None


def draw_differences(ax, frame: pd.DataFrame, metric: str, baseline: str) -> None:
    """A forest plot: each row's difference to the baseline with its 95% interval, in points,
    zero marked: the paired interval (same seeds on both sides) in blue with Welch's in grey
    beneath it, or Welch's alone; rows without an interval (fewer than two seeds) as a bare
    point."""
    frame = frame.reindex(columns=[*frame.columns, *_PAIRED.difference(frame.columns)])
    y = np.arange(len(frame))[::-1].astype(float)
    diff = 100 * frame["diff"]
    welch_ok, paired_ok = frame["ci_low"].notna(), frame["paired_ci_low"].notna()
    ax.axvline(0, color="0.3", linewidth=1)
    for ok, low, high, shift, style in (
        (welch_ok & paired_ok, "ci_low", "ci_high", -0.18, dict(color="0.6", label="Welch")),
        (paired_ok, "paired_ci_low", "paired_ci_high", 0.0, dict(color="tab:blue", label="paired")),
        (welch_ok & ~paired_ok, "ci_low", "ci_high", 0.0, dict(color="tab:blue", label="Welch")),
    ):
        if ok.any():
            ax.errorbar(
                diff[ok],
                y[ok.to_numpy()] + shift,
                xerr=[(diff - 100 * frame[low])[ok], (100 * frame[high] - diff)[ok]],
                fmt="o",
                capsize=4,
                **style,
            )
    ax.plot(diff[~welch_ok], y[~welch_ok.to_numpy()], "o", color="0.6")
    p = frame["paired_p_value"].where(paired_ok, frame["p_value"])
    ax.set_yticks(
        y,
        [
            f"{lab} (n={n}" + (f", p={q:.2g})" if pd.notna(q) else ", no interval)")
            for lab, n, q in zip(frame["label"], frame["n"], p)
        ],
        fontsize=8,
    )
    if welch_ok.any():
        ax.legend(fontsize=7, loc="best")
    ax.set(
        xlabel=f"difference in {metric.replace('_', ' ')} to {baseline} (points), 95% interval",
        title="differences to the baseline (paired where the seeds are shared, else Welch); "
        "zero: no difference",
    )
