"""Hostile, damaged and idle inputs, tried as a user would: each case a command line of the
repo in this folder, and what it gave (refused in one line, works, a traceback, code that ran,
accepted and ignored), counted per class of issue 36. Run it in two checkouts to compare them:

    python -m resnetf.bench_damage [--out DIR] [--only CLASS]

It prints one row per case and one line per class (good outcomes / cases). A benchmark, not a
test: it asserts nothing and uses only command lines and functions older versions have too.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import write_random_layout

CLASSES = {
    1: "a data set runs code",
    2: "a damaged file ends in a traceback",
    3: "a study lost to a cut journal",
    4: "an input accepted and ignored",
    5: "an experiment that imports its neighbour",
}
OC = "experiments/oc_24ep.py"


@dataclass
class Case:
    cls: int
    name: str
    want: str  # "refused" (one line, no traceback) or "works"
    make: object  # (ctx) -> (argv, check or None): check(proc) -> bool, for "works"


class Hostile:
    """Pickles to a call of os.system: what a hostile data file carries."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class Context:
    """The folders and the finished runs the cases damage copies of."""

    def __init__(self, out: Path):
        self.out, self.n = out, 0
        self.data = write_random_layout(out / "data", n_train=200)
        self.marker = out / "MARKER"

    def tiny(self, runs: Path, epochs: int = 1) -> list[str]:
        return [
            "--width=0.0625",
            f"--epochs={epochs}",
            "--batch_size=20",
            "--workers=0",
            "--device=cpu",
            "--wandb_mode=disabled",
            "--no_analysis",
            "--no_progress",
            f"--data_dir={self.data}",
            f"--runs_dir={runs}",
        ]

    def fresh(self, name: str) -> Path:
        self.n += 1
        path = self.out / f"{self.n:02d}_{name}"
        path.mkdir(parents=True)
        return path

    def finished_run(self, width: float = 0.0625) -> Path:
        """A copy of a finished one-epoch run (trained once per width)."""
        key = f"run_{width}"
        if not hasattr(self, key):
            runs = self.out / f"made_{width}"
            argv = [sys.executable, OC, *self.tiny(runs), f"--width={width}"]
            subprocess.run(argv, capture_output=True, check=True, timeout=600)
            setattr(self, key, next(p for p in runs.iterdir() if (p / "model.pt").exists()))
        copy = self.fresh("run") / "runs" / getattr(self, key).name
        shutil.copytree(getattr(self, key), copy)
        return copy


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def parse_only(*flags: str, experiment: str = OC) -> list[str]:
    return python(
        "from resnetf.config import parse, load_experiment; "
        f"parse(load_experiment({experiment!r}), {list(flags)!r})"
    )


# --- the cases, by class -------------------------------------------------------------------------


def hostile_data(file: str):
    def make(ctx):
        data = ctx.fresh("data") / "d"
        shutil.copytree(ctx.data, data)
        (data / "cifar-10-batches-py" / file).write_bytes(
            pickle.dumps(Hostile(f"touch {ctx.marker}"))
        )
        return [sys.executable, OC, *ctx.tiny(ctx.fresh("runs")), f"--data_dir={data}"], None

    return make


def cut_summary(ctx):
    run = ctx.finished_run()
    (run / "summary.json").write_text((run / "summary.json").read_text()[:25])
    other = ctx.finished_run()
    argv = [sys.executable, "-m", "resnetf.compare", str(run), str(other)]
    # works: the other folder compared, the damaged one named
    return argv, lambda p: "summary.json" in p.stderr


def resume_config(ctx):
    run = ctx.finished_run()
    (run / "summary.json").unlink()
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "epochs": "ten"}))
    return [sys.executable, OC, f"--resume={run}"], None


def resume_other_checkpoint(ctx):
    run, wide = ctx.finished_run(), ctx.finished_run(0.125)
    (run / "summary.json").unlink()
    shutil.copy(wide / "checkpoint.pt", run / "checkpoint.pt")
    return [sys.executable, OC, f"--resume={run}"], None


def model_file(damage):
    def make(ctx):
        import torch

        run = ctx.finished_run()
        saved = torch.load(run / "model.pt", weights_only=True)
        damage(saved)
        torch.save(saved, run / "model.pt")
        image = run.parent / "cat.png"
        from PIL import Image

        Image.new("RGB", (32, 32)).save(image)
        return [sys.executable, "-m", "resnetf.predict", str(run), str(image)], None

    return make


def sweep(text: str):
    def make(ctx):
        folder = ctx.fresh("sweep")
        (folder / "sweep.yaml").write_text(text)
        runs = folder / "runs"
        argv = [sys.executable, OC, *ctx.tiny(runs, epochs=3), "--tune=1"]
        return [*argv, f"--sweep={folder / 'sweep.yaml'}"], None

    return make


def launch_record(damage):
    """A two-seed launch on this machine (submitit's local executor), its launch.json damaged,
    then the same command again."""

    def make(ctx):
        folder = ctx.fresh("launch")
        argv = [sys.executable, OC, *ctx.tiny(folder / "runs"), "--seeds=2", "--launcher=local"]
        argv.append(f"--launch_dir={folder / 'launch'}")
        subprocess.run(argv, capture_output=True, timeout=900)
        path = folder / "launch" / "launch.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(damage(record)))
        return argv, None

    return make


def drop_job_keys(record):
    for job in record.get("jobs", []):
        for key in ("job_id", "result", "who", "runs"):
            job.pop(key, None)
    return record


