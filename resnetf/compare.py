"""Compare runs without the W&B UI: a table and one figure from their run folders.

    python -m resnetf.compare runs/                           (every run below, trials included)
    python -m resnetf.compare 'runs/oc_24ep_*' runs/fast94_s0_*   (folders or glob patterns)

The table has one row per training run (plain runs, tuning trials, retrained bests, interrupted
runs): its name, job type and status, the config fields that differ between the runs, final and
best validation and test accuracy, train seconds and the git commit that produced it; it is
printed and written as CSV. The figure shows the runs' LR, training-loss and accuracy curves.
Folders that are not training runs (seed aggregates, LR range tests, anything without a
config.json) are left out, and stderr says how many and why.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from .plots import plot_curves, read_curves

# recorded per run but never a difference worth a column (shown elsewhere or pure noise)
_NOISE = {
    "runs_dir",
    "progress",
    "seeds",
    "seed_list",
    "name",
    "job_type",
    "trial",
    "git_commit",
    "git_dirty",
    "wandb_group",
    "config_hash",
    "command",
    "host",
    "data_fingerprint",
}
TRAINING = {"train", "trial", "retrain_best"}  # job types that train a model


def _kind(folder: Path) -> tuple[bool, str]:
    """(is a training run, why not)."""
    config = folder / "config.json"
    if not config.is_file():
        return False, "no config.json"
    job = json.loads(config.read_text()).get("job_type", "train")
    return (True, "") if job in TRAINING else (False, f"job type {job}")


def find_runs(patterns: list[str]) -> tuple[list[Path], Counter]:
    """Training-run folders named by the patterns or found below them, and why the other folders
    that were looked at were skipped."""
    runs, skipped = [], Counter()
    for pattern in patterns:
        for path in map(Path, sorted(glob.glob(pattern)) or [pattern]):
            if not path.is_dir():
                skipped["not a folder"] += 1
                continue
            below = [
                c.parent
                for c in sorted(path.rglob("config.json"))
                if "wandb" not in c.relative_to(path).parts
            ]
            for folder in [path] if (path / "config.json").is_file() else below:
                ok, why = _kind(folder)
                if ok:
                    runs.append(folder)
                else:
                    skipped[why] += 1
            if not below and not (path / "config.json").is_file():
                skipped["no run folders below"] += 1
    if not runs:
        raise SystemExit(f"no run folders (with a config.json of a training run) in {patterns}")
    return list(dict.fromkeys(runs)), skipped


def load(run: Path) -> dict:
    summary = run / "summary.json"
    steps, metrics = read_curves(run)
    return {
        "config": json.loads((run / "config.json").read_text()),
        "summary": json.loads(summary.read_text()) if summary.is_file() else {},
        "metrics": metrics,
        "steps": steps,
    }


def differing_fields(configs: list[dict]) -> list[str]:
    keys = sorted(set().union(*configs) - _NOISE)
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def compare_table(runs: list[Path]) -> pd.DataFrame:
    loaded = [load(r) for r in runs]
    fields = differing_fields([d["config"] for d in loaded])
    rows = []
    for run, d in zip(runs, loaded):
        s, c = d["summary"], d["config"]
        # a run with no summary yet is still going, or was killed before it could write one
        status = s.get("status", "running or killed")
        commit = (c.get("git_commit") or "")[:10] + ("+dirty" if c.get("git_dirty") else "")
        rows.append(
            {
                "run": run.name,
                "job_type": c.get("job_type", "train"),
                "status": status,
                "config_hash": c.get("config_hash"),
                **{f: c.get(f) for f in fields},
                "final_val_acc": s.get("final_val_acc"),
                "best_val_acc": s.get("best_val_acc"),
                "final_test_acc": s.get("final_test_acc"),
                "best_test_acc": s.get("best_test_acc"),
                "train_seconds": s.get("train_seconds"),
                "commit": commit or None,
            }
        )
    table = pd.DataFrame(rows)
    # accuracy columns of a split no run has (validation, say) and an unknown commit say nothing
    optional = [
        "final_val_acc",
        "best_val_acc",
        "final_test_acc",
        "best_test_acc",
        "commit",
        "config_hash",
    ]
    return table.drop(columns=[c for c in optional if table[c].isna().all()])


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("runs", nargs="+", help="run folders, glob patterns, or a folder of runs")
    ap.add_argument(
        "--out", default=None, help="path stem for the CSV and PNG (default runs/compare_<time>)"
    )
    args = ap.parse_args(argv)
    runs, skipped = find_runs(args.runs)
    if skipped:
        print(
            f"skipped {sum(skipped.values())} folders: "
            + ", ".join(f"{n} ({why})" for why, n in skipped.items()),
            file=sys.stderr,
        )
    out = Path(args.out or f"runs/compare_{time.strftime('%Y%m%d-%H%M%S')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    table = compare_table(runs)
    table.to_csv(out.with_suffix(".csv"), index=False)
    png = plot_curves({r.name: read_curves(r) for r in runs}, out.with_suffix(".png"))
    with pd.option_context("display.width", 250, "display.max_columns", 60):
        print(table.to_string(index=False, float_format="%.4f"))
    print(f"table: {out.with_suffix('.csv')}  curves: {png}")
    return table


if __name__ == "__main__":
    main()
