"""Run one experiment for several seeds and print mean +- std of test accuracy and time.

    python benchmarks/seeds.py experiments/oc_24ep.py --seeds 3 [-- --data_dir=/data ...]

Each seed is its own process (a clean GPU and loader state), with its own run folder under
--out. The per-run table and the aggregate are printed and written as CSV next to the runs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", help="path of an experiment file, e.g. experiments/oc_24ep.py")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    ap.add_argument("--first_seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="runs folder (default runs/seeds_<time>)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = ap.parse_args(argv[:cut]), argv[cut + 1:]  # after --: the experiment's flags
    out = Path(args.out or f"runs/seeds_{Path(args.experiment).stem}_{time.strftime('%Y%m%d-%H%M%S')}")

    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        seed_dir = out / f"seed{seed}"
        cmd = [sys.executable, args.experiment, f"--seed={seed}", f"--runs_dir={seed_dir}", *extra]
        print("$", " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            print(f"seed {seed} failed; continuing", file=sys.stderr)
            continue
        summary = json.loads(next(seed_dir.glob("*/summary.json")).read_text())
        rows.append({"seed": seed, **{k: summary[k] for k in
                                       ("final_test_acc", "best_test_acc", "train_seconds",
                                        "wall_seconds", "parameters")}})
    if not rows:
        raise SystemExit("no run finished")
    table = pd.DataFrame(rows)
    table.to_csv(out / "seeds.csv", index=False)
    print(table.to_string(index=False, float_format="%.4f"))
    acc, sec = table["final_test_acc"] * 100, table["train_seconds"]
    # std is the sample std (n-1); with one run it is undefined and printed as nan
    print(f"{Path(args.experiment).stem}: test accuracy {acc.mean():.2f} +- {acc.std():.2f} % "
          f"(n={len(table)}), train seconds {sec.mean():.1f} +- {sec.std():.1f}; {out}/seeds.csv")


if __name__ == "__main__":
    main()
