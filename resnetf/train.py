"""The training run: config -> data -> augmentations -> model -> One Cycle SGD -> tracker.

`run(cfg)` trains one model and returns its summary. Inside an epoch nothing waits on the GPU:
losses and correct counts stay on the device and come back once per epoch.
"""
from __future__ import annotations

import copy
import math
import os
import random
import signal
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
# not tqdm.auto: its asyncio class calls iter() on the loader once more, which with persistent
# workers prefetches batches it throws away and draws a second shuffle from the sampler
from tqdm import tqdm

from . import analysis, augment, checkpoint, data, models
from .batch_augment import BatchAugment
from .config import Config
from .tracking import Tracker, check_runs_dir, new_run_dir


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class RunStopped(Exception):
    """Ends a run early: a pruned Optuna trial (raised by an `on_epoch` hook) or a Ctrl-C. The
    run's files are completed with `status` before it propagates; `failed` marks the W&B run
    as unsuccessful."""

    def __init__(self, status: str, message: str = "", failed: bool = False):
        super().__init__(message or status)
        self.status, self.failed = status, failed


class StopOnSignal:
    """While active, a first SIGINT/SIGTERM asks the run to stop after the current step; a
    second one raises KeyboardInterrupt at once. Only the main thread can own signals, so
    elsewhere (a notebook thread, say) it does nothing."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now")
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step "
              f"(again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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


def make_loaders(cfg: Config, cifar: data.Cifar10, device: torch.device):
    """Train, val (None when val_size is 0) and test loaders, all yielding uint8 batches.
    Evaluation needs no augmentation, so its images go to the device once, whatever the backend."""
    train_idx, val_idx = data.split_val(cifar.train_labels, cfg.val_size, cfg.seed)
    if len(train_idx) < cfg.batch_size:
        raise ValueError(f"batch_size: {cfg.batch_size} is larger than the {len(train_idx)} "
                         f"training images, so an epoch would have no full batch")
    images, labels = cifar.train_images[train_idx], cifar.train_labels[train_idx]
    if cfg.backend == "gpu":
        train = data.DeviceLoader(images, labels, cfg.batch_size, True, device, cfg.seed)
    else:
        dataset = data.CifarDataset(images, labels, augment.train_transform(cfg, seed=cfg.seed),
                                    seed=cfg.seed)
        train = data.make_loader(dataset, cfg.batch_size, True, cfg.workers, cfg.seed,
                                 pin_memory=device.type == "cuda")
    eval_bs = max(cfg.batch_size, 1024)
    val = None
    if len(val_idx):
        val = data.DeviceLoader(cifar.train_images[val_idx], cifar.train_labels[val_idx],
                                eval_bs, False, device)
    test = data.DeviceLoader(cifar.test_images, cifar.test_labels, eval_bs, False, device)
    return train, val, test


def compile_model(model, train_shape, eval_batch_sizes, criterion, autocast):
    """torch.compile the model and compile it for every batch shape the run will see, on zero
    batches, then restore the weights and BatchNorm statistics: the compile time is spent here
    and reported apart, not inside the first epoch."""
    compiled = torch.compile(model)
    state = copy.deepcopy(model.state_dict())
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    with autocast:
        out = compiled(torch.zeros(train_shape, device=device))
        loss = criterion(out, torch.zeros(train_shape[0], dtype=torch.long, device=device))
    loss.backward()
    compiled.eval()
    with torch.no_grad(), autocast:
        for b in sorted(set(eval_batch_sizes)):
            compiled(torch.zeros((b, *train_shape[1:]), device=device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True)
    return compiled, time.perf_counter() - t0


# --- one epoch -----------------------------------------------------------------------------------

def train_epoch(model, loader, finish, optimizer, scheduler, criterion, autocast, ema=None,
                progress: str | None = None, stop: StopOnSignal | None = None):
    """Returns per-step LRs, per-step losses (host floats) and the epoch's accuracy."""
    model.train()
    device = finish.device
    lrs, losses = [], []
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for x, y in tqdm(loader, desc=progress, leave=False, disable=progress is None):
        x = finish(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        with autocast:
            out = model(x)
            loss = criterion(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lrs.append(scheduler.get_last_lr()[0])  # the LR this step used, known on the host
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        losses.append(loss.detach())
        correct += (out.argmax(1) == y).sum()
        seen += len(y)
        if stop is not None and stop.requested:
            raise RunStopped("interrupted", "interrupted by a signal", failed=True)
    # the one device-to-host transfer of the epoch
    losses = torch.stack(losses).float().cpu().tolist()
    return lrs, losses, correct.item() / seen


@torch.no_grad()
def evaluate(model, loader, finish, autocast, tta_flip: bool = False):
    """(mean cross-entropy, accuracy) over every image of the loader."""
    model.eval()
    device = finish.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in loader:
        x = finish(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        with autocast:
            out = models.logits(model, x, tta_flip).float()
        loss_sum += nn.functional.cross_entropy(out, y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
        n += len(y)
    return loss_sum.item() / n, correct.item() / n


def _first_bad_step(losses: list[float]) -> int:
    return next(i for i, v in enumerate(losses) if not math.isfinite(v))


# --- the run -------------------------------------------------------------------------------------

def run(cfg: Config, on_epoch=None, extra_config: dict | None = None) -> dict:
    """Train one model as `cfg` says and return its summary. `on_epoch(metrics)` is called after
    each epoch is logged and may raise RunStopped; `extra_config` is recorded with the config."""
    cfg.validate()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    cuda = device.type == "cuda"
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to comply
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = cuda and not cfg.deterministic
    resumed = checkpoint.load(cfg.resume) if cfg.resume else None
    if not resumed:
        check_runs_dir(cfg.runs_dir)
    cifar = data.load_cifar10(cfg.data_dir, download=cfg.download)
    train_loader, val_loader, test_loader = make_loaders(cfg, cifar, device)
    eval_loaders = [l for l in (val_loader, test_loader) if l is not None]

    memory_format = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
    train_finish = BatchAugment(cfg, device, True, cfg.backend == "gpu", memory_format)
    eval_finish = BatchAugment(cfg, device, False, False, memory_format)
    model = models.build(cfg).to(device, memory_format=memory_format)
    n_params = models.count_parameters(model)
    model_summary = models.summary(model, device)
    optimizer = make_optimizer(model, cfg)
    steps = len(train_loader)
    scheduler = make_scheduler(optimizer, cfg, steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.amp else nullcontext()
    ema = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        if cfg.ema > 0 else None)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        if ema is not None:
            ema.load_state_dict(resumed["ema"])
    net, compile_seconds = model, 0.0
    if cfg.compile:
        sizes = [min(l.batch_size, len(l.labels) - i) for l in eval_loaders
                 for i in range(0, len(l.labels), l.batch_size)]
        net, compile_seconds = compile_model(model, (cfg.batch_size, 3, 32, 32), sizes,
                                             criterion, autocast)
    final_net = ema.module if ema is not None else model  # what is analysed and saved
    eval_net = ema.module if ema is not None else net  # the same, compiled where it can be

    run_dir = Path(cfg.resume) if resumed else new_run_dir(cfg.runs_dir, cfg.name, cfg.seed)
    n_val = len(val_loader.labels) if val_loader else 0
    counts = {"train_images": len(cifar.train_labels) - n_val, "val_images": n_val,
              "test_images": len(test_loader.labels)}
    info = {"parameters": n_params, **counts}
    tracker = Tracker(cfg, run_dir, extra_config={"device": str(device), **info,
                                                  **(extra_config or {})}, resumed=resumed)
    (run_dir / "model_summary.txt").write_text(model_summary + "\n")
    print(model_summary)
    print(f"{cfg.name}: {cfg.model} ({n_params:,} parameters) on {device}, "
          f"{counts['train_images']} train / {counts['test_images']} test images, "
          f"{cfg.backend} backend, {cfg.epochs} epochs of {steps} steps -> {run_dir}")

    train_seconds, best_acc, status = 0.0, 0.0, "finished"
    if resumed:
        train_seconds, best_acc = resumed["train_seconds"], resumed["best_acc"]
        print(f"resuming {run_dir} after epoch {resumed['epoch']}")
    wall_start = time.perf_counter()
    with StopOnSignal() as stop:
        try:
            for epoch in range(resumed["epoch"] if resumed else 0, cfg.epochs):
                # all randomness of an epoch derives from (seed, epoch): resuming repeats it exactly
                torch.manual_seed(data.epoch_seed(cfg.seed, epoch))
                data.set_epoch(train_loader, cfg.seed, epoch)
                train_finish.set_epoch(epoch)
                t0 = time.perf_counter()
                desc = f"epoch {epoch + 1}/{cfg.epochs}" if cfg.progress else None
                lrs, losses, train_acc = train_epoch(net, train_loader, train_finish, optimizer,
                                                     scheduler, criterion, autocast, ema, desc, stop)
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
                last = epoch + 1 == cfg.epochs
                if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
                    for split, loader in (("val", val_loader), ("test", test_loader)):
                        if loader is not None:
                            metrics[f"{split}_loss"], metrics[f"{split}_acc"] = evaluate(
                                eval_net, loader, eval_finish, autocast, cfg.tta_flip)
                    best_acc = max(best_acc, metrics["test_acc"])
                metrics["epoch_seconds"] = epoch_seconds
                tracker.log_epoch(metrics)
                tqdm.write(_epoch_line(metrics, lrs[-1]))
                if cfg.checkpoint:
                    checkpoint.save(run_dir, {
                        "epoch": epoch + 1, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "ema": ema.state_dict() if ema is not None else None,
                        "epochs": tracker.epochs, "steps_done": (epoch + 1) * steps,
                        "train_seconds": train_seconds,
                        "best_acc": best_acc, "wandb_id": tracker.wandb_id})
                if on_epoch is not None:
                    on_epoch(metrics)
        except BaseException as e:  # divergence, Ctrl-C, crashes: keep what was logged, then re-raise
            status = (e.status if isinstance(e, RunStopped)
                      else "diverged" if isinstance(e, TrainingDiverged) else "failed")
            ok = isinstance(e, RunStopped) and not e.failed
            tracker.finish(_summary(tracker, info, train_seconds, compile_seconds, best_acc,
                                    wall_start, status), exit_code=0 if ok else 1)
            if cfg.checkpoint and (run_dir / checkpoint.NAME).exists() and not ok:
                print(f"the last completed epoch is checkpointed; continue with: "
                      f"python {sys.argv[0]} --resume {run_dir}", file=sys.stderr)
            raise
    summary = _summary(tracker, info, train_seconds, compile_seconds, best_acc, wall_start, status)
    if cfg.analysis:  # on the eager net: Grad-CAM needs hooks and gradients
        analysis.analyze(final_net, test_loader, eval_finish, autocast, cfg, cifar.classes,
                         run_dir, tracker)
    tracker.finish(summary, final_net if cfg.save_model else None)
    print(pd.DataFrame(tracker.epochs).to_string(index=False, float_format="%.4f"))
    print(f"final test accuracy {summary['final_test_acc']:.2%} (best {best_acc:.2%}), "
          f"{train_seconds:.2f} s training"
          + (f" + {compile_seconds:.1f} s compiling" if cfg.compile else "")
          + f"; run folder {run_dir}")
    return summary


def _summary(tracker, info, train_seconds, compile_seconds, best_acc, wall_start,
             status) -> dict:
    last = tracker.epochs[-1] if tracker.epochs else {}
    summary = {"status": status, "epochs_done": len(tracker.epochs),
               "final_test_acc": last.get("test_acc"), "best_test_acc": best_acc,
               "train_seconds": train_seconds, "compile_seconds": compile_seconds,
               "wall_seconds": time.perf_counter() - wall_start,
               **info, "run_dir": str(tracker.run_dir)}
    if "val_acc" in last:
        summary["final_val_acc"] = last["val_acc"]
    return summary


def _epoch_line(m: dict, lr: float) -> str:
    val = f"  val {m['val_acc']:.2%}" if "val_acc" in m else ""
    test = f"  test loss {m['test_loss']:.3f} acc {m['test_acc']:.2%}" if "test_acc" in m else ""
    return (f"epoch {m['epoch']:>3}  lr {lr:.4f}  train loss {m['train_loss']:.3f} "
            f"acc {m['train_acc']:.2%}{val}{test}  {m['epoch_seconds']:.2f}s")
