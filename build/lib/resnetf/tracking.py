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
import shlex
import socket
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import torch

from . import checkpoint, plots
from .config import config_hash

WANDB_NEEDS = "0.19.10"  # wandb.init(reinit="create_new"): requirements.txt pins at least this


def default_wandb_mode() -> str:
    """online when the user is logged in to W&B, else offline, so a fresh machine trains without
    an account and syncs later. Logged in: an API key in the environment or in W&B's settings,
    or in ~/.netrc for the host W&B is configured for (`wandb login --host` sets it), as W&B
    itself looks it up; never a network call."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        import wandb

        settings = wandb.setup().settings
        if settings.api_key:
            return "online"
        host = urlparse(settings.base_url).hostname
        return "online" if netrc.netrc(os.environ.get("NETRC")).authenticators(host) else "offline"
    except Exception:  # no netrc, an unreadable one, W&B's settings broken: train offline
        return "offline"


def git_diff() -> str | None:
    """The uncommitted changes to the package's tracked files (git diff HEAD), or None."""
    return _git("diff", "HEAD")


def _git(*args) -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        return None


def provenance(device: torch.device) -> dict:
    """What produced a run, enough to rerun it: the command line, the package's git commit (and
    whether its tracked files had uncommitted changes), the versions that set the numbers
    (CUDA and cuDNN too), the host and the device."""
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    versions = {}
    for package in ("torch", "albumentations", "wandb", "optuna"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine()
    )
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "command": shlex.join([sys.executable, *sys.argv]),
        "git_commit": commit,
        "git_dirty": None if dirty is None else bool(dirty),
        "python": platform.python_version(),
        **versions,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "host": socket.gethostname(),
        "device": str(device),
        "device_name": name,
    }


def check_runs_dir(runs_dir: str | os.PathLike) -> None:
    """Fail before any training when run folders cannot be written there, creating nothing:
    the folder, or the nearest existing folder above it, must be writable."""
    path = Path(runs_dir).absolute()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ValueError(f"runs_dir: cannot create {runs_dir} ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"runs_dir: {runs_dir} is not writable"
            if existing == path
            else f"runs_dir: cannot create {runs_dir} ({existing} is not writable)"
        )


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


def group_of(cfg) -> str:
    """The W&B group: --wandb_group, else the experiment's name and the hash of the config
    fields that change the result, so that seeds of one config group together and an ablation
    gets a group of its own (a study's trials are grouped by the study)."""
    return cfg.wandb_group or f"{cfg.name}-{config_hash(cfg)}"


