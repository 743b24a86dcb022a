"""The training run, in four stages that `run(cfg)` chains:

    build(cfg)    everything a run trains with: device, loaders, batch augmentation, net, loss
                  and the Stepper (optimizers, schedules, precision, weight averaging; the LR
                  range test and the benchmark build the same way)
    start(...)    the run folder, the Tracker (W&B + files), the banner
    fit(...)      the epoch loop: train, check for divergence, evaluate, log, checkpoint
    finish(...)   the summary, the analysis, the final files

Inside an epoch nothing waits on the GPU: losses and correct counts stay on the device and come
back once per epoch.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

# not tqdm.auto: its asyncio class calls iter() on the loader once more, which with persistent
# workers prefetches batches it throws away and draws a second shuffle from the sampler
from tqdm import tqdm

from . import analysis, augment, checkpoint, data, models
from .batch_augment import BatchAugment
from .checkpoint import Progress
from .config import Config, ConfigError, under_sweep_agent
from .optim import Precision, Stepper, n_epochs, precision, sync, total_steps
from .tracking import Tracker, check_runs_dir, git_diff, new_run_dir, provenance


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite. `summary`: the run's summary as it ended (status
    diverged), set once the run is closed; among many runs a divergence is a result."""

    summary: dict | None = None


class StudyFailed(RuntimeError):
    """Every trial of a study failed: the command exits non-zero (each reason is on its trial)."""


class RunStopped(Exception):
    """Ends a run early: a pruned Optuna trial (raised by an `on_epoch` hook), a Ctrl-C, a W&B
    sweep's early termination. The run's files are completed with `status` before it
    propagates; `failed` marks the W&B run (and the command's exit code) as unsuccessful."""

    def __init__(self, status: str, message: str = "", failed: bool = False):
        super().__init__(message or status)
        self.status, self.failed = status, failed


