"""Benchmark an experiment: its compute, data-pipeline speed of both backends, training
throughput, and time-to-accuracy over seeds. Prints the figures and writes them as CSV; asserts
nothing.

    python -m resnetf.bench experiments/oc_24ep.py --seeds 3 [--out runs/bench] [-- --data_dir=...]
    python -m resnetf.bench experiments/fast94.py --flops          (compute only, on the CPU)
    python -m resnetf.bench experiments/fast94.py --ops -- --data_dir=...  (ops per step)
    python -m resnetf.bench experiments/fast94.py --seeds 5 --against airbench94 -- --data_dir=...
    python -m resnetf.bench experiments/oc_24ep.py --seeds 0 --trials 4 -- --data_dir=...

The race against airbench94 (`--against airbench94`; PyPI airbench==0.1.8, not a requirement
of this package, CUDA only). Order: one untimed warm-up of each doing everything a timed run
does (build, whitening, training, the final TTA evaluation: cudnn autotuning of every shape, the
allocator), then the seeds interleaved, ours then theirs, so that clock and thermal drift fall on
both alike. Both start with their data already on the GPU (ours: the one device copy of the
data set; theirs: its CifarLoader, made once). Counted per run, on both sides:
  wall_seconds   host clock, GPU synchronised at both ends, around building the net, whitening,
                 training and the final TTA evaluation. Ours: train.build + train.fit
                 (per-epoch metrics appended to two CSV files; no checkpoints, analysis, saved
                 model or W&B). Theirs: the train94 call, which also reads its test set from
                 cifar10/test.pt and, by its own design, evaluates once without TTA after each
                 epoch.
  timer_seconds  airbench's own timer: CUDA-event windows around the whitening, each epoch's
                 training and the final TTA evaluation (theirs: the sum of the windows train94
                 itself records; ours: the synchronised windows of each epoch's training plus
                 the final evaluation; our whitening, a few ms, falls in wall_seconds only).
test_acc is each side's final TTA accuracy (theirs: airbench.evaluate at tta_level 2, outside the
timed window).

Flags after `--` override the experiment's config as on its own command line. Seeds run in this
one process after a one-epoch warm-up run that is not counted (cudnn autotuning, allocator and
compile caches), each with its own run folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from . import launch
from .batch_augment import BatchAugment
from .config import Config, load_experiment, parse
from .config import groups as config_groups
from .data import load_cifar10
from .flops import flops
from .optim import sync
from .repeat import fmt, reach_line, run_each, spread
from .tracking import provenance
from .train import Context, make_loaders, pick_device, run


def environment(device: torch.device) -> dict:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return {**provenance(device), "gpu": gpu, "cpu_cores": os.cpu_count()}


def pipeline_throughput(cfg: Config, cifar, device: torch.device) -> float:
    """Training images per second from loader to augmented device batch, over one epoch after
    the first batch (so worker start-up is left out), with no model in the way."""
    loader, _, _ = make_loaders(cfg, cifar, device)
    # on a CPU-only machine the device-side ops would compete with the workers for the same
    # cores, so there the albumentations figure is the loader's alone
    prep = (
        BatchAugment(cfg, device, train=True, geometric=cfg.backend == "gpu")
        if device.type == "cuda" or cfg.backend == "gpu"
        else None
    )
    batches = iter(loader)
    next(batches)
    sync(device)
    t0, n = time.perf_counter(), 0
    for x, _ in batches:
        if prep is not None:
            prep(x.to(device, non_blocking=True))
        n += len(x)
    sync(device)
    return n / (time.perf_counter() - t0)


def per_image_rate(cfg: Config, images, n: int = 2000) -> float:
    """Images per second of the albumentations train transform alone, on one core."""
    from .augment import train_transform

    tf = train_transform(cfg, seed=0)
    t0 = time.perf_counter()
    for image in images[:n]:
        tf(image=image)
    return min(n, len(images)) / (time.perf_counter() - t0)


def write_airbench_data(cifar, folder: Path) -> Path:
    """The data set in airbench's own layout: folder/train.pt and folder/test.pt, each
    {'images': uint8 N x 32 x 32 x 3, 'labels', 'classes'}."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        torch.save(
            {
                "images": torch.from_numpy(getattr(cifar, f"{split}_images")),
                "labels": torch.from_numpy(getattr(cifar, f"{split}_labels")),
                "classes": list(cifar.classes),
            },
            folder / f"{split}.pt",
        )
    return folder


