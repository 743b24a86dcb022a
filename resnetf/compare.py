"""Compare runs without the W&B UI: a table and one figure from their run folders.

    python -m resnetf.compare runs/                           (every run below, trials included)
    python -m resnetf.compare 'runs/oc_24ep_*' runs/fast94_s0_*   (folders or glob patterns)

The table has one row per training run (plain runs, tuning trials, retrained bests, interrupted
runs): its name, job type and status, the config fields that differ between the runs, final and
best validation and test accuracy, train seconds and the git commit that produced it; it is
printed and written as CSV. The figure answers "which run is better": each run's LR, training
loss (log scale) and train/val/test accuracy against epochs (comparable across batch sizes), one
colour per run in every panel (the best 12 in colour, the rest grey), a legend outside the
panels naming each run by the settings that differ (a note says what they share), and the
configs ranked by best validation accuracy (else test), mean +- std over seeds that share a
config. With `--baseline SELECTOR` (a config hash, or a glob of run folders that share one
config) every other config gets its difference to the baseline in final test accuracy
(validation where no run has test) with Welch's 95% interval, the p-value, n per side and the
seeds per config that would resolve a difference of that size (resnetf.stats): columns of the
table, a table of their own and a forest panel of the figure. Both go to
runs/compare/compare.{csv,png} unless --out says otherwise, replaced at every call. Folders that
are not training runs (seed aggregates, LR range tests, the benchmark's warm-up runs, anything
without a config.json) are left out, and stderr says how many and why.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from . import stats
from .files import FileDamaged, read_json
from .plots import (
    Curves,
    draw,
    draw_differences,
    label_axes,
    palette,
    read_curves,
    splits_in,
    steps_per_epoch,
    subplots,
)

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
COLOURED = 12  # runs drawn in colour, best first; the rest in grey, so 20+ runs stay legible
SHARED_SHOWN = (
    "name",
    "model",
    "backend",
    "epochs",
    "batch_size",
    "max_lr",
    "width",
    "tta",
    "amp_dtype",
    "val_size",
)


def _kind(folder: Path) -> tuple[bool, str]:
    """(is a training run, why not)."""
    config = folder / "config.json"
    if not config.is_file():
        return False, "no config.json"
    try:  # a damaged file skips its folder, said with the file's name
        job = read_json(config).get("job_type", "train")
        if (folder / "summary.json").is_file():
            read_json(folder / "summary.json")
    except FileDamaged as e:
        print(f"warning: skipped {folder}: {e}", file=sys.stderr)
        return False, "a damaged file"
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
        "config": read_json(run / "config.json"),
        "summary": read_json(summary) if summary.is_file() else {},
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
                "seed": c.get("seed"),  # pairs a config's runs with the baseline's
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


def run_labels(configs: list[dict], fields: list[str]) -> list[str]:
    """Each run named by the settings that differ between the compared runs (its W&B group when
    none differ)."""

    def short(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return [
        ", ".join(f"{k}={short(c.get(k))}" for k in fields) or c.get("wandb_group", "run")
        for c in configs
    ]


def shared_note(configs: list[dict]) -> str:
    same = [
        k
        for k in SHARED_SHOWN
        if len({json.dumps(c.get(k)) for c in configs}) == 1 and configs[0].get(k) is not None
    ]
    return "shared: " + ", ".join(f"{k}={configs[0][k]}" for k in same)


def ranking(table: pd.DataFrame, labels: list[str], fields: list[str]) -> pd.DataFrame:
    """Configs ranked by their best validation accuracy (test where no run has validation),
    mean and sample std over the seeds that share a config."""
    metric = (
        "best_val_acc"
        if "best_val_acc" in table and table["best_val_acc"].notna().any()
        else "best_test_acc"
    )
    frame = table.assign(label=labels, score=table.get(metric))
    key = (
        "config_hash" if "config_hash" in frame and frame["config_hash"].notna().all() else "label"
    )
    if "seed" in fields:  # a config's seeds are one bar: name it without its seed
        frame["label"] = [
            ", ".join(p for p in lab.split(", ") if not p.startswith("seed=")) or "seeds"
            for lab in frame["label"]
        ]
    ranked = frame.groupby(key).agg(
        label=("label", "first"),
        mean=("score", "mean"),
        std=("score", "std"),
        runs=("score", "size"),
    )
    return ranked.sort_values("mean", ascending=False).assign(metric=metric)


def final_metric(table: pd.DataFrame) -> str:
    """What differences are measured in: final test accuracy, else final validation accuracy
    (the final epoch's, not the best: the best of several evaluations is biased upwards)."""
    if "final_test_acc" in table and table["final_test_acc"].notna().any():
        return "final_test_acc"
    return "final_val_acc"


def select_baseline(table: pd.DataFrame, runs: list[Path], selector: str) -> str:
    """The config hash a --baseline names: a hash itself, or run folders (a glob) of one config."""
    hashes = table["config_hash"] if "config_hash" in table else pd.Series([None] * len(runs))
    if selector in set(hashes.dropna()):
        return selector
    matched = {Path(p).resolve() for p in glob.glob(selector)}
    picked = {h for run, h in zip(runs, hashes) if run.resolve() in matched and pd.notna(h)}
    if len(picked) != 1:
        raise SystemExit(
            f"error: --baseline {selector!r} "
            + (
                f"matches runs of {len(picked)} configs ({', '.join(sorted(picked))}); "
                "name one config hash"
                if picked
                else "is no config hash of the compared runs and matches none of their folders"
            )
        )
    return picked.pop()


def differences(table: pd.DataFrame, labels: list[str], baseline: str) -> pd.DataFrame:
    """One row per config other than the baseline: its mean, difference to the baseline with
    Welch's 95% interval and p-value, and, where both ran the same seeds, the paired interval
    (stats.summarize), n a side and seeds needed; a config with one run gets no interval."""
    metric = final_metric(table)
    frame = table.assign(label=labels)

    def by_seed(rows: pd.DataFrame) -> pd.Series:
        return rows.set_index("seed")[metric].astype(float).dropna()

    base = by_seed(frame[frame["config_hash"] == baseline])
    if len(base) < stats.MIN_SEEDS:
        raise SystemExit(
            f"error: --baseline {baseline} has {len(base)} run(s) with {metric}: an interval "
            f"needs {stats.MIN_SEEDS} seeds a side"
        )
    rows = []
    for config, group in frame.groupby("config_hash", sort=False):
        values = by_seed(group)
        if config == baseline or values.empty:
            continue
        row = {"config_hash": config, "label": group["label"].iloc[0], "mean": values.mean()}
        if len(values) >= stats.MIN_SEEDS:
            row.update(stats.summarize(base, values))
        else:
            row.update(diff=values.mean() - base.mean(), ci_low=None, ci_high=None, p_value=None)
            row.update(n_base=len(base), n=len(values), seeds_needed=None, design="one run")
        rows.append(row)
    out = pd.DataFrame(rows, columns=DIFF_COLUMNS)
    floats = ("ci_low", "ci_high", "p_value", "paired_ci_low", "paired_ci_high", "paired_p_value")
    return out.astype({c: float for c in floats}).assign(metric=metric)


DIFF_COLUMNS = [
    "config_hash",
    "label",
    "mean",
    "diff",
    "ci_low",
    "ci_high",
    "p_value",
    "design",
    "paired_ci_low",
    "paired_ci_high",
    "paired_p_value",
    "correlation",
    "n_base",
    "n",
    "seeds_needed",
]


def config_labels(configs: list[dict]) -> list[str]:
    """Each run named by the settings that differ between configs (its seed left out)."""
    return run_labels(configs, [f for f in differing_fields(configs) if f != "seed"])


def compare_figure(runs: list[Path], table: pd.DataFrame, diffs: pd.DataFrame | None = None):
    """The figure: LR, training loss and accuracy of every run against epochs, one colour per
    run in every panel (the best COLOURED runs; the others grey), the legend outside naming
    each by what differs, a ranking of the configs and, with a baseline, each config's
    difference to it with its interval."""
    loaded = [load(r) for r in runs]
    configs = [d["config"] for d in loaded]
    fields = differing_fields(configs)
    labels = run_labels(configs, fields)
    score = table.get("best_val_acc", table.get("best_test_acc"))
    score = (
        score
        if score is not None and score.notna().any()
        else table.get("best_test_acc", pd.Series([None] * len(runs)))
    )
    order = sorted(
        range(len(runs)), key=lambda i: -(score.iloc[i] if pd.notna(score.iloc[i]) else -1)
    )
    colours = palette("tab20" if len(runs) > 10 else "tab10")
    extra = diffs is not None and len(diffs) > 0
    fig, _ = subplots(figsize=(18, 9 + 0.25 * len(runs) + (4 if extra else 0)))
    heights = [1, 0.35 + 0.05 * len(runs)] + ([0.3 + 0.06 * len(diffs)] if extra else [])
    grid = fig.add_gridspec(len(heights), 3, height_ratios=heights)
    axes = tuple(fig.add_subplot(grid[0, k]) for k in range(3))
    curves = []
    for rank, i in enumerate(order):
        run = Curves(
            labels[i], loaded[i]["steps"], loaded[i]["metrics"], steps_per_epoch(configs[i])
        )
        coloured = rank < COLOURED
        draw(axes, run, colours(rank % colours.N) if coloured else "0.6", faint=not coloured)
        curves.append(run)
    label_axes(axes, splits_in(curves))
    draw_ranking(fig.add_subplot(grid[1, :]), ranking(table, labels, fields))
    if extra:
        base = diffs.attrs.get("baseline_label", "the baseline")
        draw_differences(fig.add_subplot(grid[2, :]), diffs, diffs["metric"].iloc[0], base)
    handles, names = axes[0].get_legend_handles_labels()
    keep = [k for k, name in enumerate(names) if order.index(labels.index(name)) < COLOURED]
    fig.legend(
        [handles[k] for k in keep],
        [names[k] for k in keep],
        loc="upper left",
        bbox_to_anchor=(1.0, 0.95),
        fontsize=8,
        title=f"runs ({len(runs)}; the best {min(COLOURED, len(runs))} in colour)",
    )
    fig.suptitle(f"{len(runs)} runs; {shared_note(configs)}", fontsize=10)
    fig.tight_layout()
    return fig


def draw_ranking(bar_ax, ranked: pd.DataFrame) -> None:
    """The configs as bars, best on top, with the spread of their seeds."""
    y = range(len(ranked))[::-1]
    bar_ax.barh(
        list(y),
        100 * ranked["mean"],
        xerr=100 * ranked["std"].fillna(0),
        color="tab:blue",
        alpha=0.7,
    )
    bar_ax.set_yticks(
        list(y), [f"{lab} (n={n})" for lab, n in zip(ranked["label"], ranked["runs"])], fontsize=7
    )
    low = 100 * (ranked["mean"] - ranked["std"].fillna(0)).min()
    bar_ax.set(
        xlim=(max(0, low - 2), min(100, 100 * ranked["mean"].max() + 2)),
        xlabel=f"{ranked['metric'].iloc[0].replace('_', ' ')} (%), mean +- std over seeds",
        title="configs ranked",
    )


def plot_compare(runs: list[Path], table: pd.DataFrame, path: Path, diffs=None) -> Path:
    compare_figure(runs, table, diffs).savefig(path, bbox_inches="tight")
    return path


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("runs", nargs="+", help="run folders, glob patterns, or a folder of runs")
    ap.add_argument(
        "--baseline",
        metavar="SELECTOR",
        help="a config hash, or a glob of run folders of one config: every other config's "
        "difference to it, with a 95%% interval (Welch), p-value and n per side",
    )
    ap.add_argument(
        "--out",
        default="runs/compare/compare",
        help="path stem of the CSV and PNG, replaced at every call (default runs/compare/compare)",
    )
    return ap


def main(argv=None) -> pd.DataFrame:
    args = parser().parse_args(argv)
    runs, skipped = find_runs(args.runs)
    if skipped:
        print(
            f"skipped {sum(skipped.values())} folders: "
            + ", ".join(f"{n} ({why})" for why, n in skipped.items()),
            file=sys.stderr,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = compare_table(runs)
    diffs = None
    if args.baseline:
        baseline = select_baseline(table, runs, args.baseline)
        labels = config_labels([load(r)["config"] for r in runs])
        diffs = differences(table, labels, baseline)
        diffs.attrs["baseline_label"] = labels[list(table["config_hash"]).index(baseline)]
        columns = ["diff", "ci_low", "ci_high", "p_value"]
        table = table.merge(diffs[["config_hash", *columns]], on="config_hash", how="left")
    table.to_csv(out.with_suffix(".csv"), index=False)
    png = plot_compare(runs, table, out.with_suffix(".png"), diffs)
    with pd.option_context("display.width", 250, "display.max_columns", 60):
        print(table.to_string(index=False, float_format="%.4f"))
        if diffs is not None:
            print(
                f"\ndifferences in {diffs.attrs.get('metric', final_metric(table))} to the "
                f"baseline {baseline} ({diffs.attrs['baseline_label']}), 95% intervals:"
            )
            print(diffs.drop(columns="metric").to_string(index=False, float_format="%.4f"))
    print(f"table: {out.with_suffix('.csv')}  figure: {png}")
    return table


if __name__ == "__main__":
    main()
