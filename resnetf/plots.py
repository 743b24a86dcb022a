"""Figures drawn off-screen: the one matplotlib set-up behind every PNG the package writes, and
the training curves of one run (its folder's curves.png) or several (resnetf.compare)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def pyplot():
    """matplotlib.pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    runs: dict[str, tuple[pd.DataFrame | None, pd.DataFrame | None]], path: Path
) -> Path:
    """runs: name -> (steps, metrics) as in steps.csv / metrics.csv. Three panels: the LR of
    every step, the training loss (per step, and its epoch mean), and the validation (dashed)
    and test (solid) accuracy of every evaluated epoch."""
    plt = pyplot()
    fig, (lr_ax, loss_ax, acc_ax) = plt.subplots(1, 3, figsize=(15, 4.5), dpi=100)
    for name, (steps, metrics) in runs.items():
        if steps is not None and len(steps):
            lr_ax.plot(steps["step"], steps["lr"], label=name)
            (line,) = loss_ax.plot(steps["step"], steps["train_loss"], alpha=0.3, linewidth=0.8)
            if metrics is not None and "train_loss" in metrics and len(metrics):
                per_epoch = len(steps) / max(int(metrics["epoch"].max()), 1)
                loss_ax.plot(
                    metrics["epoch"] * per_epoch - 1,
                    metrics["train_loss"],
                    marker=".",
                    color=line.get_color(),
                    label=name,
                )
        for split, style in (("val", "--"), ("test", "-")):
            if metrics is not None and f"{split}_acc" in metrics:
                m = metrics.dropna(subset=[f"{split}_acc"])
                acc_ax.plot(
                    m["epoch"], m[f"{split}_acc"], style, marker=".", label=f"{name} {split}"
                )
    lr_ax.set(xlabel="step", ylabel="learning rate", title="LR schedule")
    loss_ax.set(xlabel="step", ylabel="training loss", title="training loss (dots: epoch mean)")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="validation (dashed) and test accuracy")
    for ax in (lr_ax, acc_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def read_curves(run_dir: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(steps, metrics) of a run folder; None for a file the run has not written yet."""
    run_dir = Path(run_dir)
    steps, metrics = run_dir / "steps.csv", run_dir / "metrics.csv"
    return (
        pd.read_csv(steps) if steps.is_file() else None,
        pd.read_csv(metrics) if metrics.is_file() else None,
    )
