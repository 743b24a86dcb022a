"""What pruning over seeds buys a seed-robust study, and what the speedrun game finds, on one
small setting. Prints the figures and writes them as CSV; asserts nothing.

    python -m resnetf.bench_study experiments/fast94.py --trials 16 --trial_seeds 3 \\
        --out runs/bench_study -- --data_dir=DATA --width=0.25 --epochs=1.5 --batch_size=256

Three studies of the same space (epochs, width and max_lr around the experiment's config, which
is every study's trial 0) and the same sampler seed:
  unpruned  --pruner none: every trial trains its K seeds
  pruned    --pruner auto: successive halving over seeds
  game      --objectives pflop --min_val_acc FLOOR, its answer retrained over --retrain_seeds
            seeds on the test split with the one-sided test against FLOOR (default: the
            unpruned study's trial 0 mean, the experiment's own config, minus --floor_margin)
For each: runs trained, wall seconds, the answer and its 95% interval; and whether the unpruned
best's mean lies inside the pruned best's interval.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import yaml
from optuna.trial import TrialState

from .config import load_experiment


def space(cfg, widths: list[float], epochs: tuple[float, float]) -> dict:
    return {
        "program": "bench_study",
        "parameters": {
            "epochs": {"distribution": "uniform", "min": epochs[0], "max": epochs[1]},
            "width": {"values": widths},
            "max_lr": {
                "distribution": "log_uniform_values",
                "min": cfg.max_lr / 3,
                "max": cfg.max_lr * 3,
            },
        },
    }


def one_study(experiment: str, flags: list[str], out: Path, name: str) -> dict:
    from . import main

    started = time.perf_counter()
    study = main(load_experiment(experiment), [*flags, f"--study={name}"])
    seconds = time.perf_counter() - started
    trials = study.get_trials(deepcopy=False)
    runs = sum(len(t.user_attrs.get("seed_values") or []) for t in trials)
    return {"study": study, "seconds": seconds, "runs": runs, "trials": trials}


def game_study(args, common: list[str], out: Path, floor: float) -> dict:
    """The speedrun game: the cheapest trial whose mean validation accuracy reaches `floor`,
    retrained over --retrain_seeds seeds with the one-sided test against it."""
    game = [
        *common,
        "--objectives=pflop",
        f"--min_val_acc={floor}",
        "--retrain_best",
        f"--seeds={args.retrain_seeds}",
        f"--target_acc={floor}",
    ]
    return one_study(args.experiment, game, out, "game")


def print_game(args, common: list[str], out: Path, floor: float) -> None:
    from .tune import cheapest_feasible

    result = game_study(args, common, out, floor)
    row = answer_row("game", result, cheapest_feasible(result["study"]))
    pd.DataFrame([row]).to_csv(out / "bench_study_game.csv", index=False)
    print(pd.DataFrame([row]).to_string(index=False, float_format="%.4g"))
    first, nan = result["trials"][0].user_attrs, float("nan")
    print(
        f"the game's floor {floor:.2%}: trial 0 (the experiment's config) "
        f"{first.get('val_acc', nan):.2%} at {first.get('pflop', nan):.4g} PFLOP, the answer "
        f"{row['best_val_acc'] or nan:.2%} at {row['best_pflop'] or nan:.4g} PFLOP"
    )


def answer_row(name: str, result: dict, best) -> dict:
    attrs = best.user_attrs if best is not None else {}
    return {
        "study": name,
        "runs_trained": result["runs"],
        "wall_seconds": round(result["seconds"], 1),
        "pruned": sum(t.state == TrialState.PRUNED for t in result["trials"]),
        "best_trial": best.number if best is not None else None,
        "best_val_acc": attrs.get("val_acc"),
        "ci_low": attrs.get("val_acc_ci_low"),
        "ci_high": attrs.get("val_acc_ci_high"),
        "best_pflop": attrs.get("pflop"),
        **({f"best_{k}": v for k, v in best.params.items()} if best is not None else {}),
    }


def arguments(argv):
    ap = argparse.ArgumentParser(prog="python -m resnetf.bench_study", description=__doc__)
    ap.add_argument("experiment")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--trial_seeds", type=int, default=3)
    ap.add_argument("--widths", type=float, nargs="+", default=[0.125, 0.25, 0.375])
    ap.add_argument("--epochs", type=float, nargs=2, default=[1.0, 2.0])
    ap.add_argument("--floor", type=float, default=None, help="the game's accuracy floor")
    ap.add_argument("--floor_margin", type=float, default=0.01)
    ap.add_argument("--retrain_seeds", type=int, default=5)
    ap.add_argument("--out", default="runs/bench_study")
    ap.add_argument(
        "--only_game",
        action="store_true",
        help="run the game's study alone (it needs --floor); a rerun continues a stopped one",
    )
    args, rest = ap.parse_known_args(argv)
    return args, [a for a in rest if a != "--"]


def main(argv=None) -> None:
    args, rest = arguments(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_experiment(args.experiment)
    sweep = out / "space.yaml"
    sweep.write_text(yaml.safe_dump(space(base, args.widths, tuple(args.epochs))))
    common = [
        *rest,
        f"--tune={args.trials}",
        f"--trial_seeds={args.trial_seeds}",
        f"--sweep={sweep.absolute()}",
        f"--runs_dir={out / 'runs'}",
        "--sampler=tpe",
    ]
    if args.only_game:
        if args.floor is None:
            raise SystemExit("--only_game: give the accuracy floor (--floor)")
        return print_game(args, common, out, args.floor)
    rows, results = [], {}
    for name, pruner in (("unpruned", "none"), ("pruned", "auto")):
        results[name] = one_study(args.experiment, [*common, f"--pruner={pruner}"], out, name)
        study = results[name]["study"]
        rows.append(answer_row(name, results[name], study.best_trial))
    trials = results["unpruned"]["trials"]
    first = next((t for t in trials if t.user_attrs.get("start_point")), None)
    if first is None or "val_acc" not in first.user_attrs:
        raise SystemExit("the experiment's config is not a point of the space: --widths, --epochs")
    start = first.user_attrs["val_acc"]
    floor = args.floor if args.floor is not None else round(start - args.floor_margin, 4)
    results["game"] = game_study(args, common, out, floor)
    from .tune import cheapest_feasible

    rows.append(answer_row("game", results["game"], cheapest_feasible(results["game"]["study"])))
    table = pd.DataFrame(rows)
    table.to_csv(out / "bench_study.csv", index=False)
    print(table.to_string(index=False, float_format="%.4f"))
    u, p = rows[0], rows[1]
    inside = p["ci_low"] is not None and p["ci_low"] <= u["best_val_acc"] <= p["ci_high"]
    print(
        f"pruning over seeds trained {p['runs_trained']} runs for {u['runs_trained']} "
        f"({p['wall_seconds']:.0f} s for {u['wall_seconds']:.0f} s); the unpruned best's mean "
        f"{u['best_val_acc']:.2%} is {'inside' if inside else 'outside'} the pruned best's 95% "
        f"interval; the game's floor {floor:.2%} (trial 0, the experiment's config: "
        f"{start:.2%} on validation), trial 0's "
        f"{results['game']['trials'][0].user_attrs.get('pflop', float('nan')):.4g} PFLOP "
        f"against the answer's {rows[2]['best_pflop']}"
    )


if __name__ == "__main__":
    main()
