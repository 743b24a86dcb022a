"""Checkpoints, resume, and what happens when a run is interrupted or the disk fills up."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, run_dir_of
from resnetf import checkpoint, run
from resnetf.train import RunStopped

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
        run(cfg, on_epoch=_stop_after(2))
    (stopped,) = [p for p in Path(cfg.runs_dir).iterdir() if p != whole]
    assert checkpoint.load(stopped)["epoch"] == 2
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
    assert checkpoint.load(d)["epoch"] == 3  # the next epoch wrote again
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
