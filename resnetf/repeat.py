"""One experiment over several seeds: `--seeds N`, and the benchmark's timed runs.

Each seed is an ordinary run (its own folder, a W&B run in the experiment's group); `--seeds N`
writes the aggregate to runs/<name>_seeds_<time>/ (seeds.csv, summary.json) and to one more W&B
run in the same group, so the UI shows the spread next to the runs it summarises.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from . import stats
from .config import Config
from .tracking import Tracker, group_of, new_run_dir
from .train import TrainingDiverged


def run_each(cfg: Config, seeds: Iterable[int]) -> list[dict]:
    """One run per seed, in order, each through its claim (resnetf.claims: a seed another
    command runs or ran is shared, not trained twice); each summary carries its seed. A run
    that diverges is a result among many: recorded as diverged (its accuracy as it ended) and
    the others go on."""
    from .claims import run_claimed
    from .data import load_cifar10

    cifar = load_cifar10(cfg.data_dir, download=cfg.download)
    summaries = []
    for s in seeds:
        try:
            summary, how = run_claimed(cfg.replace(seed=s, seeds=1, target_acc=None), cifar)
            if how == "done":
                print(f"seed {s}: already done ({summary.get('run_dir')})")
        except TrainingDiverged as e:
            if e.summary is None:
                raise
            print(f"seed {s} diverged ({e}); recorded, going on", file=sys.stderr)
            summary = e.summary
        summaries.append({"seed": s, **summary})
    return summaries


def launched(cfg: Config, seeds: list[int]) -> list[dict]:
    """The seeds' runs on --launcher's tasks (resnetf.launch), in seed order."""
    from .data import load_cifar10
    from .launch import Run, run_many

    fingerprint = load_cifar10(cfg.data_dir, download=cfg.download).fingerprint()
    runs = [Run(cfg.name, cfg.replace(seed=s, seeds=1, target_acc=None)) for s in seeds]
    return run_many(runs, cfg, f"{cfg.name}_seeds", fingerprint)


def reach_line(accuracies, target: float) -> str:
    """The one-sided t-test that the mean reaches `target`, in one line (resnetf.stats)."""
    r = stats.reaches(accuracies, target)
    need = (
        f"{r.seeds_needed} seeds would show it at 5% (80% power) at this mean and spread"
        if r.seeds_needed
        else "no number of seeds shows it: the mean is not above the target"
    )
    return (
        f"mean {r.mean:.2%} vs target {target:.2%}: one-sided t-test t={r.t:.2f}, "
        f"p={r.p_value:.3g} (n={r.n}); {need}"
    )


def spread(values) -> tuple[float, float | None]:
    """Mean and sample std (n-1); the std of a single value is undefined: None."""
    s = pd.Series(list(values), dtype=float)
    return float(s.mean()), (float(s.std()) if len(s) > 1 else None)


def fmt(mean: float, std: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return f"{mean * scale:.{digits}f} +- " + (
        "n/a" if std is None or math.isnan(std) else f"{std * scale:.{digits}f}"
    )


def aggregate(summaries: list[dict], target_acc: float | None = None) -> dict:
    """Mean and std of the test accuracy (runs that have one: a run diverged before its first
    evaluation has none) and of train seconds; with a target, the one-sided test of reaching
    it."""
    accuracies = [s["final_test_acc"] for s in summaries if s.get("final_test_acc") is not None]
    acc_mean, acc_std = spread(accuracies)
    sec_mean, sec_std = spread(s["train_seconds"] for s in summaries)
    result = {
        "runs": len(summaries),
        "n_diverged": sum(s.get("status") == "diverged" for s in summaries),
        "test_acc_mean": acc_mean,
        "test_acc_std": acc_std,
        "train_seconds_mean": sec_mean,
        "train_seconds_std": sec_std,
    }
    if target_acc is not None and len(accuracies) >= stats.MIN_SEEDS:
        r = stats.reaches(accuracies, target_acc)
        result.update(target_acc=target_acc, t=r.t, p_value=r.p_value, seeds_needed=r.seeds_needed)
    return result


def run_seeds(cfg: Config) -> dict:
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    summaries = run_each(cfg, seeds) if cfg.launcher == "inline" else launched(cfg, seeds)
    result = aggregate(summaries, cfg.target_acc)
    out = new_run_dir(cfg.runs_dir, f"{cfg.name}_seeds", cfg.seed)
    pd.DataFrame(summaries).to_csv(out / "seeds.csv", index=False)
    tracker = Tracker(
        cfg.replace(name=f"{cfg.name}_seeds", wandb_group=group_of(cfg)),
        out,
        extra_config={"seed_list": seeds},
        job_type="seeds",
    )
    tracker.log_table("seeds", pd.DataFrame(summaries)[["seed", "final_test_acc", "train_seconds"]])
    best = max(summaries, key=lambda s: s["final_test_acc"] or 0)
    model = Path(best["run_dir"]) / "model.pt"
    if best.get("wandb_id") and model.exists():  # the best seed's model artifact gets `best`
        tracker.log_model(model, best, aliases=("best",), run_id=best["wandb_id"])
    tracker.close(result)
    print(
        f"{cfg.name} over seeds {seeds[0]}..{seeds[-1]}: test accuracy "
        f"{fmt(result['test_acc_mean'], result['test_acc_std'], 100)} % (n={result['runs']}), "
        f"train seconds {fmt(result['train_seconds_mean'], result['train_seconds_std'])}"
        + (f", {result['n_diverged']} diverged" if result["n_diverged"] else "")
        + f"; {out}"
    )
    if "p_value" in result:
        accuracies = [s["final_test_acc"] for s in summaries if s["final_test_acc"] is not None]
        print(reach_line(accuracies, cfg.target_acc))
    return result
