"""What one poll of a launch's driver costs beside many other run folders. Prints the figures;
asserts nothing.

    python -m resnetf.bench_poll --folders 10000 --runs 20

A driver polls every 2 s until its runs are done. Before claims it scanned runs_dir (every
config.json and summary.json: `launch.run_folders`), so a poll grew with every run ever made
there; now it reads its own runs' claim records (`launch._status` per run), so it grows with its
own runs only. Both are timed here on the same folder: --folders finished run folders of other
work, and --runs claimed runs of this work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from . import claims, launch
from .config import Config


def fill(runs_dir: Path, folders: int, runs: int) -> list[launch.Run]:
    """`folders` run folders of other configs, and `runs` claimed, finished runs of this work."""
    for i in range(folders):
        folder = runs_dir / f"other_s{i}_20260101-000000"
        folder.mkdir(parents=True)
        key = {"config_hash": f"other{i}", "seed": i, "data_fingerprint": "fp"}
        (folder / "config.json").write_text(json.dumps({**key, "job_type": "train"}))
        (folder / "summary.json").write_text(json.dumps({"status": "finished"}))
    mine = [
        launch.Run("bench", Config(name="bench", seed=s, runs_dir=str(runs_dir)))
        for s in range(runs)
    ]
    for r in mine:
        with claims.take(runs_dir, r.key("fp")) as claim:
            claim.begin()
            claim.end("finished", {"status": "finished"})
    return mine


def timed(fn, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m resnetf.bench_poll", description=__doc__)
    ap.add_argument("--folders", type=int, default=10_000, help="other run folders in runs_dir")
    ap.add_argument("--runs", type=int, default=20, help="this launch's runs")
    ap.add_argument("--repeats", type=int, default=5, help="polls timed (the median is shown)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = Path(tmp)
        mine = fill(runs_dir, args.folders, args.runs)
        cfg = mine[0].cfg
        scan = timed(lambda: launch.run_folders(str(runs_dir)), args.repeats)
        own = timed(lambda: [launch._status(cfg, r, "fp") for r in mine], args.repeats)
    print(
        f"one poll, {args.runs} runs beside {args.folders:,} other run folders (median of "
        f"{args.repeats}): scan of runs_dir {scan * 1000:.1f} ms, own claim records "
        f"{own * 1000:.2f} ms ({scan / own:.0f}x)"
    )


if __name__ == "__main__":
    main()