def race_airbench94(cfg: Config, seeds: int, out: Path) -> pd.DataFrame:
    """The experiment against airbench94 on the same data and GPU, counting the same work for
    both: see "The race against airbench94" in this module's docstring."""
    airbench = _airbench()
    device = pick_device(cfg.device)
    if device.type != "cuda":
        raise SystemExit("error: airbench94 runs on CUDA only")
    cifar = load_cifar10(cfg.data_dir, download=False)
    folder = write_airbench_data(cifar, out / "airbench" / "cifar10")
    cfg = cfg.replace(
        checkpoint=False,
        analysis=False,
        save_model=False,
        progress=False,
        wandb_mode="disabled",
        runs_dir=str(out / "runs"),
    )
    here = os.getcwd()
    os.chdir(folder.parent)  # train94 loads its test set from cifar10/test.pt under the cwd
    try:
        train = airbench.CifarLoader(
            str(folder), train=True, batch_size=1024, aug=dict(flip=True, translate=2), altflip=True
        )
        test = airbench.CifarLoader(str(folder), train=False, batch_size=2000)
        _ours(cfg.replace(seed=10_000), cifar, device, job_type="warmup")  # warm-ups
        _theirs(airbench, train, test, device)
        rows = []
        for seed in range(seeds):
            rows.append(
                {"side": "ours", "seed": seed, **_ours(cfg.replace(seed=seed), cifar, device)}
            )
            torch.manual_seed(seed)
            rows.append(
                {"side": "airbench94", "seed": seed, **_theirs(airbench, train, test, device)}
            )
    finally:
        os.chdir(here)
    return pd.DataFrame(rows)


def _airbench():
    try:
        import airbench
    except ImportError:
        raise SystemExit(
            "error: --against airbench94 needs the airbench package "
            "(pip install --no-deps airbench==0.1.8)"
        ) from None
    return airbench


def _ours(cfg: Config, cifar, device: torch.device, job_type: str = "train") -> dict:
    from .checkpoint import Progress
    from .tracking import Tracker, new_run_dir
    from .train import build, fit

    run_dir = new_run_dir(cfg.runs_dir, cfg.name, cfg.seed)
    sync(device)
    t0 = time.perf_counter()
    setup = build(cfg, cifar)
    progress = Progress()
    fit(
        setup, Tracker(cfg, run_dir, job_type=job_type), progress
    )  # ends with the final TTA evaluation
    sync(device)
    return {
        "test_acc": progress.metrics[-1]["test_acc"],
        "wall_seconds": time.perf_counter() - t0,
        "timer_seconds": progress.train_seconds + progress.eval_seconds,
    }


class _EventTimes:
    """While active, every torch.cuda.Event.elapsed_time that code asks for is also noted here:
    the windows airbench's own timer adds up."""

    def __enter__(self):
        self.ms, self._original, times = [], torch.cuda.Event, self

        class Event(torch.cuda.Event):
            def elapsed_time(self, end):
                ms = super().elapsed_time(end)
                times.ms.append(ms)
                return ms

        torch.cuda.Event = Event
        return self

    def __exit__(self, *exc):
        torch.cuda.Event = self._original


def _theirs(airbench, train, test, device: torch.device) -> dict:
    with _EventTimes() as events:
        sync(device)
        t0 = time.perf_counter()
        net = airbench.train94(train, verbose=False)
        sync(device)
        wall = time.perf_counter() - t0
    return {
        "test_acc": airbench.evaluate(net, test, tta_level=2),
        "wall_seconds": wall,
        "timer_seconds": sum(events.ms) / 1000,
    }


