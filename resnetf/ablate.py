"""An ablation in one command: the experiment's recipe and variants of it, N seeds each, and each
variant's difference to the base with a 95% interval.

    resnetf ablate experiments/fast94.py --seeds 5 --vary alternating_flip=False tta=none \
        lookahead=0 [-- --data_dir=/data --epochs=3]
    python -m resnetf.ablate ...                                       (the same)

Each `--vary` item is one variant: FIELD=VALUE, or several fields separated by commas
(`lookahead=0,ema=0.99`). Flags after `--` change the base (and so every variant). Runs are
interleaved, base s0, variant-1 s0, ..., base s1, ..., so that drift on a shared machine hits
every config alike; each is an ordinary run in its config's W&B group. Run again with the same
command, an interrupted ablation skips every run it finds finished in --runs_dir (same config
hash, seed and data) and does the rest. The runs evaluate the test split, as the airbench
paper's tables do, or with --val_size N the validation split only (the test split untouched);
the table says which. Output: runs/ablate_<experiment>_<time>/ablation.csv and ablation.png (a
forest plot: each variant's difference to the base with its interval, zero marked), the table
printed, and one W&B run (job_type=ablation) holding both.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from . import launch, stats
from .claims import run_claimed
from .config import Config, ConfigError, coerce, config_hash, load_experiment, parse
from .data import DataError, load_cifar10
from .plots import draw_differences, subplots
from .repeat import spread
from .tracking import Tracker, check_runs_dir
from .train import Context, RunStopped, TrainingDiverged

# --- the configs: the base and its variants, checked before anything runs ------------------------


def parse_variant(item: str, base: Config) -> dict:
    """`a=1,b=x` -> {a: 1, b: 'x'}, each value as its field's type reads it."""
    changes = {}
    for part in item.split(","):
        name, sep, text = part.partition("=")
        if not sep or not name:
            raise ConfigError(f"vary: {item!r} is not FIELD=VALUE[,FIELD=VALUE...]")
        changes[name.strip()] = coerce(name.strip(), text.strip())
    return changes


def variants(base: Config, items: list[str]) -> list[tuple[str, Config]]:
    """(label, config) of the base and of each --vary item: each a valid config that computes
    something else than the base and than every other variant."""
    configs = [("base", base)]
    for item in items:
        changes = parse_variant(item, base)
        try:
            # what a change switches off (Muon's fields under optimizer=sgd) is dropped
            variant = base.switched(**changes).validate()
        except ConfigError as e:
            raise ConfigError(f"vary {item}: {e}") from None
        same = next((label for label, c in configs if config_hash(c) == config_hash(variant)), None)
        if same is not None:
            raise ConfigError(
                f"vary {item}: computes the same as {same} (its fields already have these "
                f"values, or change nothing a run computes)"
            )
        configs.append((",".join(f"{k}={v}" for k, v in changes.items()), variant))
    return configs


# --- the runs: interleaved over seeds, finished ones found again ----------------------------------


def run_one(cfg: Config, context: Context, cifar, label: str) -> tuple[dict, str]:
    """One run's summary and how it came (resnetf.claims: "done" already, "resumed", "ran"),
    through its claim, so an ablation overlapping another command shares its runs; a run that
    diverges is recorded as diverged (its accuracy as it ended) and the others go on."""
    try:
        return run_claimed(cfg, cifar, context)
    except TrainingDiverged as e:
        print(f"{label} seed {cfg.seed} diverged ({e}); recorded, going on", file=sys.stderr)
        if e.summary is None:
            raise
        return e.summary, "ran"


def run_all(configs, seeds: list[int], cifar) -> pd.DataFrame:
    """One row per run: the variant, the seed, its accuracies and train seconds; here, one run
    after another, or on --launcher's tasks (resnetf.launch), in the same interleaved order."""
    base = configs[0][1]
    if base.launcher != "inline":
        runs = [launch.Run(label, cfg.replace(seed=s)) for s in seeds for label, cfg in configs]
        summaries = launch.run_many(runs, base, f"ablate_{base.name}", cifar.fingerprint())
        return pd.DataFrame([{"variant": x.pop("label"), **x} for x in summaries])
    rows = []
    for seed in seeds:
        for label, cfg in configs:
            print(f"ablation: {label} seed {seed}")
            context = Context(tags=("ablation",))
            summary, how = run_one(cfg.replace(seed=seed), context, cifar, f"ablation: {label}")
            if how == "done":
                print(f"ablation: {label} seed {seed} already done ({summary.get('run_dir')})")
            rows.append({"variant": label, "seed": seed, **summary})
    return pd.DataFrame(rows)


# --- the answer: differences with intervals -------------------------------------------------


