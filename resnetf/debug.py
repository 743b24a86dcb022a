"""Debug modes: know in seconds whether an idea runs, can learn, and where its time goes.

    --debug=fast      3 steps of 32 images at a constant LR, one evaluation batch of 64, the
                      analysis and every file: the whole path of a run, W&B off, under
                      runs/debug/
    --debug=overfit   one batch of 32 images, repeated, without augmentation, until the net gets
                      all of it right (or a step limit passes: then exit 1 with one line)
    --debug=profile   a few steps under torch.profiler: a Chrome/TensorBoard trace in the run
                      folder and the top operators by time

Each builds the experiment's own net, data path, optimizer and precision (train.build), so what
it says holds for the real run; none of them is a measurement of accuracy.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path

import torch

from .config import Config
from .optim import sync
from .tracking import new_run_dir
from .train import Context, Setup, begin_epoch, build, run, train_epoch

FAST_STEPS = 3
SMALL_BATCH = 32  # fast and overfit: the path and the net are the experiment's, the batch small
EVAL_IMAGES = 64  # fast: one evaluation batch of this many images
OVERFIT_STEPS = 300
PROFILE_STEPS = 6  # the first two are warm-up, left out of the table


class Limited:
    """The first `batches` batches of a loader (each cut to `images` images when given), with
    the attributes a run reads off it."""

    def __init__(self, loader, batches: int, images: int | None = None):
        self.loader, self.batches, self.images = loader, min(batches, len(loader)), images
        self.batch_size = min(loader.batch_size, images or loader.batch_size)
        self.labels = getattr(loader, "labels", None)
        if self.labels is not None and not getattr(loader, "train", True):
            self.labels = self.labels[: self.batches * self.batch_size]

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        for i, (x, y) in enumerate(self.loader):
            if i == self.batches:
                break
            yield (x, y) if self.images is None else (x[: self.images], y[: self.images])

    def __getattr__(self, name):  # generator, dataset, sampler, set_epoch: the loader's own
        return getattr(self.loader, name)


def constant_lr(setup: Setup) -> None:
    """The optimizers at their schedule's first LR for every step: no One Cycle over a few
    steps."""
    setup.stepper.constant_lr()


def debug_config(cfg: Config) -> Config:
    return cfg.replace(
        wandb_mode="disabled",
        runs_dir=str(Path(cfg.runs_dir) / "debug"),
        checkpoint=False,
        seeds=1,
        tune=0,
        gradcam_images=min(cfg.gradcam_images, 2),
    )


def fast(cfg: Config) -> dict:
    """The whole path of a run on FAST_STEPS training batches and one evaluation batch."""
    t0 = time.perf_counter()

    def shrink(setup: Setup) -> None:
        setup.cfg = setup.cfg.replace(epochs=1)
        setup.train_loader = Limited(setup.train_loader, FAST_STEPS)
        setup.val_loader = setup.val_loader and Limited(setup.val_loader, 1, EVAL_IMAGES)
        setup.test_loader = setup.test_loader and Limited(setup.test_loader, 1, EVAL_IMAGES)
        constant_lr(setup)

    summary = run(
        debug_config(cfg).replace(batch_size=min(cfg.batch_size, SMALL_BATCH)),
        Context(job_type="debug", on_build=shrink, folder_prefix=f"{cfg.name}_fast"),
    )
    print(
        f"debug fast: build, {FAST_STEPS} training steps, evaluation, analysis and files ran "
        f"in {time.perf_counter() - t0:.1f} s; {summary['run_dir']}"
    )
    return summary


def overfit(cfg: Config, steps: int = OVERFIT_STEPS) -> dict:
    """One batch, as the net sees test images (no augmentation), trained on until it is all
    right: a net or a loss that cannot do that has a bug, whatever the data."""
    cfg = debug_config(cfg).replace(
        pad=0,
        flip=False,
        alternating_flip=False,
        cutout=0,
        brightness=0.0,
        contrast=0.0,
        label_smoothing=0.0,
        dropout=0.0,
        lookahead=0.0,
        ema=0.0,
        batch_size=min(cfg.batch_size, SMALL_BATCH),
    )
    setup = build(cfg)
    constant_lr(setup)
    x, y = next(iter(setup.train_loader))
    x, y = setup.eval_prep(x.to(setup.device)), y.to(setup.device)
    setup.model.train()
    for step in range(1, steps + 1):
        with setup.autocast:
            out = setup.net(x)
            loss = setup.criterion(out.float(), y)
        setup.stepper.zero_grad()
        setup.stepper.step(loss)
        accuracy = (out.argmax(1) == y).float().mean().item()
        if not math.isfinite(loss.item()):
            break
        if accuracy == 1.0:
            print(
                f"debug overfit: 100% training accuracy on one batch of {len(y)} images after "
                f"{step} steps (loss {loss.item():.4f})"
            )
            return {"steps": step, "loss": loss.item(), "accuracy": accuracy}
    lr = setup.stepper.lr
    raise SystemExit(
        f"debug overfit: {accuracy:.1%} training accuracy on one batch of {len(y)} "
        f"images after {step} steps (loss {loss.item():.4g}): the net, the loss or the "
        f"optimizer cannot fit even that; check them (or the LR: {lr:.3g})"
    )


def profile(cfg: Config, steps: int = PROFILE_STEPS) -> dict:
    """A few training steps under torch.profiler; the trace goes to the run folder."""
    from torch.profiler import ProfilerActivity, schedule

    cfg = debug_config(cfg)
    setup = build(cfg)
    setup.cfg = setup.cfg.replace(epochs=1)
    setup.train_loader = Limited(setup.train_loader, steps)
    constant_lr(setup)
    run_dir = new_run_dir(cfg.runs_dir, f"{cfg.name}_profile", cfg.seed)
    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if setup.device.type == "cuda" else []
    )
    trace, tables = run_dir / "trace.json", []
    key = "self_cuda_time_total" if setup.device.type == "cuda" else "self_cpu_time_total"

    def ready(prof) -> None:  # at the end of the active steps: the trace and the table
        prof.export_chrome_trace(str(trace))
        tables.append(prof.key_averages().table(sort_by=key, row_limit=15))

    begin_epoch(setup, 0)
    with torch.profiler.profile(
        activities=activities,
        on_trace_ready=ready,
        schedule=schedule(wait=0, warmup=2, active=steps - 2),
    ) as prof:
        setup.on_step = prof.step
        train_epoch(setup, 0)
        sync(setup.device)
    table = tables[0]
    (run_dir / "top_ops.txt").write_text(table + "\n")
    print(table)
    print(
        f"debug profile: {steps - 2} steps after 2 of warm-up on {setup.device}; trace (open "
        f"in chrome://tracing or Perfetto, or TensorBoard's profiler): {trace}"
    )
    return {"trace": str(trace), "run_dir": str(run_dir)}


# ops that make the host wait for the device: a value read back (.item(), bool(), float()), or
# an output whose size depends on the data; and the CUDA runtime's own waits
SYNC_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2"}
SYNC_CALLS = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"}
LAUNCH_CALLS = {"cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx"}


def count_ops(
    cfg: Config, steps: int = PROFILE_STEPS, warmup: int = 2, muon_batched: bool = True
) -> dict:
    """aten ops and host syncs per training step, through the run's own `train_epoch` (loader,
    augmentation, forward, loss, backward, every optimizer, the schedules), compiled when
    cfg.compile (`event_counts` says what is counted). The end of an epoch (one read-back of its
    losses) is not a step's. `muon_batched=False`: Muon one parameter at a time (the step before
    the batched one)."""
    from torch.profiler import ProfilerActivity, schedule

    from .train import compile_setup

    cfg = debug_config(cfg).replace(epochs=1)
    setup = build(cfg)
    setup.train_loader = Limited(setup.train_loader, warmup + steps)
    if len(setup.train_loader) < warmup + steps:
        raise ValueError(f"{warmup + steps} training batches needed; the data has fewer")
    constant_lr(setup)
    for group in setup.stepper.param_groups:
        if "batched" in group:  # Muon's
            group["batched"] = muon_batched
    if cfg.compile:
        compile_setup(setup)
    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if setup.device.type == "cuda" else []
    )
    counted = []  # filled at the end of the active steps, before the profiler clears them
    begin_epoch(setup, 0)
    with (
        warnings.catch_warnings(),
        torch.profiler.profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=warmup, active=steps),
            on_trace_ready=lambda prof: counted.append(event_counts(prof.events())),
        ) as prof,
    ):
        warnings.filterwarnings("ignore", ".*Profiler clears events")  # one cycle is all we read
        setup.on_step = prof.step
        train_epoch(setup, 0)
        sync(setup.device)
    return {
        **{f"{k}_per_step": v / steps for k, v in counted[0].items()},
        "steps": steps,
        "device": str(setup.device),
        "compiled": cfg.compile,
    }


def event_counts(events) -> dict:
    """aten ops: every one the profiler recorded, inner calls included; top level: those no aten
    op called (what Python and autograd ask the dispatcher for); host syncs (a DataLoader's reads
    are of its own CPU tensors: not waits for the device); CUDA kernel launches (0 on a CPU)."""
    aten = [e for e in events if e.name.startswith("aten::")]
    return {
        "aten_ops": len(aten),
        "top_level_aten_ops": sum(not _under(e, "aten::") for e in aten),
        "host_syncs": sum(
            e.name in SYNC_OPS | SYNC_CALLS and not _under(e, "enumerate(DataLoader)")
            for e in events
        ),
        "kernel_launches": sum(e.name in LAUNCH_CALLS for e in events),
    }


def _under(event, prefix: str) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(prefix):
            return True
        parent = parent.cpu_parent
    return False


MODES = {"fast": fast, "overfit": overfit, "profile": profile}


def run_debug(cfg: Config):
    print(f"debug mode {cfg.debug}: {cfg.name} ({cfg.model}) on its own data path", file=sys.stderr)
    return MODES[cfg.debug](cfg)