def print_race(name: str, race: pd.DataFrame) -> None:
    print(race.to_string(index=False, float_format="%.4f"))
    sides = {side: race[race["side"] == side] for side in ("ours", "airbench94")}
    for side, rows in sides.items():
        print(
            f"{name if side == 'ours' else side}: test accuracy "
            f"{fmt(*spread(rows['test_acc']), 100)} % (n={len(rows)}), wall seconds "
            f"{fmt(*spread(rows['wall_seconds']))}, timer seconds "
            f"{fmt(*spread(rows['timer_seconds']))}"
        )
    ratio = {
        k: sides["ours"][k].mean() / sides["airbench94"][k].mean()
        for k in ("wall_seconds", "timer_seconds")
    }
    print(
        f"time ratio {name} / airbench94: wall {ratio['wall_seconds']:.2f}, "
        f"timer {ratio['timer_seconds']:.2f}"
    )


def trial_overheads(cfg: Config, trials: int, out: Path) -> pd.DataFrame:
    """A small study (no pruning). For each trial: its whole wall time as Optuna records it
    (from the trial's start to its end: building, the run folder and W&B, training, evaluation,
    files, W&B's close), its training and evaluation seconds, and what is left: the overhead."""
    from .tune import tune

    study = tune(
        cfg.replace(
            tune=trials,
            pruner="none",
            runs_dir=str(out / "runs"),
            study=f"bench_{time.strftime('%Y%m%d-%H%M%S')}",
        )
    )
    rows = []
    for trial in study.trials:
        s = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        rows.append(
            {
                "trial": trial.number,
                "wall_seconds": wall,
                "train_seconds": s["train_seconds"],
                "eval_seconds": s["eval_seconds"],
                "overhead_seconds": wall - s["train_seconds"] - s["eval_seconds"],
            }
        )
    return pd.DataFrame(rows)


