"""The training run: config -> data -> augmentations -> model -> One Cycle SGD -> tracker.

`run(cfg)` trains one model and returns its summary. Inside an epoch nothing waits on the GPU:
losses and correct counts stay on the device and come back once per epoch.
"""
from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import augment, data, models
from .config import Config
from .tracking import Tracker, new_run_dir


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


# --- setup ---------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device: {name} asked for, but torch sees no CUDA device")
    return torch.device(name)


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.SGD:
    # lr is a placeholder: OneCycleLR sets it before the first step
    return torch.optim.SGD(model.parameters(), lr=cfg.max_lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, foreach=True)


def make_scheduler(optimizer, cfg: Config, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    # OneCycleLR divides by the length of each phase: a phase under one step would crash it
    phase_ends = ([cfg.pct_start * total - 1, 2 * cfg.pct_start * total - 2, total - 1]
                  if cfg.three_phase else [cfg.pct_start * total - 1, total - 1])
    if any(b - a <= 0 for a, b in zip([0.0] + phase_ends, phase_ends)):
        raise ValueError(f"pct_start: {cfg.pct_start} of {total} steps leaves a One Cycle phase "
                         f"with no step; train longer or change pct_start")
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.max_lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=cfg.pct_start, anneal_strategy=cfg.anneal_strategy,
        div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor,
        three_phase=cfg.three_phase, cycle_momentum=cfg.cycle_momentum)


def make_loaders(cfg: Config, cifar: data.Cifar10, pin_memory: bool):
    """train, test and (when val_size > 0) validation loaders; val is carved out of train."""
    train_idx, val_idx = data.split_val(cifar.train_labels, cfg.val_size, cfg.seed)
    if len(train_idx) < cfg.batch_size:
        raise ValueError(f"batch_size: {cfg.batch_size} is larger than the {len(train_idx)} "
                         f"training images, so an epoch would have no full batch")
    train_ds = data.CifarDataset(cifar.train_images[train_idx], cifar.train_labels[train_idx],
                                 augment.train_transform(cfg, seed=cfg.seed))
    test_tf = augment.test_transform(cfg)
    eval_bs = max(cfg.batch_size, 1024)

    def loader(ds, train):
        return data.make_loader(ds, cfg.batch_size if train else eval_bs, train, cfg.workers,
                                cfg.seed, pin_memory)

    val = None
    if len(val_idx):
        val = loader(data.CifarDataset(cifar.train_images[val_idx], cifar.train_labels[val_idx],
                                       test_tf), False)
    test = loader(data.CifarDataset(cifar.test_images, cifar.test_labels, test_tf), False)
    return loader(train_ds, True), val, test


# --- one epoch -----------------------------------------------------------------------------------

def train_epoch(model, loader, optimizer, scheduler, criterion, device, autocast, memory_format,
                progress: str | None = None):
    """Returns per-step LRs, per-step losses (host floats) and the epoch's accuracy."""
    model.train()
    lrs, losses = [], []
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for x, y in tqdm(loader, desc=progress, leave=False, disable=progress is None):
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with autocast:
            out = model(x)
            loss = criterion(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lrs.append(scheduler.get_last_lr()[0])  # the LR this step used, known on the host
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach())
        correct += (out.argmax(1) == y).sum()
        seen += len(y)
    # the one device-to-host transfer of the epoch
    losses = torch.stack(losses).float().cpu().tolist()
    return lrs, losses, correct.item() / seen