class StopOnSignal:
    """While active, a first SIGINT/SIGTERM asks the run to stop after the current step; a
    second one raises KeyboardInterrupt at once. Only the main thread can own signals, so
    elsewhere (a notebook thread, say) it does nothing."""

    def __init__(self):
        self.signal: signal.Signals | None = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now")
        self.signal = signal.Signals(signum)
        print(
            f"\n{self.signal.name}: stopping after this step (again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def reason(self) -> RunStopped:
        # the agent stops a sweep run with SIGTERM when early termination drops it: a verdict
        # on the run, not a failure (the agent shuts itself down after a few failed runs)
        if self.signal == signal.SIGTERM and under_sweep_agent():
            return RunStopped("stopped_by_sweep", "stopped by the W&B sweep's early termination")
        return RunStopped("interrupted", f"interrupted by {self.signal.name}", failed=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class Context:
    """What a run is part of, and how its caller follows it: `on_build(setup)` once everything
    it trains with is built, `on_start(tracker)` once the run folder and W&B run exist,
    `on_epoch(metrics)` after each logged epoch (it may raise RunStopped: a pruned trial)."""

    job_type: str = "train"
    tags: tuple[str, ...] = ()
    folder_prefix: str | None = None  # None: the experiment's name
    extra_config: dict = field(default_factory=dict)
    on_build: Callable[[Setup], None] | None = None  # may adjust the setup (debug modes)
    on_start: Callable[[Tracker], None] | None = None
    on_epoch: Callable[[dict], None] | None = None
    model_aliases: tuple[str, ...] = ("latest",)  # of the run's W&B model artifact
    figures: bool = True  # curves.png (a tuning trial's are off unless --trial_analysis)


# ===== build: everything a run trains with =======================================================


@dataclass
class Setup:
    cfg: Config
    device: torch.device
    cifar: data.Cifar10
    train_loader: Any
    val_loader: Any  # None without a validation split
    test_loader: Any  # None when cfg.use_test is off
    train_prep: BatchAugment
    eval_prep: BatchAugment
    model: nn.Module
    stepper: Stepper  # the optimisation step: optimizers, schedules, precision, averaging
    criterion: nn.Module
    net: nn.Module  # what trains: the model, compiled with cfg.compile
    compile_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    final_predictions: dict = field(default_factory=dict)  # split -> last evaluation's probs
    on_step: Callable[[], None] | None = None  # after every optimizer step (a profiler's)

    @property
    def steps(self) -> int:
        """Steps of a whole epoch."""
        return len(self.train_loader)

    @property
    def total_steps(self) -> int:
        return total_steps(self.cfg, self.steps)

    @property
    def precision(self) -> Precision:
        return self.stepper.precision

    @property
    def autocast(self):
        return self.precision.autocast

    @property
    def scaler(self) -> torch.amp.GradScaler | None:  # fp16 autocast only
        return self.precision.scaler

    @property
    def final_net(self) -> nn.Module:
        """What is evaluated, analysed and saved: the EMA average when there is one."""
        ema = self.stepper.ema
        return ema.module if ema is not None else self.model

    @property
    def eval_net(self) -> nn.Module:
        ema = self.stepper.ema
        return ema.module if ema is not None else self.net

    def eval_loaders(self) -> dict:
        return {
            split: loader
            for split, loader in (("val", self.val_loader), ("test", self.test_loader))
            if loader
        }

    def info(self) -> dict:
        n_val = len(self.val_loader.labels) if self.val_loader else 0
        return {
            "parameters": models.count_parameters(self.model),
            "train_images": len(self.cifar.train_labels) - n_val,
            "val_images": n_val,
            "test_images": len(self.test_loader.labels) if self.test_loader else 0,
        }


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {name} asked for, but torch sees no CUDA device (use --device=cpu or auto)"
        )
    return torch.device(name)


def configure_torch(cfg: Config, device: torch.device) -> None:
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to comply
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not cfg.deterministic


def make_loaders(cfg: Config, cifar: data.Cifar10, device: torch.device):
    """Train, val (None when val_size is 0) and test (None when use_test is off) loaders, all
    yielding uint8 batches. Evaluation needs no augmentation, so its images go to the device
    once, whatever the backend."""
    train_idx, val_idx = data.split_val(cifar.train_labels, cfg.val_size, cfg.seed)
    if len(train_idx) < cfg.batch_size:
        raise ValueError(
            f"batch_size: {cfg.batch_size} is larger than the {len(train_idx)} "
            f"training images, so an epoch would have no full batch"
        )

    def on_device(split, idx=None):  # gathered from the one device copy of the split
        images, labels = (cifar.to_device(f"{split}_{a}", device) for a in ("images", "labels"))
        if idx is None:
            return images, labels
        idx = torch.from_numpy(idx).to(device)
        return images[idx], labels[idx]

    if cfg.backend == "gpu":
        train = data.DeviceLoader(
            *on_device("train", train_idx),
            cfg.batch_size,
            True,
            device,
            cfg.seed,
            alternating_flip=cfg.alternating_flip,
        )
    else:
        dataset = data.CifarDataset(
            cifar.train_images[train_idx],
            cifar.train_labels[train_idx],
            augment.train_transform(cfg, seed=cfg.seed),
            seed=cfg.seed,
        )
        train = data.make_loader(
            dataset, cfg.batch_size, True, cfg.workers, cfg.seed, pin_memory=device.type == "cuda"
        )
    eval_bs = max(cfg.batch_size, 1024)
    val = (
        data.DeviceLoader(*on_device("train", val_idx), eval_bs, False, device)
        if len(val_idx)
        else None
    )
    test = data.DeviceLoader(*on_device("test"), eval_bs, False, device) if cfg.use_test else None
    return train, val, test


def build(cfg: Config, cifar: data.Cifar10 | None = None) -> Setup:
    """Device, data (loaded unless `cifar` is given: a tuning worker loads it once), augmentation,
    net, optimizer, schedule, loss, precision, EMA and lookahead, as `cfg` says."""
    device = pick_device(cfg.device)
    configure_torch(cfg, device)
    cifar = cifar if cifar is not None else data.load_cifar10(cfg.data_dir, download=cfg.download)
    train, val, test = make_loaders(cfg, cifar, device)
    memory_format = (
        torch.channels_last
        if device.type == "cuda" and cfg.channels_last
        else torch.contiguous_format
    )
    prec = precision(cfg, device, cfg.batch_size)
    eval_prep = BatchAugment(
        cfg, device, train=False, memory_format=memory_format, dtype=prec.input_dtype
    )
    model = build_net(cfg, cifar, device, memory_format, eval_prep, prec)
    return Setup(
        cfg,
        device,
        cifar,
        train,
        val,
        test,
        train_prep=BatchAugment(
            cfg,
            device,
            train=True,
            geometric=cfg.backend == "gpu",
            memory_format=memory_format,
            dtype=prec.input_dtype,
        ),
        eval_prep=eval_prep,
        model=model,
        stepper=Stepper(model, cfg, len(train), prec),
        criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        net=model,
    )


def build_net(cfg: Config, cifar, device, memory_format, eval_prep, prec) -> models.Net:
    """The net on the device, initialised from the data where it asks to be (the whitening: the
    first training images, as the net sees them), in its precision."""
    model = models.build(cfg).to(device, memory_format=memory_format)
    if model.init_images:
        # what the init changed depends only on the data, the split and the seed: a tuning
        # worker's trials compute it once and share it
        key = (
            "init_from_data",
            cfg.model,
            cfg.width,
            cfg.val_size,
            cfg.seed,
            cfg.normalize,
            str(device),
        )

        def changed_by_init() -> dict:
            first = data.split_val(cifar.train_labels, cfg.val_size, cfg.seed)[0]
            images = torch.from_numpy(cifar.train_images[first[: model.init_images]])
            before = {k: v.clone() for k, v in model.state_dict().items()}
            model.init_from_data(eval_prep(images.to(device).permute(0, 3, 1, 2)).float())
            return {
                k: v.clone() for k, v in model.state_dict().items() if not torch.equal(v, before[k])
            }

        model.load_state_dict(cifar.cached(key, changed_by_init), strict=False)
    return prec.prepare(model)


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
    sync(device)
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True)
    return compiled, time.perf_counter() - t0


