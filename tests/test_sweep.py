"""The W&B sweep: its file against W&B's own schema, the command W&B's agent builds, the flags
the agent writes, a run stopped by the sweep's early termination, and the summary metric."""

import importlib
import json
import os
import queue
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import REPO, read_wandb_records, read_wandb_summary, run_dir_of
from resnetf import run
from resnetf.config import Config, parse

SWEEP = yaml.safe_load((REPO / "sweeps" / "lr.yaml").read_text())


def wandb_sweep_engine():
    """W&B's sweep engine (the `sweeps` package), or None. The repo's own sweeps/ folder, found
    as a namespace package when the engine is not installed, does not count."""
    sys.modules.pop("sweeps", None)
    try:
        module = importlib.import_module("sweeps")
    except ImportError:
        return None
    finally:
        sys.modules.pop("sweeps", None)  # import it afresh next time, whatever sys.path holds
    if getattr(module, "__file__", None) is None or not hasattr(
        module, "schema_violations_from_proposed_config"
    ):
        return None
    return module


EXPERIMENTS = ("oc_24ep", "fast94", "fast94_muon", "fast94_speedrun")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_experiments_sweep_file_passes_wandbs_own_schema_and_runs_it(experiment):
    from resnetf.config import load_experiment
    from resnetf.search_space import sweep_path

    cfg = load_experiment(REPO / "experiments" / f"{experiment}.py")
    sweep = yaml.safe_load(sweep_path(cfg.sweep).read_text())
    assert sweep["program"] == f"experiments/{experiment}.py"  # the sweep runs its own experiment
    assert sweep["metric"] == {"name": "val_acc", "goal": "maximize"} and sweep["run_cap"] > 0
    if "early_terminate" in sweep:  # Hyperband needs the metric every epoch
        assert cfg.eval_every == 1
    sweeps = wandb_sweep_engine()
    if sweeps is None:
        pytest.skip("W&B's sweep engine is not installed (requirements-test.txt has it)")
    assert sweeps.schema_violations_from_proposed_config(sweep) == []
    broken = {
        **sweep,
        "parameters": {**sweep["parameters"], "max_lr": {"distribution": "log_uniform_valuez"}},
    }
    assert sweeps.schema_violations_from_proposed_config(broken) != []


def test_the_repos_sweeps_folder_is_not_mistaken_for_wandbs_engine(monkeypatch):
    # without W&B's engine on the path, `import sweeps` finds the repo's sweeps/ folder
    monkeypatch.setattr(
        sys, "path", [str(REPO)] + [p for p in sys.path if "site-packages" not in p]
    )
    assert wandb_sweep_engine() is None


