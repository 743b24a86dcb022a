"""LR range test (Smith's): raise the LR exponentially over a few hundred batches, watch the
smoothed loss, stop when it diverges (5x the best loss), suggest a max_lr. torch-lr-finder does the sweep and
restores the model and optimizer afterwards; this module feeds it the run's own data path.

    python experiments/lr_range_test.py [--data_dir=...]   or   any experiment --lr_range_test
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch_lr_finder import LRFinder, TrainDataLoaderIter

from .batch_augment import BatchAugment
from .config import Config
from .plots import pyplot
from .tracking import Tracker, new_run_dir
from .optim import make_optimizer
from .train import build


class _Finished(TrainDataLoaderIter):
    """Hands torch-lr-finder network-ready batches: uint8 batch -> device -> BatchAugment."""

    def __init__(self, loader, finish: BatchAugment):
        super().__init__(loader)
        self.finish = finish

    def inputs_labels_from_batch(self, batch):
        x, y = batch
        return self.finish(x.to(self.finish.device, non_blocking=True)), y


def suggest_max_lr(lrs, losses, skip_end: int = 5) -> float:
    """A tenth of the LR at which the smoothed loss bottoms out (fastai's "minimum / 10"): the
    minimum itself sits at the edge of divergence, and the steepest-slope point of a noisy
    curve jumps around from run to run."""
    losses = losses[:len(losses) - skip_end] if len(losses) > skip_end + 2 else losses
    if len(losses) < 3:
        raise ValueError("lr range test: too few steps before divergence to suggest a max_lr")
    return float(lrs[int(torch.tensor(losses).argmin())]) / 10


def lr_range_test(model: nn.Module, optimizer, criterion, batches, device, start_lr: float = 1e-4,
                  end_lr: float = 10.0, num_iter: int = 200) -> tuple[list, list, float]:
    """Run the sweep on `batches` (a loader or TrainDataLoaderIter); model and optimizer come
    back as they were. Returns (lrs, smoothed losses, suggested max_lr)."""
    finder = LRFinder(model, optimizer, criterion, device=device)
    finder.range_test(batches, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter,
                      step_mode="exp", smooth_f=0.05, diverge_th=5)
    lrs, losses = finder.history["lr"], finder.history["loss"]
    finder.reset()
    return lrs, losses, suggest_max_lr(lrs, losses)


def run_lr_range_test(cfg: Config, num_iter: int = 200) -> dict:
    """The range test on the experiment's model and data path, built as a run builds them
    (channels_last and autocast included); returns the suggestion and where the curve went."""
    setup = build(cfg.replace(val_size=0, use_test=False))
    # an optimizer of the run's kind, without the run's One Cycle schedule attached to it
    optimizer = make_optimizer(setup.model, cfg)
    with setup.autocast:
        lrs, losses, suggestion = lr_range_test(
            setup.model, optimizer, setup.criterion,
            _Finished(setup.train_loader, setup.train_finish), setup.device, num_iter=num_iter)

    run_dir = new_run_dir(cfg.runs_dir, f"{cfg.name}_lr_range", cfg.seed)
    png = save_plot(lrs, losses, suggestion, run_dir / "lr_range.png")
    (run_dir / "lr_range.json").write_text(json.dumps(
        {"lr": lrs, "loss": losses, "suggested_max_lr": suggestion}, indent=2))
    tracker = Tracker(cfg.replace(name=f"{cfg.name}_lr_range"), run_dir, job_type="lr_range_test")
    tracker.log_image("lr_range", png, caption=f"suggested max_lr {suggestion:.3g}")
    tracker.finish({"suggested_max_lr": suggestion, "steps": len(lrs)})
    print(f"LR range test over {len(lrs)} steps: suggested max_lr {suggestion:.4g} "
          f"(curve: {png})")
    return {"suggested_max_lr": suggestion, "plot": str(png), "run_dir": str(run_dir)}


def save_plot(lrs, losses, suggestion: float, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested max_lr {suggestion:.3g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss",
           title="LR range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