def compile_setup(setup: Setup) -> None:
    sizes = [
        min(l.batch_size, len(l.labels) - i)
        for l in setup.eval_loaders().values()
        for i in range(0, len(l.labels), l.batch_size)
    ]
    setup.net, setup.compile_seconds = compile_model(
        setup.model, (setup.cfg.batch_size, 3, 32, 32), sizes, setup.criterion, setup.autocast
    )


# ===== start: the run folder, the tracker, the banner ============================================


def start(setup: Setup, progress: Progress, context: Context, run_dir=None) -> Tracker:
    cfg = setup.cfg
    run_dir = run_dir or new_run_dir(cfg.runs_dir, context.folder_prefix or cfg.name, cfg.seed)
    info = setup.info()
    made_by = provenance(setup.device)
    tracker = Tracker(
        cfg,
        run_dir,
        resumed=progress if progress.epoch else None,
        job_type=context.job_type,
        tags=context.tags,
        figures=context.figures,
        extra_config={
            **info,
            **made_by,
            "data_fingerprint": setup.cifar.fingerprint(),
            **context.extra_config,
        },
    )
    if made_by["git_dirty"]:  # the code that ran is the commit plus this
        (tracker.run_dir / "diff.patch").write_text((git_diff() or "") + "\n")
    progress.wandb_id = tracker.wandb_id
    summary = models.summary(setup.model, setup.device)
    (tracker.run_dir / "model_summary.txt").write_text(summary + "\n")
    print(summary)
    print(
        f"{cfg.name}: {cfg.model} ({info['parameters']:,} parameters) on {setup.device}, "
        f"{info['train_images']} train / {info['val_images']} val / {info['test_images']} "
        f"test images, {cfg.backend} backend, {cfg.epochs:g} epochs of {setup.steps} steps "
        f"-> {tracker.run_dir}"
    )
    if progress.epoch:
        print(f"resuming {tracker.run_dir} after epoch {progress.epoch}")
    if cfg.ema and 1 / (1 - cfg.ema) > setup.total_steps:
        print(
            f"warning: --ema={cfg.ema} averages over about {1 / (1 - cfg.ema):.0f} steps, more "
            f"than this run's {setup.total_steps}: the evaluated weights stay close to the "
            f"first ones; use a smaller --ema",
            file=sys.stderr,
        )
    return tracker


# ===== fit: the epoch loop =======================================================================


