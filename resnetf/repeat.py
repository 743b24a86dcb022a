"""One experiment over several seeds: `--seeds N`, and the benchmark's timed runs.

Each seed is an ordinary run (its own folder, a W&B run in the experiment's group); `--seeds N`
writes the aggregate to runs/<name>_seeds_<time>/ (seeds.csv, summary.json) and to one more W&B
run in the same group, so the UI shows the spread next to the runs it summarises.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .config import Config
from .tracking import Tracker, group_of, new_run_dir
from .train import run


def run_each(cfg: Config, seeds: Iterable[int]) -> list[dict]:
    """One run per seed, in order; each summary carries its seed."""
    return [{"seed": s, **run(cfg.replace(seed=s, seeds=1))} for s in seeds]


def spread(values) -> tuple[float, float | None]:
    """Mean and sample std (n-1); the std of a single value is undefined: None."""
    s = pd.Series(list(values), dtype=float)
    return float(s.mean()), (float(s.std()) if len(s) > 1 else None)


def fmt(mean: float, std: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return f"{mean * scale:.{digits}f} +- " + (
        "n/a" if std is None or math.isnan(std) else f"{std * scale:.{digits}f}"
    )


def aggregate(summaries: list[dict]) -> dict:
    acc_mean, acc_std = spread(s["final_test_acc"] for s in summaries)
    sec_mean, sec_std = spread(s["train_seconds"] for s in summaries)
    return {
        "runs": len(summaries),
        "test_acc_mean": acc_mean,
        "test_acc_std": acc_std,
        "train_seconds_mean": sec_mean,
        "train_seconds_std": sec_std,
    }


def run_seeds(cfg: Config) -> dict:
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    summaries = run_each(cfg, seeds)
    result = aggregate(summaries)
    out = new_run_dir(cfg.runs_dir, f"{cfg.name}_seeds", cfg.seed)
    pd.DataFrame(summaries).to_csv(out / "seeds.csv", index=False)
    tracker = Tracker(
        cfg.replace(name=f"{cfg.name}_seeds", wandb_group=group_of(cfg)),
        out,
        extra_config={"seed_list": seeds},
        job_type="seeds",
    )
    tracker.log_table("seeds", pd.DataFrame(summaries)[["seed", "final_test_acc", "train_seconds"]])
    best = max(summaries, key=lambda s: s["final_test_acc"])
    model = Path(best["run_dir"]) / "model.pt"
    if best.get("wandb_id") and model.exists():  # the best seed's model artifact gets `best`
        tracker.log_model(model, best, aliases=("best",), run_id=best["wandb_id"])
    tracker.close(result)
    print(
        f"{cfg.name} over seeds {seeds[0]}..{seeds[-1]}: test accuracy "
        f"{fmt(result['test_acc_mean'], result['test_acc_std'], 100)} % (n={result['runs']}), "
        f"train seconds {fmt(result['train_seconds_mean'], result['train_seconds_std'])}; {out}"
    )
    return result
