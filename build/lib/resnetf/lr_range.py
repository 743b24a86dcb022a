"""LR range test (Smith's): raise the LR exponentially over a few hundred batches, watch the
smoothed loss, stop when it diverges (5x the best loss), suggest a max_lr.

Every parameter group keeps its ratio to the first one during the sweep (BatchNorm biases at
bn_bias_lr times the rest, as in the run), and the suggestion comes in the units the
experiment's --max_lr takes: per 1024 examples of a summed loss for a --decoupled experiment
(fast94), the SGD lr otherwise. (torch-lr-finder, used before, sets one lr for every group, so
the 64x BatchNorm-bias ratio was lost during the sweep; the loop below is the few lines it took.)

    python experiments/lr_range_test.py [--data_dir=...]   or   any experiment --lr_range_test
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
from torch import nn

from .batch_augment import BatchAugment
from .config import Config
from .optim import Stepper, sgd_hyperparameters
from .plots import subplots
from .tracking import Tracker, new_run_dir
from .train import build


class _Prepared:
    """The loader's batches as the net sees them: uint8 batch -> device -> BatchAugment."""

    def __init__(self, loader, prep: BatchAugment):
        self.loader, self.prep = loader, prep

    def __iter__(self):
        for x, y in self.loader:
            yield (
                self.prep(x.to(self.prep.device, non_blocking=True)),
                y.to(self.prep.device, non_blocking=True),
            )


def suggest_max_lr(lrs, losses, skip_end: int = 5) -> float:
    """A tenth of the LR at which the smoothed loss bottoms out (fastai's "minimum / 10"): the
    minimum itself sits at the edge of divergence, and the steepest-slope point of a noisy
    curve jumps around from run to run."""
    losses = losses[: len(losses) - skip_end] if len(losses) > skip_end + 2 else losses
    if len(losses) < 3:
        raise ValueError("lr range test: too few steps before divergence to suggest a max_lr")
    return float(lrs[int(torch.tensor(losses).argmin())]) / 10


def lr_range_test(
    model: nn.Module,
    optimizer,
    criterion,
    batches,
    device=None,
    start_lr: float = 1e-4,
    end_lr: float = 10.0,
    num_iter: int = 200,
    smooth: float = 0.05,
    diverge: float = 5.0,
    loss_scale: float = 1.0,
    autocast=None,
) -> tuple[list, list, float]:
    """Sweep the first parameter group's lr from start_lr to end_lr exponentially over num_iter
    batches of `batches` (re-iterated as needed), every other group at its ratio to the first;
    stop once the smoothed loss passes `diverge` x its best. `optimizer`: a torch optimizer, or
    the run's Stepper (which steps every optimizer of the run in its precision). `loss_scale`:
    the optimizer takes a loss multiplied by it (half precision), its lrs divided by it. Model
    and optimizer come
    back as they were. Returns (lrs, smoothed losses, suggested lr), in the first group's units."""
    saved = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    groups = optimizer.param_groups
    ratios = [g["lr"] / groups[0]["lr"] for g in groups]
    lrs, losses, best, average, stream = [], [], math.inf, None, iter(batches)
    model.train()
    for i in range(num_iter):
        lr = start_lr * (end_lr / start_lr) ** (i / max(1, num_iter - 1))
        for group, ratio in zip(groups, ratios):
            group["lr"] = lr * ratio / loss_scale
        try:
            x, y = next(stream)
        except StopIteration:
            stream = iter(batches)
            x, y = next(stream)
        with autocast or torch.autocast("cpu", enabled=False):
            loss = criterion(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        if isinstance(optimizer, Stepper):  # the run's own step: precision and every optimizer
            optimizer.step(loss)
        else:
            (loss * loss_scale).backward()
            optimizer.step()
        value = loss.item()
        average = value if average is None else smooth * value + (1 - smooth) * average
        lrs.append(lr)
        losses.append(average)
        best = min(best, average)
        if not math.isfinite(average) or average > diverge * best:
            break
    model.load_state_dict(saved[0])
    optimizer.load_state_dict(saved[1])
    return lrs, losses, suggest_max_lr(lrs, losses)


def max_lr_units(cfg: Config, sgd_lr: float) -> float:
    """An SGD lr (of a mean loss) in the units of the experiment's --max_lr."""
    return sgd_lr * cfg.max_lr / sgd_hyperparameters(cfg)[0]


def run_lr_range_test(cfg: Config, num_iter: int = 200) -> dict:
    """The range test on the experiment's model and data path, built as a run builds them
    (channels_last, precision, the optimizer's groups included); returns the suggestion, in
    --max_lr's units, and where the curve went."""
    setup = build(cfg.replace(val_size=0, use_test=False))
    # the run's own optimisation step, without its schedule or weight averaging
    stepper = setup.stepper
    stepper.constant_lr()
    stepper.no_averaging()
    sgd_lrs, losses, _ = lr_range_test(
        setup.model,
        stepper,
        setup.criterion,
        _Prepared(setup.train_loader, setup.train_prep),
        num_iter=num_iter,
        loss_scale=setup.precision.loss_scale,
        autocast=setup.autocast,
    )
    lrs = [max_lr_units(cfg, lr) for lr in sgd_lrs]
    suggestion = suggest_max_lr(lrs, losses)
    units = (
        "per 1024 examples of a summed loss, as --decoupled takes it"
        if cfg.decoupled
        else "SGD's lr"
    )
    run_dir = new_run_dir(cfg.runs_dir, f"{cfg.name}_lr_range", cfg.seed)
    png = save_plot(lrs, losses, suggestion, run_dir / "lr_range.png", f"max_lr ({units})")
    (run_dir / "lr_range.json").write_text(
        json.dumps(
            {
                "max_lr": lrs,
                "sgd_lr": sgd_lrs,
                "loss": losses,
                "suggested_max_lr": suggestion,
                "units": units,
            },
            indent=2,
        )
    )
    tracker = Tracker(cfg.replace(name=f"{cfg.name}_lr_range"), run_dir, job_type="lr_range_test")
    tracker.log_image("lr_range", png, caption=f"suggested max_lr {suggestion:.3g}")
    tracker.close({"suggested_max_lr": suggestion, "steps": len(lrs)})
    print(
        f"LR range test over {len(lrs)} steps: suggested max_lr {suggestion:.4g} ({units}; "
        f"curve: {png})"
    )
    return {"suggested_max_lr": suggestion, "plot": str(png), "run_dir": str(run_dir)}


def save_plot(lrs, losses, suggestion: float, path: Path, xlabel: str = "learning rate") -> Path:
    fig, ax = subplots(1, 1, figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested max_lr {suggestion:.3g}")
    ax.set(xscale="log", xlabel=xlabel, ylabel="smoothed training loss", title="LR range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
