"""One Tracker per run: W&B (online, offline or disabled) plus files under runs/<run name>/.

The training loop talks only to the Tracker. Every W&B call is guarded: if W&B cannot start or
fails mid-run, the Tracker warns once, drops W&B and keeps writing the local files, so a run
never dies, or loses its metrics, because of tracking.
"""
from __future__ import annotations

import json
import netrc
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path
from importlib import metadata
from typing import Optional
from urllib.parse import urlparse

import pandas as pd
import torch

from . import plots


def default_wandb_mode() -> str:
    """online when the user is logged in to W&B (API key in the environment or ~/.netrc), else
    offline, so a fresh machine trains without an account and syncs later."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return "online" if netrc.netrc(os.environ.get("NETRC")).authenticators(host) else "offline"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return "offline"


def provenance(device: torch.device) -> dict:
    """What produced a run: the package's git commit (and whether its tracked files had
    uncommitted changes), the versions that set the numbers, and the device."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                 timeout=10)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
            return None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    versions = {}
    for package in ("torch", "albumentations", "wandb", "optuna"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    return {"git_commit": commit, "git_dirty": None if dirty is None else bool(dirty),
            "python": platform.python_version(), **versions, "device": str(device),
            "device_name": name}


def check_runs_dir(runs_dir: str | os.PathLike) -> None:
    """Fail before any training when run folders cannot be written there."""
    path = Path(runs_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"runs_dir: cannot create {path} ({e.strerror or e})") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"runs_dir: {path} is not writable")


