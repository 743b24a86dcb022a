"""The entry point every experiment file calls: parse the command line over its config, run."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from .checkpoint import resume_config
from .config import Config, parse
from .data import DataError
from .train import RunStopped, TrainingDiverged, run, under_sweep_agent


def dispatch(cfg: Config):
    """One mode per command: LR range test, study, several seeds, or one run."""
    if cfg.lr_range_test:
        from .lr_range import run_lr_range_test
        return run_lr_range_test(cfg)
    if cfg.tune:
        from .tune import tune
        return tune(cfg)
    if cfg.seeds > 1:
        from .repeat import run_seeds
        return run_seeds(cfg)
    return run(cfg)


def as_sweep_run(cfg: Config, args: Sequence[str]) -> Config:
    """Under W&B's sweep agent a run is a trial of the sweep: it measures the validation split
    and never the test split (the retrained best does), unless --use_test is given."""
    if not under_sweep_agent() or any(a.split("=")[0] == "--use_test" for a in args):
        return cfg
    val_size = cfg.val_size or 5000
    print(f"W&B sweep run: validation split of {val_size} images, no test evaluation "
          f"(--use_test to evaluate on test too)")
    return cfg.replace(use_test=False, val_size=val_size)


def main(defaults: Config, args: Optional[Sequence[str]] = None, description: str = ""):
    args = sys.argv[1:] if args is None else list(args)
    cfg = as_sweep_run(parse(defaults, args, description), args)
    try:
        if cfg.resume:  # the run continues with the config it was started with
            cfg = resume_config(cfg, defaults)
        return dispatch(cfg)
    except RunStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        # a sweep's early termination is a verdict, not a failure: W&B's agent shuts itself
        # down after a few runs that exit non-zero
        raise SystemExit(130 if e.failed else 0) from None
    except (DataError, TrainingDiverged, ValueError, OSError) as e:
        # problems the user can fix: one clear line instead of a traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