class Tracker:
    def __init__(
        self,
        cfg,
        run_dir: Path,
        extra_config: dict | None = None,
        resumed=None,
        job_type: str = "train",
        tags: tuple = (),
        wandb_id: str | None = None,
        figures: bool = True,
    ):
        """`resumed`: the checkpoint.Progress to continue from; its metrics are kept, the steps
        it had not checkpointed are dropped from steps.csv, and the same W&B run is continued.
        `job_type` and `tags` say to W&B what the run is part of (a study's trial, say);
        `wandb_id` continues (or starts) the W&B run of that id."""
        self.run_dir, self.cfg, self.figures = Path(run_dir), cfg, figures
        self.epochs: list[dict] = list(resumed.metrics) if resumed else []
        self.wandb_run = None
        self.group = group_of(cfg)
        config = {
            **cfg.to_dict(),
            "job_type": job_type,
            "config_hash": config_hash(cfg),
            **(extra_config or {}),
        }
        self.config = config
        if resumed:
            steps = self.run_dir / "steps.csv"
            if steps.exists():  # steps logged after the checkpoint will be trained again
                kept = pd.read_csv(steps)
                kept[kept["step"] < resumed.steps_done].to_csv(steps, index=False)
        else:
            (self.run_dir / "config.json").write_text(json.dumps(config, indent=2))
        mode = cfg.wandb_mode or default_wandb_mode()
        if mode != "disabled":
            self._start_wandb(
                cfg,
                config,
                mode,
                resumed.wandb_id if resumed else wandb_id,
                job_type,
                [cfg.name, cfg.model, cfg.backend, *tags],
            )

    # --- W&B, guarded ------------------------------------------------------------------------
    def _start_wandb(
        self, cfg, config: dict, mode: str, run_id: str | None, job_type: str, tags: list
    ) -> None:
        try:
            import wandb

            self.wandb_run = wandb.init(
                project=cfg.wandb_project,
                entity=cfg.wandb_entity,
                mode=mode,
                id=run_id,
                resume="allow" if run_id else None,
                name=self.run_dir.name,
                group=self.group,
                job_type=job_type,
                tags=list(dict.fromkeys(tags)),
                config=config,
                dir=str(self.run_dir),
                reinit="create_new",
                save_code=True,
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
        warnings.warn(
            f"W&B failed at {when} ({type(error).__name__}: {error}); "
            f"training goes on with local tracking in {self.run_dir}",
            stacklevel=3,
        )
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
    def wandb_id(self) -> str | None:
        return None if self.wandb_run is None else self.wandb_run.id

    @property
    def wandb_url(self) -> str | None:
        """The run's page; None offline or without W&B."""
        try:
            return None if self.wandb_run is None else self.wandb_run.url
        except Exception:  # offline runs have no URL in some W&B versions
            return None

    # --- what the loop calls -----------------------------------------------------------------
    def log_steps(self, first_step: int, lrs: list[float], losses: list[float]) -> None:
        """One epoch's per-step LR and training loss, sent together after the epoch so that
        the loop never waits on the GPU inside an epoch."""
        steps = pd.DataFrame(
            {"step": range(first_step, first_step + len(lrs)), "lr": lrs, "train_loss": losses}
        )
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

            run.log(
                {
                    "confusion": wandb.plot.confusion_matrix(
                        y_true=list(map(int, labels)),
                        preds=list(map(int, preds)),
                        class_names=list(classes),
                    )
                }
            )

        self._wandb("log", send)

    def log_table(self, key: str, frame: pd.DataFrame) -> None:
        def send(run):
            import wandb

            run.log({key: wandb.Table(dataframe=frame)})

        self._wandb("log", send)

    def _write(self, name: str, write) -> bool:
        try:
            write(self.run_dir / name)
            return True
        except Exception as e:
            warnings.warn(f"{name} not written ({type(e).__name__}: {e})", stacklevel=3)
            return False

    def log_model(
        self, path: Path, summary: dict, aliases=("latest",), run_id: str | None = None
    ) -> None:
        """model.pt as the W&B artifact model-<W&B run id> (type model; `run_id`: of the run that
        trained it, when another run logs it, say with the alias best), with the figures that
        tell one model from another in its metadata. Offline, the run's .wandb file records it
        and `wandb sync` uploads it with the run."""

        def send(run):
            import wandb

            keys = (
                "final_val_acc",
                "best_val_acc",
                "final_test_acc",
                "best_test_acc",
                "parameters",
                "status",
            )
            metadata = {
                **{k: summary.get(k) for k in keys},
                **{
                    k: self.config.get(k) for k in ("git_commit", "data_fingerprint", "config_hash")
                },
            }
            artifact = wandb.Artifact(f"model-{run_id or run.id}", type="model", metadata=metadata)
            artifact.add_file(str(path), name=checkpoint.MODEL_NAME)
            run.log_artifact(artifact, aliases=list(aliases))

        self._wandb("artifact", send)

    def update_summary(self, values: dict) -> None:
        self._wandb("log", lambda run: run.summary.update(values))

    def write_curves(self) -> Path | None:
        """curves.png: this run's LR per step, training loss and accuracies so far. A figure
        that cannot be drawn must not cost the run its other files."""
        curves = plots.read_curves(self.run_dir)
        if all(c is None for c in curves) or not self.figures:  # an aggregate, an LR test;
            return None  # a tuning trial draws no figure unless asked (--trial_analysis)
        try:
            run = plots.Curves(self.run_dir.name, *curves, plots.steps_per_epoch(self.config))
            return plots.plot_curves(run, self.run_dir / "curves.png", title=self.run_dir.name)
        except Exception as e:
            warnings.warn(f"curves.png not drawn ({type(e).__name__}: {e})", stacklevel=2)
            return None

    def close(
        self,
        summary: dict,
        model_state: dict | None = None,
        classes=(),
        aliases=("latest",),
        exit_code: int = 0,
    ) -> None:
        """The final files (model.pt with `model_state`, summary.json, curves.png), the model as
        a W&B artifact, then the W&B run closed: each step guarded, so one that fails (a full
        disk, say) costs the run no other."""
        if model_state is not None:
            path = self.run_dir / checkpoint.MODEL_NAME
            model = checkpoint.model_file(model_state, self.cfg.to_dict(), classes)
            if self._write(path.name, lambda p: torch.save(model, p)):
                self.log_model(path, summary, aliases)
        self._write("summary.json", lambda path: path.write_text(json.dumps(summary, indent=2)))
        self.write_curves()

        def close(run):
            run.summary.update(summary)
            run.finish(exit_code=exit_code)

        self._wandb("finish", close)