def _agent_command(suggestion: dict) -> list[str]:
    """What W&B's agent runs for a suggestion: its own helpers build the flags, then each
    ${macro} of the sweep's command is replaced as the agent replaces it."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    flags = sweep_utils.create_sweep_command_args({"args": suggestion})
    macros = {**flags, "env": [], "interpreter": [sys.executable], "program": [SWEEP["program"]]}
    command = []
    for chunk in sweep_utils.create_sweep_command(list(SWEEP["command"])):
        command += macros[chunk[2:-1]] if chunk.startswith("${") else [chunk]
    return command


@pytest.mark.slow
def test_experiment_runs_with_the_arguments_the_agent_builds(tiny_data, tmp_path):
    command = _agent_command(
        {"max_lr": {"value": 0.3}, "pct_start": {"value": 0.25}, "dropout": {"value": 0.1}}
    )
    assert "--max_lr=0.3" in command and "--val_size=5000" in command
    # the tiny settings come after the agent's flags: the last value of a flag wins
    tiny = [
        f"--data_dir={tiny_data}",
        f"--runs_dir={tmp_path}",
        "--val_size=20",
        "--width=0.0625",
        "--batch_size=20",
        "--epochs=2",
        "--workers=0",
        "--wandb_mode=disabled",
    ]
    proc = subprocess.run(command + tiny, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = tmp_path.iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["max_lr"], config["pct_start"], config["dropout"]) == (0.3, 0.25, 0.1)
    assert "val_acc" in pd.read_csv(run_dir / "metrics.csv")  # the sweep's metric is logged


def test_agent_style_booleans_and_integral_floats_are_accepted():
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    suggestion = {
        "three_phase": {"value": True},
        "flip": {"value": False},
        "batch_size": {"value": 256.0},
        "workers": {"value": 2.0},
        "max_lr": {"value": 0.3},
    }
    flags = sweep_utils.create_sweep_command_args({"args": suggestion})["args"]
    assert "--three_phase=True" in flags and "--batch_size=256.0" in flags  # what W&B writes
    cfg = parse(Config(), flags)
    assert (cfg.three_phase, cfg.flip, cfg.batch_size, cfg.workers, cfg.max_lr) == (
        True,
        False,
        256,
        2,
        0.3,
    )
    assert isinstance(cfg.batch_size, int)
    with pytest.raises(SystemExit):  # a fraction is still no batch size
        parse(Config(), ["--batch_size=256.5"])


def test_summary_keeps_the_best_and_the_last_accuracy(tiny_cfg):
    summary = run(tiny_cfg.replace(wandb_mode="offline", epochs=3, val_size=20, analysis=False))
    metrics = pd.read_csv(run_dir_of(summary) / "metrics.csv")
    wandb_summary = read_wandb_summary(run_dir_of(summary))
    for split in ("val", "test"):
        assert wandb_summary[f"{split}_acc"] == {
            "max": metrics[f"{split}_acc"].max(),
            "last": metrics[f"{split}_acc"].iloc[-1],
        }
    assert wandb_summary["best_val_acc"] == summary["best_val_acc"] == metrics["val_acc"].max()


@pytest.mark.slow
def test_a_run_stopped_by_the_sweep_ends_as_stopped_not_failed(tiny_data, tmp_path, monkeypatch):
    """W&B's own agent code starts the run and stops it (SIGTERM) as early termination does."""
    from wandb import wandb_agent

    monkeypatch.chdir(REPO)
    for var, value in {
        "WANDB_SWEEP_ID": "testsweep",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "agent"),
        "WANDB_SILENT": "true",
    }.items():
        monkeypatch.setenv(var, value)
    for var in ("WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):  # the agent sets them in-process:
        monkeypatch.setenv(var, "")  # recorded, so that they are gone again after the test
        monkeypatch.delenv(var)
    (tmp_path / "agent").mkdir()
    agent = wandb_agent.Agent(api=None, queue=queue.Queue(), sweep_id="testsweep")
    agent._sweep_command = list(SWEEP["command"]) + [
        f"--data_dir={tiny_data}",
        f"--runs_dir={tmp_path / 'runs'}",
        "--val_size=20",
        "--width=0.0625",
        "--batch_size=10",
        "--epochs=200",
        "--workers=0",
        "--backend=gpu",
        "--no_progress",
    ]
    agent._command_run(
        {
            "run_id": "sweeprun1",
            "program": SWEEP["program"],
            "args": {
                "max_lr": {"value": 0.2},
                "pct_start": {"value": 0.25},
                "dropout": {"value": 0.0},
            },
        }
    )
    proc = agent._run_processes["sweeprun1"]
    deadline = time.time() + 900  # a loaded machine may take minutes to its first checkpoint
    while not list((tmp_path / "runs").glob("*/checkpoint.pt")):
        assert proc.poll() is None, "the run ended before it was stopped"
        assert time.time() < deadline, "no checkpoint in 900 s"
        time.sleep(0.2)
    agent._command_stop({"run_id": "sweeprun1"})
    assert proc.wait(timeout=300) == 0  # the agent counts exit codes > 0 as failed runs
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped_by_sweep" and 1 <= summary["epochs_done"] < 200
    (exit_record,) = read_wandb_records(run_dir, "exit")
    assert exit_record.exit.exit_code == 0
    assert read_wandb_summary(run_dir)["status"] == "stopped_by_sweep"
    assert json.loads((run_dir / "config.json").read_text())["max_lr"] == 0.2


@pytest.mark.slow
def test_a_non_editable_install_tunes_an_experiment_copied_elsewhere(tiny_data, tmp_path):
    """After `pip install .` (not editable) the package lives in site-packages, far from the
    repo's sweeps/: an experiment copied with its sweep file into a folder of the user's finds
    the sweep beside it (experiments/../sweeps/) and tunes."""
    target, work, source = tmp_path / "site", tmp_path / "mine", tmp_path / "source"
    # built from a copy: a build writes build/ and egg-info beside the sources, not in the repo
    shutil.copytree(REPO / "resnetf", source / "resnetf", ignore=shutil.ignore_patterns("__py*"))
    shutil.copy(REPO / "pyproject.toml", source)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--target", str(target), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (work / "experiments").mkdir(parents=True)
    (work / "sweeps").mkdir()
    shutil.copy(REPO / "experiments" / "oc_24ep.py", work / "experiments")
    shutil.copy(REPO / "sweeps" / "lr.yaml", work / "sweeps")
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = "import resnetf; print(resnetf.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=tmp_path,
        text=True,
        capture_output=True,
        timeout=120,
    ).stdout
    assert where.startswith(str(target)), where  # the installed copy, not the repo's
    out = subprocess.run(
        [sys.executable, str(work / "experiments" / "oc_24ep.py"), "--tune=1", "--val_size=20"]
        + [f"--data_dir={tiny_data}", f"--runs_dir={tmp_path / 'runs'}", "--epochs=3"]
        + ["--batch_size=10", "--width=0.0625", "--workers=0", "--wandb_mode=disabled"]
        + ["--no_progress", "--pruner=none"],
        env=env,
        cwd=tmp_path,  # neither the repo nor the experiment's folder
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert str(work / "sweeps" / "lr.yaml") in out.stdout