@torch.no_grad()
def evaluate(model, loader, device, autocast, memory_format, tta_flip: bool = False):
    """(mean cross-entropy, accuracy) over every image of the loader."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in loader:
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with autocast:
            out = model(x)
            if tta_flip:
                out = (out + model(x.flip(3))) / 2
        out = out.float()
        loss_sum += nn.functional.cross_entropy(out, y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
        n += len(y)
    return loss_sum.item() / n, correct.item() / n


def _first_bad_step(losses: list[float]) -> int:
    return next(i for i, v in enumerate(losses) if not math.isfinite(v))


# --- the run -------------------------------------------------------------------------------------

def run(cfg: Config) -> dict:
    cfg.validate()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    cifar = data.load_cifar10(cfg.data_dir, download=cfg.download)
    train_loader, val_loader, test_loader = make_loaders(cfg, cifar, pin_memory=cuda)

    memory_format = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
    model = models.build(cfg).to(device, memory_format=memory_format)
    n_params = models.count_parameters(model)
    optimizer = make_optimizer(model, cfg)
    steps = len(train_loader)
    scheduler = make_scheduler(optimizer, cfg, steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.amp else nullcontext()

    run_dir = new_run_dir(cfg.runs_dir, cfg.name, cfg.seed)
    tracker = Tracker(cfg, run_dir, extra_config={
        "parameters": n_params, "train_images": len(train_loader.dataset),
        "val_images": len(val_loader.dataset) if val_loader else 0,
        "test_images": len(test_loader.dataset), "device": str(device)})
    print(f"{cfg.name}: {cfg.model} ({n_params:,} parameters) on {device}, "
          f"{len(train_loader.dataset)} train / {len(test_loader.dataset)} test images, "
          f"{cfg.epochs} epochs of {steps} steps -> {run_dir}")

    train_seconds, best_acc, status = 0.0, 0.0, "finished"
    wall_start = time.perf_counter()
    try:
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            desc = f"epoch {epoch + 1}/{cfg.epochs}" if cfg.progress else None
            lrs, losses, train_acc = train_epoch(model, train_loader, optimizer, scheduler,
                                                 criterion, device, autocast, memory_format, desc)
            if cuda:
                torch.cuda.synchronize()
            epoch_seconds = time.perf_counter() - t0
            train_seconds += epoch_seconds
            tracker.log_steps(epoch * steps, lrs, losses)
            if not all(math.isfinite(v) for v in losses):
                bad = _first_bad_step(losses)
                raise TrainingDiverged(
                    f"training loss became {losses[bad]} at epoch {epoch + 1}, step {bad + 1} "
                    f"of {steps} (lr {lrs[bad]:.4g}); lower max_lr or check the data")
            metrics = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses),
                       "train_acc": train_acc}
            if val_loader is not None:
                metrics["val_loss"], metrics["val_acc"] = evaluate(
                    model, val_loader, device, autocast, memory_format, cfg.tta_flip)
            metrics["test_loss"], metrics["test_acc"] = evaluate(
                model, test_loader, device, autocast, memory_format, cfg.tta_flip)
            metrics["epoch_seconds"] = epoch_seconds
            best_acc = max(best_acc, metrics["test_acc"])
            tracker.log_epoch(metrics)
            tqdm.write(_epoch_line(metrics, lrs[-1]))
    except BaseException as e:  # divergence, Ctrl-C, crashes: keep what was logged, then re-raise
        status = "diverged" if isinstance(e, TrainingDiverged) else "failed"
        tracker.finish(_summary(tracker, n_params, train_seconds, best_acc, wall_start, status),
                       exit_code=1)
        raise
    summary = _summary(tracker, n_params, train_seconds, best_acc, wall_start, status)
    tracker.finish(summary, model if cfg.save_model else None)
    print(pd.DataFrame(tracker.epochs).to_string(index=False, float_format="%.4f"))
    print(f"final test accuracy {summary['final_test_acc']:.2%} (best {best_acc:.2%}), "
          f"{train_seconds:.1f} s training; run folder {run_dir}")
    return summary


def _summary(tracker, n_params, train_seconds, best_acc, wall_start, status) -> dict:
    last = tracker.epochs[-1] if tracker.epochs else {}
    summary = {"status": status, "epochs_done": len(tracker.epochs),
               "final_test_acc": last.get("test_acc"), "best_test_acc": best_acc,
               "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - wall_start,
               "parameters": n_params, "run_dir": str(tracker.run_dir)}
    if "val_acc" in last:
        summary["final_val_acc"] = last["val_acc"]
    return summary


def _epoch_line(m: dict, lr: float) -> str:
    val = f"  val {m['val_acc']:.2%}" if "val_acc" in m else ""
    return (f"epoch {m['epoch']:>3}  lr {lr:.4f}  train loss {m['train_loss']:.3f} "
            f"acc {m['train_acc']:.2%}{val}  test loss {m['test_loss']:.3f} "
            f"acc {m['test_acc']:.2%}  {m['epoch_seconds']:.1f}s")
