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


# two optimizers (Muon and SGD), two schedules (the early parameters' own decay) and lookahead
MUON = dict(optimizer="muon", model="whitened_convnet", schedule="linear_decay", stem_bias_epochs=2)
# the speedrun's: Muon's periodic renormalisation counts its steps across the resume, a
# fractional whitening-bias epoch, the colour jitter's draws
SPEEDRUN = dict(
    MUON,
    muon_rescale_interval=2,
    muon_rescale_growth=4,
    muon_weight_decay=0.01,
    stem_bias_epochs=0.5,
    brightness=0.1,
    contrast=0.1,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, workers, recipe",
    [
        ("albumentations", 2, {}),
        ("gpu", 0, {}),
        ("gpu", 0, {**MUON, "lookahead": 0.9}),
        ("gpu", 0, SPEEDRUN),
    ],
    ids=["albumentations", "gpu", "muon", "speedrun"],
)
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tiny_cfg, backend, workers, recipe):
    cfg = tiny_cfg.replace(
        backend=backend, workers=workers, epochs=3, dropout=0.1, ema=0.5, analysis=False
    ).replace(**recipe)
    whole = run_dir_of(run(cfg))
    with pytest.raises(RunStopped):
        run(cfg, Context(on_epoch=_stop_after(2)))
    (stopped,) = [p for p in Path(cfg.runs_dir).iterdir() if p != whole]
    assert checkpoint.load(stopped)["progress"]["epoch"] == 2
    run(cfg.replace(resume=str(stopped)))
    a, b = (pd.read_csv(d / "metrics.csv") for d in (whole, stopped))
    pd.testing.assert_frame_equal(a[COLS], b[COLS], check_exact=True)
    pd.testing.assert_frame_equal(
        pd.read_csv(whole / "steps.csv"), pd.read_csv(stopped / "steps.csv"), check_exact=True
    )
    sa, sb = (torch.load(d / "model.pt")["state_dict"] for d in (whole, stopped))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "full",
    [
        OSError(28, "No space left on device"),
        # what torch's own zip writer raises on ENOSPC: a RuntimeError, not an OSError
        RuntimeError(
            "[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0: "
            "PytorchStreamWriter failed writing file data/0: file write failed"
        ),
    ],
)
def test_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(full, tiny_cfg, monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        if str(f).endswith(".tmp"):
            calls["n"] += 1
            if calls["n"] == 2:  # the second epoch's checkpoint: half written, then ENOSPC
                Path(f).write_bytes(b"partial")
                raise full
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.warns(UserWarning, match="checkpoint not written.*(No space left|write failed)"):
        summary = run(tiny_cfg.replace(epochs=3, analysis=False))
    d = run_dir_of(summary)
    assert summary["status"] == "finished" and len(pd.read_csv(d / "metrics.csv")) == 3
    assert checkpoint.load(d)["progress"]["epoch"] == 3  # the next epoch wrote again
    assert not (d / "checkpoint.pt.tmp").exists()


@pytest.mark.slow
def test_resume_of_a_folder_without_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"name": "x"}))
    proc = subprocess.run(
        [sys.executable, "experiments/oc_24ep.py", f"--resume={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "no checkpoint.pt" in proc.stderr


@pytest.mark.slow
def test_unwritable_runs_folder_is_a_clear_error(tiny_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = subprocess.run(
        [
            sys.executable,
            "experiments/oc_24ep.py",
            f"--data_dir={tiny_data}",
            f"--runs_dir={blocker / 'runs'}",
            "--wandb_mode=disabled",
            "--batch_size=20",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "runs_dir" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_after_the_step_keeps_the_checkpoint_and_says_how_to_resume(
    tiny_data, tmp_path, sig
):
    proc = subprocess.Popen(
        [
            sys.executable,
            "experiments/oc_24ep.py",
            f"--data_dir={tiny_data}",
            f"--runs_dir={tmp_path}",
            "--epochs=200",
            "--batch_size=10",
            "--width=0.0625",
            "--workers=0",
            "--backend=gpu",
            "--wandb_mode=offline",
            "--no_progress",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 900  # a loaded machine may take minutes to its first checkpoint
    while not list(tmp_path.glob("*/checkpoint.pt")):
        assert proc.poll() is None, f"the run ended before the signal: {proc.stderr.read()}"
        assert time.time() < deadline, "no checkpoint in 900 s"
        time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
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


@pytest.mark.slow
def test_resume_from_the_command_line_finishes_the_run(tiny_cfg):
    cfg = tiny_cfg.replace(epochs=3, analysis=False)
    with pytest.raises(RunStopped):
        run(cfg, Context(on_epoch=_stop_after(1)))
    (run_dir,) = Path(cfg.runs_dir).iterdir()
    again = subprocess.run(
        [sys.executable, "experiments/oc_24ep.py", f"--resume={run_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
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


@pytest.mark.slow
def test_unknown_experiment_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "resnetf.bench", "experiments/nope.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "experiments/nope.py is not an experiment file" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- one line, no traceback, nothing on disk changed ----------------------------------------------


def _experiment(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "experiments/oc_24ep.py", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(proc, *needles):
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert all(n in line for n in needles), line


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_on_a_machine_without_it(tiny_data, tmp_path):
    _one_line_error(
        _experiment(
            f"--data_dir={tiny_data}",
            f"--runs_dir={tmp_path / 'runs'}",
            "--device=cuda",
            "--wandb_mode=disabled",
        ),
        "device: cuda",
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_resume_of_a_missing_folder_or_a_folder_that_is_no_run(tmp_path):
    _one_line_error(_experiment(f"--resume={tmp_path / 'nope'}"), "no run folder at")
    (tmp_path / "empty").mkdir()
    _one_line_error(_experiment(f"--resume={tmp_path / 'empty'}"), "not a resnetf run folder")
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.slow
def test_resume_of_a_run_stopped_before_its_first_checkpoint_says_so(tiny_cfg):
    def stop_at_once(tracker):
        raise RunStopped("interrupted", "Ctrl-C", failed=True)

    with pytest.raises(RunStopped):
        run(tiny_cfg, Context(on_start=stop_at_once))
    (run_dir,) = Path(tiny_cfg.runs_dir).iterdir()
    before = _snapshot(run_dir)
    _one_line_error(_experiment(f"--resume={run_dir}"), "stopped before its first epoch ended")
    assert _snapshot(run_dir) == before


def _stopped_after_the_first_of_three_epochs(tiny_cfg) -> Path:
    cfg = tiny_cfg.replace(epochs=3, analysis=False)
    with pytest.raises(RunStopped):
        run(cfg, Context(on_epoch=_stop_after(1)))
    (run_dir,) = Path(cfg.runs_dir).iterdir()
    return run_dir


@pytest.mark.slow
def test_resume_of_a_truncated_checkpoint(tiny_cfg):
    run_dir = _stopped_after_the_first_of_three_epochs(tiny_cfg)
    path = run_dir / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = _snapshot(run_dir)
    _one_line_error(_experiment(f"--resume={run_dir}"), "checkpoint.pt cannot be read", "truncated")
    assert _snapshot(run_dir) == before


@pytest.mark.slow
def test_resume_refuses_a_changed_setting_and_allows_how_it_runs(tiny_cfg):
    run_dir = _stopped_after_the_first_of_three_epochs(tiny_cfg)
    before = _snapshot(run_dir)
    _one_line_error(
        _experiment(f"--resume={run_dir}", "--max_lr=0.3"),
        "--max_lr=0.3",
        "0.2",
        "keeps the config it was started with",
    )
    assert _snapshot(run_dir) == before
    proc = _experiment(f"--resume={run_dir}", "--workers=1", "--no_progress")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "summary.json").read_text())["epochs_done"] == 3


def test_resuming_a_finished_run_says_so_and_changes_nothing(tiny_cfg, capsys):
    from resnetf.cli import main

    d = run_dir_of(run(tiny_cfg.replace(analysis=False)))
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    summary = main(tiny_cfg, ["--resume", str(d)])
    assert summary["status"] == "finished"
    assert "already finished" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before


@pytest.mark.slow
def test_resuming_with_another_experiments_file_names_the_runs_experiment(tiny_cfg, capsys):
    from resnetf.cli import main
    from resnetf.config import load_experiment

    def stop(metrics):
        raise RunStopped("interrupted", "stopped for the test", failed=True)

    with pytest.raises(RunStopped):
        run(tiny_cfg.replace(epochs=3, analysis=False), Context(on_epoch=stop))
    (d,) = Path(tiny_cfg.runs_dir).iterdir()
    summary = main(load_experiment(REPO / "experiments" / "oc_24ep.py"), ["--resume", str(d)])
    assert "a run of tiny (not oc_24ep): it goes on with its own config" in capsys.readouterr().out
    assert summary["status"] == "finished" and summary["epochs_done"] == 3
    assert json.loads((d / "config.json").read_text())["model"] == "resnet9"


@pytest.mark.slow
def test_a_run_that_fails_before_training_creates_no_folder(tmp_path, monkeypatch):
    proc = subprocess.run(
        [
            sys.executable,
            "experiments/oc_24ep.py",
            f"--data_dir={tmp_path / 'nodata'}",
            "--no_download",
            f"--runs_dir={tmp_path / 'runs'}",
            "--wandb_mode=disabled",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "no CIFAR-10 at" in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nodata").exists()
    # a download that fails takes back the folders it made
    import torchvision.datasets

    from resnetf import data

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(data.DataError, match="could not download"):
        data.load_cifar10(tmp_path / "fresh" / "data")
    assert not (tmp_path / "fresh").exists()


def test_an_ema_longer_than_the_run_is_said_at_the_start(tiny_cfg, capsys):
    run(tiny_cfg.replace(ema=0.999, analysis=False))
    assert "--ema=0.999 averages over about 1000 steps, more than this run's 10" in (
        capsys.readouterr().err
    )
