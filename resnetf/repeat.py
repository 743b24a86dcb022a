"""`--seeds N`: one experiment, N seeds, mean +- std of test accuracy and time.

Each seed is an ordinary run (its own folder, a W&B run in the experiment's group); the
aggregate goes to runs/<name>_seeds_<time>/ (seeds.csv, summary.json) and to one more W&B run
in the same group, so the UI shows the spread next to the runs it summarises.
"""
from __future__ import annotations

import pandas as pd

from .config import Config
from .tracking import Tracker, new_run_dir
from .train import run


def aggregate(summaries: list[dict]) -> dict:
    table = pd.DataFrame(summaries)
    acc, sec = table["final_test_acc"], table["train_seconds"]
    # sample std (n-1); undefined for one run, reported as None
    std = (lambda s: float(s.std()) if len(s) > 1 else None)
    return {"runs": len(table), "test_acc_mean": float(acc.mean()), "test_acc_std": std(acc),
            "train_seconds_mean": float(sec.mean()), "train_seconds_std": std(sec)}


def run_seeds(cfg: Config) -> dict:
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    summaries = [{"seed": s, **run(cfg.replace(seed=s, seeds=1))} for s in seeds]
    result = aggregate(summaries)
    out = new_run_dir(cfg.runs_dir, f"{cfg.name}_seeds", cfg.seed)
    pd.DataFrame(summaries).to_csv(out / "seeds.csv", index=False)
    tracker = Tracker(cfg.replace(name=f"{cfg.name}_seeds", wandb_group=cfg.wandb_group or cfg.name),
                      out, extra_config={"seed_list": seeds})
    tracker.log_table("seeds", pd.DataFrame(summaries)[["seed", "final_test_acc", "train_seconds"]])
    tracker.finish(result)
    std = result["test_acc_std"]
    print(f"{cfg.name} over seeds {seeds[0]}..{seeds[-1]}: test accuracy "
          f"{result['test_acc_mean']:.2%} +- {std if std is None else f'{std:.2%}'} "
          f"(n={result['runs']}), train seconds {result['train_seconds_mean']:.2f}; {out}")
    return result
