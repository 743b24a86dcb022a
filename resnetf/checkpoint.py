"""What a checkpoint holds, writing it atomically, restoring it, and what `--resume` may change.

A checkpoint is written after every epoch: the tensors (model, and the Stepper's: optimizers,
schedulers, EMA, lookahead average, fp16 loss scaler) and the
run's `Progress` (epochs done, their metrics, seconds, best accuracy, W&B run id). Writing goes
through a temporary file and a rename: a crash or a full disk mid-write leaves the last good
checkpoint in place, never a truncated one.

A resumed run continues with the config it was started with (config.json in its folder): what it
computes cannot change half-way. Only the fields of RESUME_FREE, which say how it runs, may.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import Config, ConfigError

NAME = "checkpoint.pt"
FORMAT = 3  # 1: the flat layout before Progress existed; 2: one optimizer, before the Stepper
RESUME_FREE = ("progress", "workers", "device")


@dataclass
class Progress:
    """A run's bookkeeping so far: what a checkpoint restores besides the tensors."""

    epoch: int = 0  # epochs completed
    steps_done: int = 0
    metrics: list[dict] = field(default_factory=list)  # one row per completed epoch
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    best: dict = field(default_factory=dict)  # split -> best accuracy so far
    wandb_id: str | None = None


def state(setup, progress: Progress) -> dict:
    """Everything needed to continue `setup`'s run exactly after `progress.epoch` epochs."""
    return {
        "format": FORMAT,
        "progress": dataclasses.asdict(progress),
        "model": setup.model.state_dict(),
        "optimisation": setup.stepper.state_dict(),
    }


def restore(setup, saved: dict) -> Progress:
    """Load the tensors of `saved` into `setup` (in place); return its Progress. A checkpoint
    of another net (copied in from another run) is a ValueError naming what does not fit."""
    try:
        setup.model.load_state_dict(saved["model"])
        setup.stepper.load_state_dict(saved["optimisation"])
        return Progress(**saved["progress"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        mismatch = [line for line in lines if "size mismatch" in line]
        detail = (mismatch or lines or [""])[0] if mismatch else (lines or [""])[-1]
        raise ValueError(
            f"resume: {setup.cfg.resume}/{NAME} does not fit the net its config.json builds "
            f"({detail[:200]}): it is another run's checkpoint; start the run anew"
        ) from None


def save(run_dir: Path, checkpoint: dict) -> bool:
    """Write run_dir/checkpoint.pt via a temporary file and a rename. On failure (a full disk,
    say) warn, delete the partial file, keep the previous checkpoint, return False."""
    path, tmp = Path(run_dir) / NAME, Path(run_dir) / (NAME + ".tmp")
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)
        return True
    except (OSError, RuntimeError) as e:
        # torch's zip writer reports a full disk as a RuntimeError ("PytorchStreamWriter failed
        # writing file ..."); any other RuntimeError is not the disk's and goes on up
        if isinstance(e, RuntimeError) and "PytorchStreamWriter" not in str(e):
            raise
        tmp.unlink(missing_ok=True)
        warnings.warn(
            f"checkpoint not written ({e}); the previous one in {run_dir} is kept and "
            f"training goes on",
            stacklevel=2,
        )
        return False


def load(run_dir: Path) -> dict:
    """The checkpoint of a run folder, or a ValueError that says what is wrong with it."""
    run_dir = Path(run_dir)
    saved_config(run_dir)  # a run folder at all?
    path = run_dir / NAME
    if not path.is_file():
        raise ValueError(
            f"resume: {run_dir} has no {NAME}: the run stopped before its first "
            f"epoch ended (or ran with --no_checkpoint), so there is nothing to "
            f"continue; start it again"
        )
    saved = read_data(path, "resume: ")
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"resume: {path} is not a checkpoint this version of resnetf writes")
    return saved


class UnsafeFile(ValueError):
    """A torch file whose pickle holds more than data: loading it would run code."""