def journal(ctx):
    folder = ctx.fresh("journal")
    argv = [sys.executable, OC, *ctx.tiny(folder / "runs", epochs=3), "--study=s"]
    argv.append(f"--storage={folder / 'study.log'}")
    subprocess.run([*argv, "--tune=1"], capture_output=True, timeout=900)
    path = folder / "study.log"
    text = path.read_text()
    path.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # cut mid-line
    subprocess.run([*argv, "--tune=2"], capture_output=True, timeout=900)
    return [*argv, "--tune=3"], None


def sixteen_bit(ctx):
    path = ctx.fresh("png") / "gray16.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32), 78 * 257, dtype=np.uint16)).save(path)
    code = f"from resnetf.predict import read_images; print(read_images([{str(path)!r}])[0].mean())"
    return python(code), lambda p: p.stdout.strip() == "78.0"


def same_run_two_spellings(ctx):
    code = (
        "from resnetf.config import parse, load_experiment, config_hash, field_defaults\n"
        "e = load_experiment('experiments/fast94_speedrun.py'); d = field_defaults()\n"
        "a = parse(e, ['--optimizer=sgd'])\n"
        "b = parse(e.replace(**{n: d[n] for n in d if n.startswith('muon_')}), "
        "['--optimizer=sgd'])\n"
        "print(config_hash(a) == config_hash(b))"
    )
    return python(code), lambda p: p.stdout.strip() == "True"


def neighbour(entry: list[str]):
    def make(ctx):
        return [sys.executable, "-m", "resnetf", *entry], None

    return make


def fixed(argv):
    return lambda ctx: (argv, None)


CASES = [
    Case(1, "data_batch_1 runs a shell command", "refused", hostile_data("data_batch_1")),
    Case(1, "batches.meta runs a shell command", "refused", hostile_data("batches.meta")),
    Case(2, "launch.json not an object", "refused", launch_record(lambda r: [1, 2])),
    Case(2, "launch.json jobs lacking their keys", "works", launch_record(drop_job_keys)),
    Case(2, "compare beside a cut summary.json", "works", cut_summary),
    Case(2, "--resume, config.json epochs: 'ten'", "refused", resume_config),
    Case(2, "--resume with another net's checkpoint", "refused", resume_other_checkpoint),
    Case(2, "model.pt naming an unknown net", "refused",
         model_file(lambda s: s["config"].update(model="resnet99"))),
    Case(2, "model.pt with no config", "refused", model_file(lambda s: s.pop("config"))),
    Case(2, "model.pt with width: 'wide'", "refused",
         model_file(lambda s: s["config"].update(width="wide"))),
    Case(2, "sweep bound that is no number", "refused",
         sweep("parameters:\n  max_lr: {min: abc, max: 0.3}\n")),
    Case(2, "sweep bound min: 1e-5 (YAML 1.1: a string)", "works",
         sweep("parameters:\n  weight_decay: {min: 1e-5, max: 1.0e-3}\n")),
    Case(3, "journal cut mid-line, then two more --tune", "works", journal),
    Case(4, "--jobs 2 without --launcher", "refused", fixed(parse_only("--jobs=2"))),
    Case(4, "malformed --slurm_param without --launcher", "refused",
         fixed(parse_only("--slurm_param", "nonsense"))),
    Case(4, "--storage without --tune", "refused", fixed(parse_only("--storage=x.db"))),
    Case(4, "--study without --tune", "refused", fixed(parse_only("--study=s"))),
    Case(4, "int_uniform with a fractional bound", "refused",
         sweep("parameters:\n  batch_size: {distribution: int_uniform, min: 16.5, max: 32}\n")),
    Case(4, "16-bit PNG read by predict (holds 78)", "works", sixteen_bit),
    Case(4, "--muon_lr on an SGD recipe", "refused", fixed(parse_only("--muon_lr=0.3"))),
    Case(4, "--whiten_images on ResNet-9", "refused", fixed(parse_only("--whiten_images=960"))),
    Case(4, "one run spelled two ways: one hash", "works", same_run_two_spellings),
    Case(5, "resnetf train experiments/lr_range_test.py --help", "works",
         neighbour(["train", "experiments/lr_range_test.py", "--help"])),
]  # fmt: skip


def outcome(case: Case, proc, check, marker: Path) -> str:
    if marker.exists():
        return "ran code"
    if "Traceback (most recent call last)" in proc.stderr:
        return "traceback"
    if case.want == "refused":
        return "refused" if proc.returncode != 0 else "accepted"
    return "works" if proc.returncode == 0 and (check is None or check(proc)) else "failed"


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench_damage", help="scratch folder (emptied)")
    ap.add_argument("--only", type=int, default=None, help="one class (1-5)")
    args = ap.parse_args(argv)
    out = Path(args.out).absolute()
    shutil.rmtree(out, ignore_errors=True)
    ctx, rows = Context(out), []
    for case in (c for c in CASES if args.only in (None, c.cls)):
        ctx.marker.unlink(missing_ok=True)
        command, check = case.make(ctx)
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
        got = outcome(case, proc, check, ctx.marker)
        last = (proc.stderr.strip().splitlines() or [""])[-1][:90]
        rows.append({"class": case.cls, "case": case.name, "want": case.want, "got": got})
        print(f"{case.cls}  {case.name:<48} want {case.want:<8} got {got:<9} {last}", flush=True)
    print()
    for cls, title in CLASSES.items():
        mine = [r for r in rows if r["class"] == cls]
        good = sum(r["got"] == r["want"] for r in mine)
        if mine:
            print(f"class {cls} ({title}): {good} of {len(mine)} as they should be")
    return rows


if __name__ == "__main__":
    main()
