"""One Tracker per run: W&B (online, offline or disabled) plus files under runs/<run name>/.

The training loop talks only to the Tracker. Every W&B call is guarded: if W&B cannot start or
fails mid-run, the Tracker warns once, drops W&B and keeps writing the local files, so a run
never dies, or loses its metrics, because of tracking.
"""
from __future__ import annotations

import json
import netrc
import os
import time
import warnings
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import pandas as pd
import torch


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
                 resumed: Optional[dict] = None):
        """`resumed`: a checkpoint to continue from; its metrics are kept, the steps it had not
        checkpointed are dropped from steps.csv, and the same W&B run is continued."""
        self.run_dir = Path(run_dir)
        self.epochs: list[dict] = list(resumed["epochs"]) if resumed else []
        self.wandb_run = None
        config = {**cfg.to_dict(), **(extra_config or {})}
        if resumed:
            steps = self.run_dir / "steps.csv"
            if steps.exists():  # steps logged after the checkpoint will be trained again
                kept = pd.read_csv(steps)
                kept[kept["step"] < resumed["steps_done"]].to_csv(steps, index=False)
        else:
            (self.run_dir / "config.json").write_text(json.dumps(config, indent=2))
        mode = cfg.wandb_mode or default_wandb_mode()
        if mode != "disabled":
            self._start_wandb(cfg, config, mode, resumed and resumed.get("wandb_id"))

    # --- W&B, guarded ------------------------------------------------------------------------
    def _start_wandb(self, cfg, config: dict, mode: str, run_id: Optional[str] = None) -> None:
        try:
            import wandb

            self.wandb_run = wandb.init(
                project=cfg.wandb_project, entity=cfg.wandb_entity, mode=mode,
                id=run_id, resume="allow" if run_id else None,
                name=self.run_dir.name, group=cfg.wandb_group or cfg.name, job_type="train",
                tags=[cfg.name, cfg.model, cfg.backend],
                config=config, dir=str(self.run_dir), reinit="create_new",
            )
            # per-step series against the optimiser step, per-epoch series against the epoch
            self.wandb_run.define_metric("step")
            self.wandb_run.define_metric("epoch")
            for key in ("lr", "train_loss_step"):
                self.wandb_run.define_metric(key, step_metric="step")
            for key in ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc",
                        "epoch_seconds"):
                self.wandb_run.define_metric(key, step_metric="epoch")
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

    def finish(self, summary: dict, model: Optional[torch.nn.Module] = None,
               exit_code: int = 0) -> None:
        if model is not None:
            torch.save(model.state_dict(), self.run_dir / "model.pt")
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))

        def close(run):
            run.summary.update(summary)
            run.finish(exit_code=exit_code)
        self._wandb("finish", close)
