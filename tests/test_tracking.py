import json

import pandas as pd
import pytest
import torch

from conftest import read_wandb_history, read_wandb_records, run_dir_of, scheduler_lrs
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


def test_default_mode_is_online_only_when_logged_in(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert tracking.default_wandb_mode() == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / "netrc").chmod(0o600)
    assert tracking.default_wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.default_wandb_mode() == "disabled"


def test_run_folders_never_collide(tmp_path):
    dirs = {tracking.new_run_dir(tmp_path, "exp", 0) for _ in range(5)}
    assert len(dirs) == 5 and all(d.is_dir() for d in dirs)