def train_epoch(
    setup: Setup, epoch: int, desc: str | None = None, stop: StopOnSignal | None = None
):
    """Returns per-step LRs, per-step losses (host floats) and the epoch's accuracy. The last
    epoch of a fractional epoch count stops at the run's step budget."""
    s = setup
    s.net.train()
    lrs, losses = [], []
    correct = torch.zeros((), device=s.device, dtype=torch.long)
    seen, first = 0, epoch * s.steps
    batches = min(s.steps, s.total_steps - first)
    for x, y in tqdm(s.train_loader, desc=desc, leave=False, disable=desc is None, total=batches):
        x = s.train_prep(x.to(s.device, non_blocking=True))
        y = y.to(s.device, non_blocking=True)
        with s.autocast:
            out = s.net(x)
            loss = s.criterion(out.float(), y)  # fp32 softmax whatever the net computes in
        s.stepper.zero_grad()
        lrs.append(s.stepper.lr)  # the LR this step uses, known on the host
        s.stepper.step(loss)
        losses.append(loss.detach())
        correct += (out.argmax(1) == y).sum()
        seen += len(y)
        if s.on_step is not None:
            s.on_step()
        if stop is not None and stop.requested:
            raise stop.reason()
        if len(lrs) == batches:
            break
    # the one device-to-host transfer of the epoch
    losses = torch.stack(losses).float().cpu().tolist()
    return lrs, losses, correct.item() / seen


@dataclass
class TTA:
    """How an evaluation runs the net on its images: the level, the fraction of least sure images
    that get its views, where that fraction is picked (each batch or the whole split), and the
    views' weights (Config's tta, tta_fraction, tta_scope, tta_weights)."""

    level: str = "none"
    fraction: float = 1.0
    scope: str = "batch"
    weights: str = "airbench"

    @classmethod
    def of(cls, cfg: Config) -> TTA:
        return cls(cfg.tta, cfg.tta_fraction, cfg.tta_scope, cfg.tta_weights)

    @property
    def split_wide(self) -> bool:
        return self.level != "none" and self.fraction < 1 and self.scope == "split"


