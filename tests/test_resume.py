"""Checkpoints, resume, and what happens when a run is interrupted or the disk fills up."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, read_wandb_records, run_dir_of
from resnetf import checkpoint, run
from resnetf.train import Context, RunStopped

COLS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]


def _stop_after(epoch):
    def hook(metrics):
        if metrics["epoch"] == epoch:
            raise RunStopped("stopped", f"stopped after epoch {epoch}")
    return hook


@pytest.mark.parametrize("backend, workers", [("albumentations", 2), ("gpu", 0)])
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tiny_cfg, backend, workers):
    cfg = tiny_cfg.replace(backend=backend, workers=workers, epochs=3, dropout=0.1, ema=0.5,
                           analysis=False)
    whole = run_dir_of(run(cfg))
    with pytest.raises(RunStopped):
        run(cfg, Context(on_epoch=_stop_after(2)))
    (stopped,) = [p for p in Path(cfg.runs_dir).iterdir() if p != whole]
    assert checkpoint.load(stopped)["progress"]["epoch"] == 2
    run(cfg.replace(resume=str(stopped)))
    a, b = (pd.read_csv(d / "metrics.csv") for d in (whole, stopped))
    pd.testing.assert_frame_equal(a[COLS], b[COLS], check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(whole / "steps.csv"), pd.read_csv(stopped / "steps.csv"),
                                  check_exact=True)
    sa, sb = torch.load(whole / "model.pt"), torch.load(stopped / "model.pt")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(tiny_cfg, monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        if str(f).endswith(".tmp"):
            calls["n"] += 1
            if calls["n"] == 2:  # the second epoch's checkpoint: half written, then ENOSPC
                Path(f).write_bytes(b"partial")
                raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)
    with pytest.warns(UserWarning, match="checkpoint not written.*No space left"):
        summary = run(tiny_cfg.replace(epochs=3, analysis=False))
    d = run_dir_of(summary)
    assert summary["status"] == "finished" and len(pd.read_csv(d / "metrics.csv")) == 3
    assert checkpoint.load(d)["progress"]["epoch"] == 3  # the next epoch wrote again
    assert not (d / "checkpoint.pt.tmp").exists()


def test_resume_of_a_folder_without_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"name": "x"}))
    proc = subprocess.run([sys.executable, "experiments/oc_24ep.py", f"--resume={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no checkpoint.pt" in proc.stderr


def test_unwritable_runs_folder_is_a_clear_error(tiny_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = subprocess.run([sys.executable, "experiments/oc_24ep.py", f"--data_dir={tiny_data}",
                           f"--runs_dir={blocker / 'runs'}", "--wandb_mode=disabled",
                           "--batch_size=20"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "runs_dir" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_after_the_step_keeps_the_checkpoint_and_says_how_to_resume(tiny_data,
                                                                                 tmp_path, sig):
    proc = subprocess.Popen(
        [sys.executable, "experiments/oc_24ep.py", f"--data_dir={tiny_data}",
         f"--runs_dir={tmp_path}", "--epochs=200", "--batch_size=10", "--width=0.0625",
         "--workers=0", "--backend=gpu", "--wandb_mode=offline", "--no_progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob("*/checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    (run_dir,) = tmp_path.iterdir()
    assert f"--resume {run_dir}" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    done = checkpoint.load(run_dir)["progress"]["epoch"]
    assert summary["status"] == "interrupted" and 1 <= done < 200
    assert len(pd.read_csv(run_dir / "metrics.csv")) >= done
    # the W&B run was closed as unsuccessful
    (exit_record,) = read_wandb_records(run_dir, "exit")
    assert exit_record.exit.exit_code == 1


def test_second_signal_stops_at_once():
    from resnetf.train import StopOnSignal

    stop = StopOnSignal()
    stop.handle(signal.SIGINT, None)
    assert stop.requested
    with pytest.raises(KeyboardInterrupt):
        stop.handle(signal.SIGINT, None)


def test_resume_from_the_command_line_finishes_the_run(tiny_cfg):
    cfg = tiny_cfg.replace(epochs=3, analysis=False)
    with pytest.raises(RunStopped):
        run(cfg, Context(on_epoch=_stop_after(1)))
    (run_dir,) = Path(cfg.runs_dir).iterdir()
    again = subprocess.run([sys.executable, "experiments/oc_24ep.py", f"--resume={run_dir}"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"resuming {run_dir} after epoch 1" in again.stdout
    assert pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    assert pd.read_csv(run_dir / "steps.csv")["step"].tolist() == list(range(3 * 5))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


def test_deterministic_runs_match_and_turn_on_deterministic_algorithms(tiny_cfg):
    cfg = tiny_cfg.replace(deterministic=True, analysis=False)
    try:
        a, b = run(cfg), run(cfg)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    ma, mb = (pd.read_csv(run_dir_of(s) / "metrics.csv") for s in (a, b))
    pd.testing.assert_frame_equal(ma[COLS], mb[COLS], check_exact=True)


def test_unknown_experiment_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "resnetf.bench", "experiments/nope.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "experiments/nope.py is not an experiment file" in proc.stderr
    assert "Traceback" not in proc.stderr
