"""The entry point every experiment file calls: parse the command line over its config, run."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from .config import Config, load_run_config, parse
from .data import DataError
from .train import RunStopped, TrainingDiverged, run


def main(defaults: Config, args: Optional[Sequence[str]] = None, description: str = "") -> dict:
    cfg = parse(defaults, args, description)
    if cfg.resume:  # the run continues with the config it was started with
        cfg = load_run_config(cfg.resume).replace(resume=cfg.resume, progress=cfg.progress,
                                                  workers=cfg.workers)
    try:
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
    except RunStopped as e:  # Ctrl-C or SIGTERM: the run folder says how to continue
        print(f"stopped: {e}", file=sys.stderr)
        raise SystemExit(130) from None
    except (DataError, TrainingDiverged, ValueError, OSError) as e:
        # problems the user can fix: one clear line instead of a traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
