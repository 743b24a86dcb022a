import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import REPO, read_wandb_history, read_wandb_records, run_dir_of, scheduler_lrs
from resnetf import run, tracking


@pytest.mark.slow
def test_offline_wandb_run_holds_the_schedulers_lr_and_the_epoch_metrics(tiny_cfg):
    cfg = tiny_cfg.replace(wandb_mode="offline", epochs=3)
    summary = run(cfg)
    rows = read_wandb_history(run_dir_of(summary))
    step_rows = [r for r in rows if "train_loss_step" in r]
    steps_per_epoch = 100 // cfg.batch_size
    assert [r["step"] for r in step_rows] == list(range(3 * steps_per_epoch))
    assert [r["lr"] for r in step_rows] == pytest.approx(scheduler_lrs(cfg, steps_per_epoch))
    epoch_rows = [r for r in rows if "test_acc" in r]
    assert [r["epoch"] for r in epoch_rows] == [1, 2, 3]
    assert epoch_rows[-1]["test_acc"] == summary["final_test_acc"]
    # the local per-step file holds the same series
    steps = pd.read_csv(run_dir_of(summary) / "steps.csv")
    assert steps["lr"].tolist() == pytest.approx([r["lr"] for r in step_rows])


@pytest.mark.slow
def test_local_run_folder_is_complete(tiny_cfg):
    summary = run(tiny_cfg)
    d = run_dir_of(summary)
    assert json.loads((d / "config.json").read_text())["max_lr"] == tiny_cfg.max_lr
    metrics = pd.read_csv(d / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds"} <= set(metrics)
    saved = json.loads((d / "summary.json").read_text())
    assert saved["final_test_acc"] == metrics["test_acc"].iloc[-1]
    assert saved["best_test_acc"] == metrics["test_acc"].max()
    assert saved["parameters"] > 0 and saved["train_seconds"] > 0 and saved["status"] == "finished"
    state = torch.load(d / "model.pt")["state_dict"]
    assert "fc.weight" in state
    assert not (d / "wandb").exists()  # disabled means no W&B files


@pytest.mark.slow
def test_wandb_failure_at_start_warns_and_keeps_local_tracking(tiny_cfg, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("W&B is unreachable")

    monkeypatch.setattr(wandb, "init", broken)
    with pytest.warns(UserWarning, match="W&B failed at start.*unreachable"):
        summary = run(tiny_cfg.replace(wandb_mode="online"))
    assert len(pd.read_csv(run_dir_of(summary) / "metrics.csv")) == tiny_cfg.epochs


@pytest.mark.slow
def test_wandb_failure_mid_run_keeps_local_tracking(tiny_cfg):
    from resnetf.train import Context

    trackers = []

    def lose_wandb(tracker):  # the connection drops right after the run started
        trackers.append(tracker)

        def boom(*args, **kwargs):
            raise ConnectionError("lost W&B")

        tracker.wandb_run.log = boom

    with pytest.warns(UserWarning, match="W&B failed at log.*lost W&B") as caught:
        summary = run(
            tiny_cfg.replace(wandb_mode="offline", epochs=3, analysis=False),
            Context(on_start=lose_wandb),
        )
    assert len([w for w in caught if "W&B failed" in str(w.message)]) == 1  # warned once
    assert trackers[0].wandb_run is None  # dropped, not retried every step
    d = run_dir_of(summary)
    assert len(pd.read_csv(d / "metrics.csv")) == 3 and len(pd.read_csv(d / "steps.csv")) == 15
    assert json.loads((d / "summary.json").read_text())["status"] == "finished"
    (exit_record,) = read_wandb_records(d, "exit")  # the W&B run was closed, as failed
    assert exit_record.exit.exit_code == 1


PROBE = "tracking.default_wandb_mode()"


def _mode_under(home, **env) -> str:
    """default_wandb_mode() in a fresh process whose home is `home` (W&B reads its settings
    once per process)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from resnetf import tracking; print(tracking.default_wandb_mode())",
        ],
        env={**environ, "HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    return out.stdout.strip().splitlines()[-1]


def _netrc(home, host):
    (home / ".netrc").write_text(f"machine {host}\n  login user\n  password {'a' * 40}\n")
    (home / ".netrc").chmod(0o600)


@pytest.mark.slow
def test_default_mode_is_online_only_when_logged_in_to_the_host_wandb_uses(tmp_path):
    """Logged in means a key for the host W&B is configured for: a self-hosted server set by
    `wandb login --host` (W&B's settings file), not one hard-coded host."""
    home = tmp_path / "home"
    (home / ".config" / "wandb").mkdir(parents=True)
    assert _mode_under(home) == "offline"
    (home / ".config" / "wandb" / "settings").write_text(
        "[default]\nbase_url = https://wandb.example.org\n"
    )
    _netrc(home, "api.wandb.ai")  # a key for another host: not logged in to this one
    assert _mode_under(home) == "offline"
    _netrc(home, "wandb.example.org")
    assert _mode_under(home) == "online"
    assert _mode_under(home, WANDB_MODE="disabled") == "disabled"
    assert _mode_under(tmp_path / "nobody", WANDB_API_KEY="k" * 40) == "online"


def test_the_wandb_requirement_admits_no_version_without_what_the_tracker_calls():
    """The tracker calls wandb.init(reinit="create_new"), which W&B has from WANDB_NEEDS on:
    an older W&B would silently turn tracking off."""
    from packaging.version import Version

    for path in (REPO / "requirements.txt", REPO / "pyproject.toml"):
        (line,) = [
            l for l in path.read_text().splitlines() if '"wandb>=' in l or l.startswith("wandb>=")
        ]
        lowest = line.split(">=")[1].split(",")[0].split('"')[0].split()[0]
        assert Version(lowest) >= Version(tracking.WANDB_NEEDS), path


def test_run_folders_never_collide(tmp_path):
    dirs = {tracking.new_run_dir(tmp_path, "exp", 0) for _ in range(5)}
    assert len(dirs) == 5 and all(d.is_dir() for d in dirs)