def scored_batches(model, loader, prep, autocast, tta: TTA):
    """(logits in fp32, labels) per batch of the loader under `tta`. Split-wide: the plain pass
    over every batch first, then the views for the least sure images of the whole split (in
    batches of the loader's size), replacing their plain logits."""
    device = prep.device
    kept = []  # split-wide: (inputs, plain logits, labels) of every batch, for the second pass
    for x, y in loader:
        x = prep(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        with autocast:
            if tta.split_wide:
                kept.append((x, model(x), y))
                continue
            out = models.logits(model, x, tta.level, tta.fraction, tta.weights)
        yield out.float(), y
    if not kept:
        return
    inputs, plain, labels = (torch.cat(part) for part in zip(*kept))
    unsure = models.least_sure(plain, tta.fraction)
    size = len(kept[0][0])
    with autocast:
        views = torch.cat(
            [
                models.logits(model, inputs[unsure[i : i + size]], tta.level, 1.0, tta.weights)
                for i in range(0, len(unsure), size)
            ]
        )
    out = plain.index_copy(0, unsure, views.to(plain.dtype)).float()
    yield from zip(
        out.split([len(x) for x, _, _ in kept]), labels.split([len(y) for *_, y in kept])
    )


@torch.no_grad()
def evaluate(
    model,
    loader,
    prep,
    autocast,
    tta: TTA | None = None,
    predictions: list | None = None,
):
    """(mean cross-entropy, accuracy) over every image of the loader under `tta` (None: no
    TTA); `predictions`, when given, receives each image's class probabilities (one tensor per
    batch, on the device)."""
    model.eval()
    tta = tta or TTA()
    device = prep.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for out, y in scored_batches(model, loader, prep, autocast, tta):
        loss_sum += nn.functional.cross_entropy(out, y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
        if predictions is not None:
            predictions.append(out.softmax(1))
        n += len(y)
    return loss_sum.item() / n, correct.item() / n


def check_finite(losses: list[float], lrs: list[float], epoch: int, steps: int) -> None:
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        raise TrainingDiverged(
            f"training loss became {losses[bad]} at epoch {epoch + 1}, step "
            f"{bad + 1} of {steps} (lr {lrs[bad]:.4g}); lower max_lr or "
            f"check the data"
        )


def begin_epoch(setup: Setup, epoch: int) -> None:
    """What every epoch starts with, before its first step (a resumed run too)."""
    cfg = setup.cfg
    # all randomness of an epoch derives from (seed, epoch): resuming repeats it exactly
    torch.manual_seed(data.epoch_seed(cfg.seed, epoch))
    data.set_epoch(setup.train_loader, cfg.seed, epoch)
    setup.train_prep.set_epoch(epoch)
    setup.model.set_epoch(epoch)  # a net whose parameters train in some epochs only


def fit(setup: Setup, tracker: Tracker, progress: Progress, on_epoch=None, stop=None) -> None:
    """Train from epoch `progress.epoch` to cfg.epochs, updating `progress` as it goes."""
    cfg = setup.cfg
    last_epoch = n_epochs(cfg)
    for epoch in range(progress.epoch, last_epoch):
        begin_epoch(setup, epoch)
        t0 = time.perf_counter()
        lrs, losses, train_acc = train_epoch(
            setup, epoch, f"epoch {epoch + 1}/{last_epoch}" if cfg.progress else None, stop
        )
        if epoch + 1 == last_epoch:
            setup.stepper.finish()  # the weights become the lookahead average, if any
        sync(setup.device)
        seconds = time.perf_counter() - t0
        progress.train_seconds += seconds
        tracker.log_steps(epoch * setup.steps, lrs, losses)
        check_finite(losses, lrs, epoch, setup.steps)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": sum(losses) / len(losses),
            "train_acc": train_acc,
        }
        last = epoch + 1 == last_epoch
        if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
            t0 = time.perf_counter()
            for split, loader in setup.eval_loaders().items():
                # the last evaluation's probabilities serve the analysis: no second TTA pass
                # (kept only when there is an analysis to serve)
                keep = (
                    setup.final_predictions.setdefault(split, []) if last and cfg.analysis else None
                )
                metrics[f"{split}_loss"], metrics[f"{split}_acc"] = evaluate(
                    setup.eval_net,
                    loader,
                    setup.eval_prep,
                    setup.autocast,
                    TTA.of(cfg),
                    keep,
                )
                progress.best[split] = max(progress.best.get(split, 0.0), metrics[f"{split}_acc"])
            progress.eval_seconds += time.perf_counter() - t0  # evaluate() ends on a host sync
        metrics["epoch_seconds"] = seconds
        tracker.log_epoch(metrics)
        tqdm.write(_epoch_line(metrics, lrs[-1]))
        progress.epoch, progress.steps_done = epoch + 1, epoch * setup.steps + len(lrs)
        progress.metrics = list(tracker.epochs)
        if cfg.checkpoint:
            checkpoint.save(tracker.run_dir, checkpoint.state(setup, progress))
        if on_epoch is not None:
            on_epoch(metrics)


# ===== finish: summary, analysis, files ==========================================================


def summarize(setup: Setup, tracker: Tracker, progress: Progress, status: str) -> dict:
    last = tracker.epochs[-1] if tracker.epochs else {}
    return {
        "status": status,
        "epochs_done": progress.epoch,
        "final_test_acc": last.get("test_acc"),
        "best_test_acc": progress.best.get("test"),
        "final_val_acc": last.get("val_acc"),
        "best_val_acc": progress.best.get("val"),
        "train_seconds": progress.train_seconds,
        "eval_seconds": progress.eval_seconds,
        "compile_seconds": setup.compile_seconds,
        "wall_seconds": time.perf_counter() - setup.started,
        **setup.info(),
        "run_dir": str(tracker.run_dir),
        "wandb_id": tracker.wandb_id,
    }


def finish(
    setup: Setup, tracker: Tracker, progress: Progress, context: Context | None = None
) -> dict:
    cfg = setup.cfg
    summary = summarize(setup, tracker, progress, "finished")
    split = "test" if setup.test_loader else "val"  # a tuning trial never looks at test
    loader = setup.eval_loaders().get(split)
    if cfg.analysis and loader is not None:  # on the eager net: Grad-CAM needs hooks and gradients
        try:
            probs = setup.final_predictions.get(split)
            analysis.analyze(
                setup.final_net,
                loader,
                setup.eval_prep,
                setup.autocast,
                cfg,
                setup.cifar.classes,
                tracker.run_dir,
                tracker,
                split,
                probs=torch.cat(probs).float().cpu().numpy() if probs else None,
            )
        except Exception as e:  # the trained model and its numbers matter more than its figures
            summary["analysis_error"] = f"{type(e).__name__}: {e}"
            print(
                f"warning: the analysis after training failed ({summary['analysis_error']}); "
                f"the summary and the model are saved",
                file=sys.stderr,
            )
    tracker.close(
        summary,
        setup.final_net.state_dict() if cfg.save_model else None,
        setup.cifar.classes,
        (context or Context()).model_aliases,
    )
    print(pd.DataFrame(tracker.epochs).to_string(index=False, float_format="%.4f"))
    name = {"test": "test", "val": "validation"}[split]
    print(
        f"final {name} accuracy {summary[f'final_{split}_acc']:.2%} "
        f"(best {progress.best[split]:.2%}), {progress.train_seconds:.2f} s training"
        + (f" + {setup.compile_seconds:.1f} s compiling" if cfg.compile else "")
        + f"; run folder {tracker.run_dir}"
    )
    return summary


def close_early(setup: Setup, tracker: Tracker, progress: Progress, error: BaseException) -> None:
    """A run that ends with an exception still gets its summary, curves and a closed W&B run."""
    if isinstance(error, RunStopped):
        status = error.status
    elif isinstance(error, TrainingDiverged):
        status = "diverged"
    elif isinstance(error, (SystemExit, KeyboardInterrupt)):  # the process was stopped
        status = "interrupted"
    else:
        status = "failed"
    ok = isinstance(error, RunStopped) and not error.failed
    saved = tracker.run_dir / checkpoint.NAME
    # the weights of the last completed epoch, as its checkpoint holds them, leave as a model
    state = None
    if setup.cfg.save_model and saved.exists():
        try:
            state = checkpoint.model_state(checkpoint.read_data(saved))
        except ValueError as e:  # damaged or foreign: the run's own files are kept as they are
            print(f"warning: no model.pt saved: {e}", file=sys.stderr)
    summary = summarize(setup, tracker, progress, status)
    if isinstance(error, TrainingDiverged):
        error.summary = summary
    tracker.close(summary, state, setup.cifar.classes, exit_code=0 if ok else 1)
    if not ok and saved.exists():
        print(
            f"the last completed epoch is checkpointed; continue with: "
            f"python {sys.argv[0]} --resume {tracker.run_dir}",
            file=sys.stderr,
        )


# ===== the run ===================================================================================


def run(cfg: Config, context: Context | None = None, cifar: data.Cifar10 | None = None) -> dict:
    """Train one model as `cfg` says and return its summary. `context` says what the run is
    part of; `cifar` spares loading the data again (tuning trials)."""
    cfg.validate()
    context = context or Context()
    pick_device(cfg.device)  # a missing GPU, or a bad checkpoint, is an error before any file
    saved = checkpoint.load(cfg.resume) if cfg.resume else None
    if saved is None:
        check_runs_dir(cfg.runs_dir)
    setup = build(cfg, cifar)
    if context.on_build is not None:
        context.on_build(setup)
    progress = checkpoint.restore(setup, saved) if saved else Progress()
    if cfg.compile:
        compile_setup(setup)
    tracker = start(setup, progress, context, run_dir=cfg.resume)
    with StopOnSignal() as stop:
        try:
            if context.on_start is not None:
                context.on_start(tracker)
            fit(setup, tracker, progress, context.on_epoch, stop)
        except BaseException as e:  # divergence, signals, pruning, crashes: keep what was logged
            close_early(setup, tracker, progress, e)
            raise
    return finish(setup, tracker, progress, context)


def _epoch_line(m: dict, lr: float) -> str:
    val = f"  val {m['val_acc']:.2%}" if "val_acc" in m else ""
    test = f"  test loss {m['test_loss']:.3f} acc {m['test_acc']:.2%}" if "test_acc" in m else ""
    return (
        f"epoch {m['epoch']:>3}  lr {lr:.4f}  train loss {m['train_loss']:.3f} "
        f"acc {m['train_acc']:.2%}{val}{test}  {m['epoch_seconds']:.2f}s"
    )
