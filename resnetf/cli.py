"""The entry point every experiment file calls: parse the command line over its config, run."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .config import Config, parse

# torch, the trackers and plotting load after the command line is parsed (in main()), so that
# --help, a mistyped flag or a refused value answers at once


def dispatch(cfg: Config):
    """One mode per command: a debug mode, LR range test, study, several seeds, or one run."""
    if cfg.debug:
        from .debug import run_debug

        return run_debug(cfg)
    if cfg.lr_range_test:
        from .lr_range import run_lr_range_test

        return run_lr_range_test(cfg)
    if cfg.tune:
        from .tune import tune

        return tune(cfg)
    if cfg.seeds > 1:
        from .repeat import run_seeds

        return run_seeds(cfg)
    if cfg.launcher != "inline":  # one run, in a task of its own (a SLURM job, say)
        from .repeat import launched

        return launched(cfg, [cfg.seed])[0]
    from .train import run

    return run(cfg)


def finished_summary(run_dir) -> dict | None:
    """The summary of a run folder whose run finished, else None."""
    import json
    from pathlib import Path

    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("status") == "finished" else None


def as_sweep_run(cfg: Config, args: Sequence[str]) -> Config:
    """Under W&B's sweep agent a run is a trial of the sweep: it measures the validation split
    and never the test split (the retrained best does), unless --use_test is given."""
    from .config import under_sweep_agent

    if not under_sweep_agent() or any(a.split("=")[0] == "--use_test" for a in args):
        return cfg
    val_size = cfg.val_size or 5000
    print(
        f"W&B sweep run: validation split of {val_size} images, no test evaluation "
        f"(--use_test to evaluate on test too)"
    )
    return cfg.replace(use_test=False, val_size=val_size)


def main(defaults: Config, args: Sequence[str] | None = None, description: str = ""):
    args = sys.argv[1:] if args is None else list(args)
    cfg = parse(defaults, args, description)
    from .checkpoint import resume_config
    from .data import DataError
    from .launch import LaunchFailed, check
    from .train import RunStopped, StudyFailed, TrainingDiverged

    cfg = as_sweep_run(cfg, args)
    try:  # where the runs go is checked before anything is written or submitted
        check(cfg)
    except ValueError as e:
        print(f"error: --{e}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        if cfg.resume:  # the run continues with the config it was started with
            cfg = resume_config(cfg, defaults)
            finished = finished_summary(cfg.resume)
            if finished is not None:
                print(
                    f"{cfg.resume} already finished ({finished.get('epochs_done')} epochs, "
                    f"final test accuracy {finished.get('final_test_acc')}): nothing to "
                    f"resume, nothing changed"
                )
                return finished
            if cfg.name != defaults.name:
                print(
                    f"resuming {cfg.resume}, a run of {cfg.name} (not {defaults.name}): it goes "
                    f"on with its own config"
                )
        return dispatch(cfg)
    except LaunchFailed as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        print("finished runs are kept: the same command runs only the rest", file=sys.stderr)
        raise SystemExit(1) from None
    except RunStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        # a sweep's early termination is a verdict, not a failure: W&B's agent shuts itself
        # down after a few runs that exit non-zero
        raise SystemExit(130 if e.failed else 0) from None
    except (DataError, TrainingDiverged, StudyFailed, ValueError, OSError) as e:
        # problems the user can fix: one clear line instead of a traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


# --- the `resnetf` command ---------------------------------------------------------------------

COMMANDS = {
    "train": "train an experiment file: resnetf train experiments/fast94.py [--flags]",
    "compare": "compare run folders, with --baseline intervals (python -m resnetf.compare)",
    "ablate": "an experiment and variants over seeds, with intervals (python -m resnetf.ablate)",
    "bench": "benchmark an experiment (python -m resnetf.bench)",
    "predict": "predict images with a trained model (python -m resnetf.predict)",
}


def command(argv: Sequence[str] | None = None):
    """`resnetf SUBCOMMAND ...` (also `python -m resnetf ...`): train, compare, ablate, bench,
    predict."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(
            "usage: resnetf {"
            + ",".join(COMMANDS)
            + "} ...\n\n"
            + "\n".join(f"  {name:<8} {text}" for name, text in COMMANDS.items()),
            file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout,
        )
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    name, rest = argv[0], argv[1:]
    if name == "train":
        if not rest or rest[0].startswith("-"):
            raise SystemExit(
                "usage: resnetf train EXPERIMENT_FILE [--flags] (e.g. experiments/oc_24ep.py)"
            )
        from .config import load_experiment

        try:
            defaults = load_experiment(rest[0])
        except (FileNotFoundError, AttributeError) as e:
            raise SystemExit(f"error: {rest[0]} is not an experiment file ({e})") from None
        sys.argv = [rest[0], *rest[1:]]  # what the run records as its command
        main(defaults, rest[1:])
        return None
    module = __import__(f"resnetf.{name}", fromlist=["main"])
    result = module.main(rest)
    if name == "predict":
        raise SystemExit(result)
    return None
