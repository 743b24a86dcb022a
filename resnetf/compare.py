"""Compare runs without the W&B UI: a table and one figure from their run folders.

    python -m resnetf.compare runs/oc_24ep_* runs/fast94_s0_*      (folders or glob patterns)

The table has one row per run: its name, the config fields that differ between the runs, final
and best test accuracy and train seconds; it is printed and written as CSV. The figure shows the
runs' LR curves (per step) and test accuracy curves (per epoch).
"""
from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path

import pandas as pd

# recorded per run but never a difference worth a column
_NOISE = {"runs_dir", "progress", "seeds", "seed_list"}
_RUN_FILES = ("config.json", "summary.json", "metrics.csv")  # a training run, not an aggregate


def find_runs(patterns: list[str]) -> list[Path]:
    runs = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)) or [pattern]:
            path = Path(path)
            if all((path / f).is_file() for f in _RUN_FILES):
                runs.append(path)
            elif path.is_dir():  # a folder of runs, e.g. runs/
                runs += sorted(p.parent for p in path.glob("*/metrics.csv")
                               if all((p.parent / f).is_file() for f in _RUN_FILES))
    if not runs:
        raise SystemExit(f"no run folders (with {', '.join(_RUN_FILES)}) in {patterns}")
    return list(dict.fromkeys(runs))


def load(run: Path) -> dict:
    return {"config": json.loads((run / "config.json").read_text()),
            "summary": json.loads((run / "summary.json").read_text()),
            "metrics": pd.read_csv(run / "metrics.csv"),
            "steps": pd.read_csv(run / "steps.csv") if (run / "steps.csv").exists() else None}


def differing_fields(configs: list[dict]) -> list[str]:
    keys = sorted(set().union(*configs) - _NOISE)
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def compare_table(runs: list[Path]) -> pd.DataFrame:
    loaded = [load(r) for r in runs]
    fields = differing_fields([d["config"] for d in loaded])
    rows = []
    for run, d in zip(runs, loaded):
        s = d["summary"]
        rows.append({"run": run.name, **{f: d["config"].get(f) for f in fields},
                     "final_test_acc": s.get("final_test_acc"), "best_test_acc": s.get("best_test_acc"),
                     "train_seconds": s.get("train_seconds"), "status": s.get("status")})
    return pd.DataFrame(rows)


def plot_curves(runs: list[Path], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, (lr_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 5), dpi=100)
    for run in runs:
        d = load(run)
        if d["steps"] is not None:
            lr_ax.plot(d["steps"]["step"], d["steps"]["lr"], label=run.name)
        if "test_acc" in d["metrics"]:
            m = d["metrics"].dropna(subset=["test_acc"])
            acc_ax.plot(m["epoch"], m["test_acc"], marker=".", label=run.name)
    lr_ax.set(xlabel="step", ylabel="learning rate", title="LR schedule")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    acc_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders, glob patterns, or a folder of runs")
    ap.add_argument("--out", default=None, help="path stem for the CSV and PNG "
                                                "(default runs/compare_<time>)")
    args = ap.parse_args(argv)
    runs = find_runs(args.runs)
    out = Path(args.out or f"runs/compare_{time.strftime('%Y%m%d-%H%M%S')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    table = compare_table(runs)
    table.to_csv(out.with_suffix(".csv"), index=False)
    png = plot_curves(runs, out.with_suffix(".png"))
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(table.to_string(index=False, float_format="%.4f"))
    print(f"table: {out.with_suffix('.csv')}  curves: {png}")
    return table


if __name__ == "__main__":
    main()