def new_run_dir(runs_dir: str | os.PathLike, name: str, seed: int) -> Path:
    """A fresh folder runs/<name>_s<seed>_<time>[-k]; mkdir without exist_ok makes two runs
    started in the same second take different folders."""
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{name}_s{seed}_{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(1, 1000):
        path = root / (stem if k == 1 else f"{stem}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder under {root}")


class Tracker:
    def __init__(self, cfg, run_dir: Path, extra_config: Optional[dict] = None,
                 resumed=None, job_type: str = "train", tags: tuple = (),
                 wandb_id: Optional[str] = None):
        """`resumed`: the checkpoint.Progress to continue from; its metrics are kept, the steps
        it had not checkpointed are dropped from steps.csv, and the same W&B run is continued.
        `job_type` and `tags` say to W&B what the run is part of (a study's trial, say);
        `wandb_id` continues (or starts) the W&B run of that id."""
        self.run_dir = Path(run_dir)
        self.epochs: list[dict] = list(resumed.metrics) if resumed else []
        self.wandb_run = None
        config = {**cfg.to_dict(), "job_type": job_type, **(extra_config or {})}
        if resumed:
            steps = self.run_dir / "steps.csv"
            if steps.exists():  # steps logged after the checkpoint will be trained again
                kept = pd.read_csv(steps)
                kept[kept["step"] < resumed.steps_done].to_csv(steps, index=False)
        else:
            (self.run_dir / "config.json").write_text(json.dumps(config, indent=2))
        mode = cfg.wandb_mode or default_wandb_mode()
        if mode != "disabled":
            self._start_wandb(cfg, config, mode, resumed.wandb_id if resumed else wandb_id,
                              job_type, [cfg.name, cfg.model, cfg.backend, *tags])

    # --- W&B, guarded ------------------------------------------------------------------------
    def _start_wandb(self, cfg, config: dict, mode: str, run_id: Optional[str], job_type: str,
                     tags: list) -> None:
        try:
            import wandb

            self.wandb_run = wandb.init(
                project=cfg.wandb_project, entity=cfg.wandb_entity, mode=mode,
                id=run_id, resume="allow" if run_id else None,
                name=self.run_dir.name, group=cfg.wandb_group or cfg.name, job_type=job_type,
                tags=list(dict.fromkeys(tags)), config=config, dir=str(self.run_dir),
                reinit="create_new",
            )
            # per-step series against the optimiser step, per-epoch series against the epoch
            self.wandb_run.define_metric("step")
            self.wandb_run.define_metric("epoch")
            for key in ("lr", "train_loss_step"):
                self.wandb_run.define_metric(key, step_metric="step")
            for key in ("train_loss", "train_acc", "test_loss", "val_loss", "epoch_seconds"):
                self.wandb_run.define_metric(key, step_metric="epoch")
            # the summary keeps the best accuracy next to the last: a sweep or a W&B table
            # ranks runs by their best epoch
            for key in ("val_acc", "test_acc"):
                self.wandb_run.define_metric(key, step_metric="epoch", summary="max,last")
        except Exception as e:
            self._drop_wandb("start", e)

    def _drop_wandb(self, when: str, error: Exception) -> None:
        warnings.warn(f"W&B failed at {when} ({type(error).__name__}: {error}); "
                      f"training goes on with local tracking in {self.run_dir}", stacklevel=3)
        run, self.wandb_run = self.wandb_run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:
                pass

    def _wandb(self, when: str, fn) -> None:
        if self.wandb_run is None:
            return
        try:
            fn(self.wandb_run)
        except Exception as e:
            self._drop_wandb(when, e)

    @property
    def wandb_id(self) -> Optional[str]:
        return None if self.wandb_run is None else self.wandb_run.id

    @property
    def wandb_url(self) -> Optional[str]:
        """The run's page; None offline or without W&B."""
        try:
            return None if self.wandb_run is None else self.wandb_run.url
        except Exception:  # offline runs have no URL in some W&B versions
            return None

    # --- what the loop calls -----------------------------------------------------------------
    def log_steps(self, first_step: int, lrs: list[float], losses: list[float]) -> None:
        """One epoch's per-step LR and training loss, sent together after the epoch so that
        the loop never waits on the GPU inside an epoch."""
        steps = pd.DataFrame({"step": range(first_step, first_step + len(lrs)), "lr": lrs,
                              "train_loss": losses})
        path = self.run_dir / "steps.csv"
        steps.to_csv(path, mode="a", header=not path.exists(), index=False)

        def send(run):
            for i, (lr, loss) in enumerate(zip(lrs, losses)):
                run.log({"step": first_step + i, "lr": lr, "train_loss_step": loss})
        self._wandb("log", send)

    def log_epoch(self, metrics: dict) -> None:
        self.epochs.append(metrics)
        pd.DataFrame(self.epochs).to_csv(self.run_dir / "metrics.csv", index=False)
        self._wandb("log", lambda run: run.log(metrics))

    def log_image(self, key: str, path: Path, caption: str = "") -> None:
        """An image already saved in the run folder, also sent to W&B."""
        def send(run):
            import wandb
            run.log({key: wandb.Image(str(path), caption=caption)})
        self._wandb("log", send)

    def log_confusion(self, labels, preds, classes) -> None:
        def send(run):
            import wandb
            run.log({"confusion": wandb.plot.confusion_matrix(
                y_true=list(map(int, labels)), preds=list(map(int, preds)),
                class_names=list(classes))})
        self._wandb("log", send)

    def log_table(self, key: str, frame: pd.DataFrame) -> None:
        def send(run):
            import wandb
            run.log({key: wandb.Table(dataframe=frame)})
        self._wandb("log", send)

    def _write(self, name: str, write) -> None:
        try:
            write(self.run_dir / name)
        except Exception as e:
            warnings.warn(f"{name} not written ({type(e).__name__}: {e})", stacklevel=3)

    def update_summary(self, values: dict) -> None:
        self._wandb("log", lambda run: run.summary.update(values))

    def write_curves(self) -> Optional[Path]:
        """curves.png: this run's LR per step, training loss and accuracies so far. A figure
        that cannot be drawn must not cost the run its other files."""
        curves = plots.read_curves(self.run_dir)
        if all(c is None for c in curves):  # not a training run (an aggregate, an LR test)
            return None
        try:
            return plots.plot_curves({self.run_dir.name: curves}, self.run_dir / "curves.png")
        except Exception as e:
            warnings.warn(f"curves.png not drawn ({type(e).__name__}: {e})", stacklevel=2)
            return None

    def finish(self, summary: dict, model: Optional[torch.nn.Module] = None,
               exit_code: int = 0) -> None:
        """The final files (model.pt, summary.json, curves.png), then the W&B run closed: each
        step guarded, so one that fails (a full disk, say) costs the run no other."""
        if model is not None:
            self._write("model.pt", lambda path: torch.save(model.state_dict(), path))
        self._write("summary.json", lambda path: path.write_text(json.dumps(summary, indent=2)))
        self.write_curves()

        def close(run):
            run.summary.update(summary)
            run.finish(exit_code=exit_code)
        self._wandb("finish", close)