def read_data(path: Path, prefix: str = ""):
    """A torch file loaded as data only (weights_only: tensors, dicts, lists, strings, numbers),
    on the CPU. A file shared through W&B or a run folder is someone else's bytes: a pickle that
    names any other object (a function to call, a class to build) is refused before anything in
    it runs (UnsafeFile), and a truncated or foreign file is a ValueError; both one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # an object the data-only unpickler refuses (a function, a class): the file would run
        # code; anything else it cannot parse is not a torch file at all (refused either way)
        if "GLOBAL" in str(e) or "Unsupported global" in str(e):
            raise UnsafeFile(
                f"{prefix}{path} refused: it holds objects that would run code when loaded "
                f"(not a file resnetf writes, which holds only tensors and plain values); "
                f"nothing in it was run"
            ) from None
        detail = str(e).strip().splitlines()[-1][:200]
        raise ValueError(f"{prefix}{path} cannot be read as a torch file ({detail})") from None
    except Exception as e:  # truncated (EOFError, RuntimeError), not a torch file
        raise ValueError(
            f"{prefix}{path} cannot be read ({type(e).__name__}: {e}); it may be truncated or "
            f"damaged"
        ) from None


def saved_config(run_dir: Path) -> Config:
    """The Config a run folder was started with (its config.json)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"resume: no run folder at {run_dir}")
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"resume: {run_dir} is not a resnetf run folder (no config.json)")
    from .files import read_json

    try:
        saved = read_json(path)
    except ValueError as e:
        raise ValueError(f"resume: {e}") from None
    try:
        return config_of(saved)
    except ConfigError as e:
        raise ValueError(f"resume: {path}: {e}") from None


def config_of(saved: dict) -> Config:
    """The Config a run wrote down (config.json, model.pt's config): each known field checked
    against its type and choices (a ConfigError naming the first that does not fit); fields a
    later version dropped are ignored, fields it added take their defaults, and fields set where
    they do nothing (an earlier version accepted Muon's on an SGD run) go back to theirs, which
    computes the same. Not validated as a new command line is: a run recorded by an earlier
    version still loads and resumes."""
    from .config import check_value

    names = {f.name for f in dataclasses.fields(Config)}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names}
    for name, value in fields.items():
        if not isinstance(value, tuple):
            check_value(name, value)
    return Config(**fields).settled()


def resume_config(command_line: Config, defaults: Config) -> Config:
    """The config of a `--resume RUN_DIR` command: the run's own, plus the RESUME_FREE fields
    of the command line. A flag set on the command line (it differs from the experiment's
    default) that would change the saved run is refused, naming it."""
    saved = saved_config(command_line.resume)
    for f in dataclasses.fields(Config):
        if f.name in RESUME_FREE or f.name == "resume":
            continue
        given, default, was = (getattr(c, f.name) for c in (command_line, defaults, saved))
        if given != default and given != was:
            raise ConfigError(
                f"resume: --{f.name}={given} differs from the run's {was!r}; a resumed run "
                f"keeps the config it was started with (only --{', --'.join(RESUME_FREE)} "
                f"may change)"
            )
    return saved.replace(
        resume=command_line.resume, **{k: getattr(command_line, k) for k in RESUME_FREE}
    )


# --- the trained model, outside any run -----------------------------------------------------------

MODEL_NAME = "model.pt"
MODEL_FORMAT = "resnetf-model-1"


def model_state(saved: dict) -> dict:
    """The weights a checkpoint's run would have saved as its final net: the EMA average when
    the run kept one, else the model."""
    ema = saved["optimisation"].get("ema")
    if ema is None:
        return saved["model"]
    return {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}


def model_file(state_dict: dict, config: dict, classes) -> dict:
    """What model.pt holds: the weights and what rebuilds the net around them (its config and
    class names), so that the file alone is a usable model (resnetf.load)."""
    return {
        "format": MODEL_FORMAT,
        "state_dict": state_dict,
        "config": config,
        "classes": list(classes),
    }


def read_model_file(path: Path) -> dict:
    """A model.pt written by resnetf, or a ValueError that says what the file is not."""
    saved = read_data(path)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{path} is not a resnetf model file (no {MODEL_FORMAT!r} format mark; "
            f"a bare state_dict, a checkpoint or another program's file?)"
        )
    shapes = {"state_dict": dict, "config": dict, "classes": list}
    for key, kind in shapes.items():
        if not isinstance(saved.get(key), kind):
            found = "no" if key not in saved else f"a {type(saved[key]).__name__} as its"
            raise ValueError(
                f"{path} is marked as a resnetf model file but has {found} {key!r} (a "
                f"{kind.__name__} in the files resnetf writes): damaged or hand-made"
            )
    if not all(isinstance(v, torch.Tensor) for v in saved["state_dict"].values()):
        raise ValueError(f"{path}: its 'state_dict' holds values that are not tensors")
    if not all(isinstance(c, str) for c in saved["classes"]):
        raise ValueError(f"{path}: its 'classes' are not all names (strings)")
    try:
        saved["config"] = config_of(saved["config"])
    except ConfigError as e:
        raise ValueError(f"{path}: its config cannot rebuild the net: {e}") from None
    return saved