def ablation_table(runs: pd.DataFrame, configs, metric: str) -> pd.DataFrame:
    """One row per config: n, how many diverged, mean and std of the metric and of train seconds;
    for each variant, its difference to the base with Welch's 95% interval and, over the seeds
    both ran, the paired one (stats.summarize), p-values and the seeds that would resolve it.
    A diverged run counts with the accuracy it had when it stopped (none: left out)."""
    by_seed = {
        label: runs[runs["variant"] == label].set_index("seed")[metric].astype(float).dropna()
        for label, _ in configs
    }
    rows = []
    for label, cfg in configs:
        mine = runs[runs["variant"] == label]
        mean, std = spread(by_seed[label])
        sec_mean, _ = spread(mine["train_seconds"])
        row = {"variant": label, "config_hash": config_hash(cfg), "n": len(mine), "mean": mean}
        diverged = int((mine.get("status", pd.Series(dtype=str)) == "diverged").sum())
        row.update(std=std, train_seconds=sec_mean, n_diverged=diverged)
        if label == "base":
            pass
        elif min(len(by_seed["base"]), len(by_seed[label])) >= stats.MIN_SEEDS:
            row.update(stats.summarize(by_seed["base"], by_seed[label]))
        else:  # too few runs with an accuracy (diverged before any evaluation): no interval
            row.update(diff=mean - by_seed["base"].mean(), ci_low=None, ci_high=None, p_value=None)
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_figure(table: pd.DataFrame, metric: str, title: str):
    rows = table[table["variant"] != "base"].assign(label=lambda t: t["variant"])
    fig, ax = subplots(1, 1, figsize=(9, 1.6 + 0.55 * len(rows)))
    draw_differences(ax, rows.reset_index(drop=True), metric, "the base")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def report(table: pd.DataFrame, base: Config, metric: str, seeds: list[int], out: Path) -> None:
    table.to_csv(out / "ablation.csv", index=False)
    split = {"final_test_acc": "test", "final_val_acc": "validation"}[metric]
    title = (
        f"{base.name}: each variant's difference to the base, {split} accuracy, "
        f"{len(seeds)} seeds each (95% intervals: paired over the shared seeds, and Welch's)"
    )
    ablation_figure(table, metric, title).savefig(out / "ablation.png", bbox_inches="tight")
    tracker = Tracker(
        base.replace(name=f"ablate_{base.name}", wandb_group=f"ablate_{base.name}"),
        out,
        extra_config={"variants": list(table["variant"]), "seed_list": seeds, "metric": metric},
        job_type="ablation",
        figures=False,
    )
    tracker.log_table("ablation", table.astype(str))
    tracker.log_image("ablation", out / "ablation.png", title)
    tracker.close({"metric": metric, "variants": len(table) - 1, "seeds": len(seeds)})
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(f"\n{title}; differences in points are 100 x these fractions")
        print(table.to_string(index=False, float_format="%.4f"))
    print(f"ablation: {out / 'ablation.csv'}  figure: {out / 'ablation.png'}")


# --- the command ---------------------------------------------------------------------------------


def arguments(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(
        prog="resnetf ablate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("experiment", help="an experiment file (experiments/fast94.py)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per config (>= 2; default 3)")
    ap.add_argument(
        "--vary", nargs="+", required=True, metavar="FIELD=VALUE[,FIELD=VALUE]", help="variants"
    )
    return ap.parse_args(argv[:split]), argv[split + 1 :]


def prepare(argv: list[str]):
    """Everything checked before any run or file: (base, configs, seeds, data)."""
    args, overrides = arguments(argv)
    if args.seeds < stats.MIN_SEEDS:
        raise ConfigError(
            f"seeds: an interval needs {stats.MIN_SEEDS} seeds a side (got --seeds {args.seeds})"
        )
    try:
        defaults = load_experiment(args.experiment)
    except (FileNotFoundError, AttributeError) as e:
        raise ConfigError(f"{args.experiment} is not an experiment file ({e})") from None
    base = parse(defaults, overrides).replace(seeds=1)
    if base.val_size:  # decisions on the validation split leave the test split untouched
        base = base.replace(use_test=False)
    configs = variants(base, args.vary)
    check_runs_dir(base.runs_dir)
    launch.check(base)
    cifar = load_cifar10(base.data_dir, download=base.download)
    return base, configs, list(range(base.seed, base.seed + args.seeds)), cifar


def main(argv=None) -> pd.DataFrame:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        base, configs, seeds, cifar = prepare(argv)
    except (ConfigError, DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    metric = "final_val_acc" if base.val_size else "final_test_acc"
    print(
        f"ablation of {base.name}: {len(configs) - 1} variants and the base, seeds {seeds[0]}.."
        f"{seeds[-1]}, on the {'validation' if base.val_size else 'test'} split"
    )
    try:
        runs = run_all(configs, seeds, cifar)
    except RunStopped as e:
        print(f"stopped: {e}; the same command goes on where it stopped", file=sys.stderr)
        raise SystemExit(130 if e.failed else 0) from None
    except launch.LaunchFailed as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        print("finished runs are kept: the same command runs only the rest", file=sys.stderr)
        raise SystemExit(1) from None
    except (DataError, ValueError, OSError) as e:
        print(f"error: {e}; finished runs are kept and skipped on a rerun", file=sys.stderr)
        raise SystemExit(1) from None
    out = Path(base.runs_dir) / f"ablate_{base.name}_{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    table = ablation_table(runs, configs, metric)
    report(table, base, metric, seeds, out)
    return table


if __name__ == "__main__":
    main()