def arguments(argv) -> tuple[argparse.Namespace, list]:
    """(benchmark options, the experiment's flags: those after `--`)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("experiment", help="an experiment file, e.g. experiments/oc_24ep.py")
    ap.add_argument("--seeds", type=int, default=3, help="timed runs, seeds 0..N-1 (0: none)")
    ap.add_argument("--no_pipeline", action="store_true", help="skip the data-pipeline figures")
    ap.add_argument(
        "--flops",
        action="store_true",
        help="print the recipe's training PFLOPs and stop (no data, no device)",
    )
    ap.add_argument(
        "--ops",
        action="store_true",
        help="print aten ops, host syncs and CUDA kernel launches per training step (through "
        "the run's own train_epoch; eager, Muon per parameter where the recipe has Muon, and "
        "compiled where torch compiles here) and stop; needs the data",
    )
    ap.add_argument(
        "--against",
        choices=["airbench94"],
        default=None,
        help="race airbench94 (pip install --no-deps airbench==0.1.8) on the same "
        "data and GPU, --seeds times each, interleaved: both accuracies, wall "
        "and timer seconds, and the time ratios (see race_airbench94)",
    )
    ap.add_argument(
        "--trials",
        type=int,
        default=0,
        help="run a study of N trials and report each trial's wall, train, "
        "evaluation and overhead seconds",
    )
    ap.add_argument(
        "--target_acc",
        type=float,
        default=None,
        help="the accuracy aimed at (a fraction: 0.94): the one-sided t-test that the timed "
        "runs' mean reaches it, and the seeds their spread needs to show it",
    )
    ap.add_argument("--out", default=None, help="folder for the CSV files and run folders")
    args, rest = ap.parse_known_args(argv[:cut])
    launch_flags = {f"--{name}" for name in config_groups()["launch"][1]}
    stray = [a for a in rest if a.startswith("--") and a.split("=")[0] not in launch_flags]
    if stray:
        ap.error(f"unrecognized arguments: {' '.join(stray)}")
    if args.target_acc is not None and not 0 < args.target_acc <= 1:
        ap.error(f"--target_acc must be in (0, 1] (a fraction: 0.94; got {args.target_acc})")
    if args.target_acc is not None and args.seeds < 2:
        ap.error("--target_acc is tested over the timed runs: it needs --seeds N >= 2")
    # the launch flags (--launcher local --jobs 8 ...) may come before `--`: they say where the
    # timed runs go, not what the recipe is
    return args, rest + argv[cut + 1 :]


def print_flops(name: str, cfg: Config) -> None:
    f = flops(cfg)
    print(
        f"{name}: {f['train_gflop_per_image']:.3f} GFLOP per training image x "
        f"{f['train_images']:,} images = {f['train_pflop']:.3f} PFLOP training + "
        f"{f['eval_gflop_per_image']:.3f} GFLOP x {f['eval_images']:,} evaluated images "
        f"(tta={cfg.tta}, tta_fraction={cfg.tta_fraction:g}) = {f['eval_pflop']:.4f} PFLOP; "
        f"total {f['total_pflop']:.3f} PFLOP"
    )


def print_ops(name: str, cfg: Config, out: Path | None) -> pd.DataFrame:
    """Ops per training step of the recipe, eager and compiled (and, with Muon, its step one
    parameter at a time: the cost the batched step saves). A compile that fails here (no C++
    compiler, an unsupported op) is a row saying so, not an error."""
    from .debug import count_ops

    variants = [("eager", cfg, True)]
    if cfg.optimizer == "muon":
        variants.append(("eager, Muon per parameter", cfg, False))
    variants.append(("compiled", cfg.replace(compile=True), True))
    rows = []
    for label, variant, batched in variants:
        try:
            counts = count_ops(variant, muon_batched=batched)
        except Exception as e:  # compiling can fail on a machine without a toolchain
            counts = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        rows.append({"experiment": name, "variant": label, **counts})
    table = pd.DataFrame(rows)
    print(
        f"{name}: per training step (train_epoch, after 2 warm-up steps), torch {torch.__version__}"
    )
    print(table.drop(columns=["experiment"]).to_string(index=False, float_format="%.1f"))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "ops.csv", index=False)
    return table


def pipeline(cfg: Config, device: torch.device, env: dict, out: Path) -> None:
    cifar = load_cifar10(cfg.data_dir, download=cfg.download)
    workers = cfg.workers if cfg.workers is not None else os.cpu_count()
    rows = [
        {
            "what": "albumentations transform, 1 core",
            "images_per_s": per_image_rate(cfg, cifar.train_images),
        }
    ]
    for backend in ("albumentations", "gpu"):
        rate = pipeline_throughput(cfg.replace(backend=backend), cifar, device)
        where = f"{workers} workers" if backend == "albumentations" else str(device)
        rows.append({"what": f"{backend} pipeline ({where})", "images_per_s": rate})
    for r in rows:
        print(f"{r['what']:<45} {r['images_per_s']:>12,.0f} images/s")
    pd.DataFrame([{**env, **r} for r in rows]).to_csv(out / "pipeline.csv", index=False)


def timed_seeds(
    cfg: Config, seeds: int, name: str, env: dict, out: Path, target_acc: float | None = None
) -> pd.DataFrame:
    """One uncounted one-epoch warm-up run (cudnn autotuning, allocator and compile caches), then
    one run per seed; with --launcher, a warm-up per task and the seeds dealt over the tasks."""
    runs_dir = str(out / "runs")
    cfg = cfg.replace(runs_dir=runs_dir)
    warmup = cfg.replace(
        epochs=1,
        seed=10_000,
        wandb_mode="disabled",
        progress=False,
        save_model=False,
        pct_start=min(cfg.pct_start, 0.25),
    )
    if cfg.launcher == "inline":
        run(warmup, Context(job_type="warmup"))  # resnetf.compare leaves it out
        summaries = run_each(cfg, range(seeds))
    else:
        from .data import load_cifar10
        from .launch import Run, run_many

        fingerprint = load_cifar10(cfg.data_dir, download=cfg.download).fingerprint()
        runs = [Run(name, cfg.replace(seed=s)) for s in range(seeds)]
        summaries = run_many(runs, cfg, f"bench_{name}", fingerprint, warmup=warmup)
    table = pd.DataFrame([seed_row(s, name, cfg, env) for s in summaries])
    table["timed_seconds"] = table["train_seconds"] + table["eval_seconds"]
    table.to_csv(out / "seeds.csv", index=False)
    cols = ["seed", "test_acc", "train_seconds", "epoch_seconds", "train_images_per_s"]
    print(
        table[cols + (["task_index"] if "task_index" in table else [])].to_string(
            index=False, float_format="%.4f"
        )
    )
    if "task_index" in table and table["task_index"].nunique() > 1:
        for task, rows in table.groupby("task_index"):
            print(f"task {task}: {describe(rows)}")
    where = env["gpu"] if env["gpu"] != "none" else "cpu"
    print(f"{name} ({cfg.backend}) on {where}, pooled: {describe(table)}")
    if target_acc is not None:
        print(reach_line(table["test_acc"].dropna(), target_acc))
    return table


def seed_row(s: dict, name: str, cfg: Config, env: dict) -> dict:
    """One timed run as a row of seeds.csv, with where it ran when a launcher placed it."""
    placed = {k: s[k] for k in ("task_index", "host", "cuda_visible_devices") if k in s}
    return {
        "experiment": name,
        "backend": cfg.backend,
        "seed": s["seed"],
        "test_acc": s["final_test_acc"],
        "train_seconds": s["train_seconds"],
        "eval_seconds": s["eval_seconds"],
        "compile_seconds": s["compile_seconds"],
        "epoch_seconds": s["train_seconds"] / s["epochs_done"],
        "train_images_per_s": s["train_images"] * s["epochs_done"] / s["train_seconds"],
        **placed,
        **env,
    }


def describe(rows: pd.DataFrame) -> str:
    acc = rows["test_acc"].dropna()
    return (
        f"test accuracy {fmt(*spread(acc), 100)} % (median {100 * acc.median():.2f}, "
        f"n={len(acc)}), train seconds {fmt(*spread(rows['train_seconds']))} "
        f"(median {rows['train_seconds'].median():.2f}), "
        f"{rows['train_images_per_s'].mean():,.0f} train images/s"
    )


def main(argv=None) -> None:
    args, flags = arguments(sys.argv[1:] if argv is None else argv)
    try:
        experiment = load_experiment(args.experiment)
    except (FileNotFoundError, AttributeError) as e:
        raise SystemExit(f"error: {args.experiment} is not an experiment file ({e})") from None
    cfg, name = parse(experiment, flags), Path(args.experiment).stem
    if args.flops:
        return print_flops(name, cfg)
    if args.ops:
        return print_ops(name, cfg, Path(args.out) if args.out else None)
    try:
        launch.check(cfg)
    except ValueError as e:
        raise SystemExit(f"error: --{e}") from None
    out = Path(args.out or f"runs/bench_{name}_{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    env = environment(device)
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    if not args.no_pipeline:
        pipeline(cfg, device, env, out)
    if args.seeds > 0 and args.against:
        race = race_airbench94(cfg, args.seeds, out)
        race.assign(**env).to_csv(out / "race.csv", index=False)
        print_race(name, race)
    elif args.seeds > 0:
        try:
            timed_seeds(cfg, args.seeds, name, env, out, args.target_acc)
        except launch.LaunchFailed as e:
            raise SystemExit("error: " + "\nerror: ".join(e.problems)) from None
    if args.trials:
        overheads = trial_overheads(cfg, args.trials, out)
        overheads.to_csv(out / "trials.csv", index=False)
        print(overheads.to_string(index=False, float_format="%.2f"))
        print(
            f"per trial: wall {fmt(*spread(overheads['wall_seconds']))} s, train "
            f"{fmt(*spread(overheads['train_seconds']))} s, evaluation "
            f"{fmt(*spread(overheads['eval_seconds']))} s, overhead (wall minus train and "
            f"evaluation) {fmt(*spread(overheads['overhead_seconds']))} s"
        )
    print(f"CSV in {out}")


if __name__ == "__main__":
    main()
