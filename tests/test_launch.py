"""resnetf.launch: the same runs in more places. An ablation on local processes and on a real
one-node SLURM gives the inline table; a preempted task is requeued and its run ends as an
uninterrupted one; a failed run is one line and the others finish; a killed driver rerun submits
nothing twice; a study's workers end with exactly N trials; bad launch settings are one line."""

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from conftest import REPO, tiny_run_flags
from resnetf import ablate
from resnetf.launch import deal

EXPERIMENT = str(REPO / "experiments" / "oc_24ep.py")


_tiny = tiny_run_flags

ABLATION = [EXPERIMENT, "--seeds", "2", "--vary", "cutout=0"]


def _per_run(runs_dir: Path) -> dict:
    """(config hash, seed) -> (its final test accuracy, its per-epoch training losses)."""
    out = {}
    for config in Path(runs_dir).glob("oc_24ep_s*/config.json"):
        c = json.loads(config.read_text())
        summary = json.loads((config.parent / "summary.json").read_text())
        losses = pd.read_csv(config.parent / "metrics.csv")["train_loss"].tolist()
        out[(c["config_hash"], c["seed"])] = (summary["final_test_acc"], losses)
    return out


@pytest.fixture(scope="module")
def inline_ablation(tiny_data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("inline") / "runs"
    table = ablate.main([*ABLATION, "--", *_tiny(tiny_data, runs)])
    return table, _per_run(runs)


def _same_table(table, inline):
    cols = ["variant", "config_hash", "n", "mean", "std", "diff", "paired_ci_low"]
    pd.testing.assert_frame_equal(table[cols], inline[cols])


def test_runs_are_dealt_round_robin():
    assert deal(list(range(7)), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert deal(list(range(2)), 8) == [[0], [1]]  # more jobs than runs: fewer tasks


def test_each_task_runs_every_config_the_seeds_allow():
    # 3 configs x 2 seeds, interleaved, on 3 tasks: round-robin would give task 0 every base run
    runs = [(config, seed) for seed in range(2) for config in "abc"]
    shards = deal(runs, 3, group=lambda r: r[0])
    assert shards == [[("a", 0), ("c", 1)], [("b", 0), ("a", 1)], [("c", 0), ("b", 1)]]
    assert all(len({c for c, _ in s}) == 2 for s in shards)
    runs = [(config, seed) for seed in range(4) for config in "ab"]
    assert all({c for c, _ in s} == {"a", "b"} for s in deal(runs, 2, group=lambda r: r[0]))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["local", "pool"])
def test_an_ablation_on_two_tasks_gives_the_inline_table(
    launcher, inline_ablation, tiny_data, tmp_path, capsys
):
    runs = tmp_path / "runs"
    flags = _tiny(tiny_data, runs, f"--launcher={launcher}", "--jobs=2")
    table = ablate.main([*ABLATION, "--", *flags])
    inline_table, inline_runs = inline_ablation
    _same_table(table, inline_table)
    assert _per_run(runs) == inline_runs  # metric for metric, epoch by epoch
    placed = [json.loads(p.read_text())["launch"] for p in runs.glob("oc_24ep_s*/config.json")]
    assert sorted(p["task_index"] for p in placed) == [0, 0, 1, 1]
    assert len({p["pid"] for p in placed}) == 2  # two processes, each ran its shard
    # the same command again finds every run done and submits nothing
    capsys.readouterr()
    again = ablate.main([*ABLATION, "--", *flags])
    assert "4 already done, 0 submitted" in capsys.readouterr().out
    _same_table(again, inline_table)


@pytest.mark.slow
def test_a_killed_driver_rerun_submits_nothing_twice(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "resnetf.ablate", *ABLATION, "--"]
    flags = _tiny(tiny_data, runs, "--launcher=local", "--jobs=2", "--epochs=6")
    driver = subprocess.Popen(
        [*command, *flags],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not list(runs.glob("launch/*/launch.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)  # the driver only: its tasks go on
    driver.wait()
    (record,) = runs.glob("launch/*/launch.json")
    submitted = {j["job_id"] for j in json.loads(record.read_text())["jobs"]}
    again = subprocess.run(
        [*command, *flags], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    after = {j["job_id"] for j in json.loads(record.read_text())["jobs"]}
    # it waited for the first driver's tasks, or found their runs done: no new task, no run twice
    assert after <= submitted
    assert len(list(runs.glob("oc_24ep_s*/config.json"))) == 4


@pytest.mark.slow
def test_a_run_that_raises_is_one_line_and_the_other_tasks_runs_finish(tiny_data, tmp_path, capsys):
    # a One Cycle warm-up of 0.05 x 10 steps has no step: that run raises when it builds
    runs = tmp_path / "runs"
    argv = [EXPERIMENT, "--seeds", "2", "--vary", "pct_start=0.05", "--"]
    with pytest.raises(SystemExit) as e:
        ablate.main([*argv, *_tiny(tiny_data, runs, "--launcher=local", "--jobs=2")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    failed = [l for l in err.splitlines() if l.startswith("error: pct_start=0.05")]
    assert len(failed) == 2 and all("_log.out" in l for l in failed), err
    assert len(list(runs.glob("oc_24ep_s*/summary.json"))) == 2  # the base's two finished


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--launcher=local", "--jobs=0"], "jobs: must be >= 1"),
        (["--jobs=2"], "jobs: says where a launch's tasks run"),
        (["--slurm_param=mem"], "slurm_param: says where"),
        (["--storage=s.log"], "storage: is a study's setting"),
        (["--study=s"], "study: is a study's setting"),
        (["--launcher=local", "--gpus_per_job=1", "--jobs=2"], "pins each job to its own GPU"),
        (["--launcher=local", "--debug=fast"], "launcher: a debug mode"),
        (["--launcher=local", "--launch_dir={tmp}/a_file/launch"], "is not a folder"),
        (["--launcher=slurm", "--tune=2"], "SQLite is not for parallel writers"),
        (["--launcher=slurm", "--tune=2", "--storage=sqlite:///{tmp}/s.db"], "SQLite"),
        (["--launcher=slurm"], "needs SLURM's sbatch"),
        (["--launcher=slurm", "--slurm_param=mem"], "slurm_param: 'mem' is not KEY=VALUE"),
    ],
)
def test_bad_launch_settings_are_one_line_and_submit_nothing(
    flags, message, tiny_data, tmp_path, monkeypatch, capsys
):
    from resnetf import main
    from resnetf.config import load_experiment

    if "sbatch" in message:
        monkeypatch.setenv("PATH", str(tmp_path / "no_slurm_here"))
    (tmp_path / "a_file").write_text("")
    runs = tmp_path / "runs"
    flags = [f.format(tmp=tmp_path) for f in flags]
    with pytest.raises(SystemExit) as e:
        main(load_experiment(EXPERIMENT), _tiny(tiny_data, runs, *flags))
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not runs.exists()


def _ablate(*flags):
    return [sys.executable, "-m", "resnetf.ablate", *ABLATION, "--", *flags]


def _records(runs: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in runs.glob("launch/*/launch.json")]


@pytest.mark.slow
def test_two_drivers_started_together_submit_once(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    command = _ablate(*_tiny(tiny_data, runs, "--launcher=pool", "--jobs=2"))
    drivers = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outs = [d.communicate(timeout=900)[0].decode() for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outs
    (record,) = _records(runs)  # one folder for the work, found by both
    assert len({j["launch_id"] for j in record["jobs"]}) == 1 and len(record["jobs"]) == 2
    assert len(list(runs.glob("oc_24ep_s*/summary.json"))) == 4  # 4 runs, each once
    assert sum("0 submitted" in o for o in outs) == 1, outs


@pytest.mark.slow
def test_overlapping_ablations_share_their_runs(tiny_data, tmp_path):
    # --seeds 3 started while --seeds 2 of the same ablation runs: another work, the same runs
    runs = tmp_path / "runs"
    flags = _tiny(tiny_data, runs, "--launcher=pool", "--jobs=2", "--epochs=3", "--batch_size=10")
    commands = [
        [sys.executable, "-m", "resnetf.ablate", EXPERIMENT, "--seeds", n, "--vary", "cutout=0"]
        + ["--", *flags]
        for n in ("2", "3")
    ]
    drivers = [
        subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for c in commands
    ]
    outs = [d.communicate(timeout=900)[0].decode() for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outs
    folders = list(runs.glob("oc_24ep_s*/config.json"))
    assert len(folders) == 6  # 2 configs x 3 seeds, each once
    for config in folders:  # each folder written by one process: 3 epochs of 10 steps
        assert len(pd.read_csv(config.parent / "metrics.csv")) == 3
        assert len(pd.read_csv(config.parent / "steps.csv")) == 30
        assert json.loads((config.parent / "summary.json").read_text())["epochs_done"] == 3


@pytest.mark.slow
def test_a_rerun_with_another_launch_dir_finds_its_record(tiny_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    ablate.main([*ABLATION, "--", *_tiny(tiny_data, runs, "--launcher=pool", "--jobs=2")])
    capsys.readouterr()
    other = tmp_path / "elsewhere"
    flags = _tiny(tiny_data, runs, "--launcher=pool", "--jobs=2", f"--launch_dir={other}")
    ablate.main([*ABLATION, "--", *flags])
    out = capsys.readouterr().out
    assert "this work was launched from" in out and "4 already done, 0 submitted" in out
    assert not other.exists()


def test_another_works_record_is_refused_in_one_line(tiny_data, tmp_path, capsys):
    folder = tmp_path / "shared_launch"
    folder.mkdir()
    (folder / "launch.json").write_text(json.dumps({"work": "0123abcd", "name": "x", "jobs": []}))
    before = (folder / "launch.json").read_text()
    flags = _tiny(tiny_data, tmp_path / "runs", "--launcher=pool", f"--launch_dir={folder}")
    with pytest.raises(SystemExit) as e:
        ablate.main([*ABLATION, "--", *flags])
    err = capsys.readouterr().err
    assert e.value.code == 1 and len(err.strip().splitlines()) == 1, err
    assert "another work" in err and "0123abcd" in err
    assert (folder / "launch.json").read_text() == before  # never written over


@pytest.mark.slow
def test_a_launch_record_with_damaged_job_entries_is_read_as_ended_jobs(
    tiny_data, tmp_path, capsys
):
    runs = tmp_path / "runs"
    flags = _tiny(tiny_data, runs, "--launcher=pool", "--jobs=2")
    ablate.main([*ABLATION, "--", *flags])
    capsys.readouterr()
    (path,) = runs.glob("launch/*/launch.json")
    record = json.loads(path.read_text())
    first, second = record["jobs"][:2]
    del first["who"], first["log"]  # a pool job its place cannot look up any more
    second["runs"], second["job_id"] = "not a list", ["12"]
    record["jobs"] += [7, "text", {"launcher": "slurm"}]
    path.write_text(json.dumps(record))
    folders = {p: p.stat().st_mtime_ns for p in runs.glob("oc_24ep_s*/summary.json")}
    ablate.main([*ABLATION, "--", *flags])  # no KeyError: the entries are ended jobs
    assert "4 already done, 0 submitted" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in runs.glob("oc_24ep_s*/summary.json")} == folders


def test_jobs_recorded_by_another_driver_are_judged_by_host_pid_and_start(tmp_path):
    from resnetf import claims, places
    from resnetf.config import Config

    cfg = Config(launcher="local")
    me = claims.identity()
    record = {"launcher": "local", "job_id": str(me["pid"]), "log": "l", "err": "e"}
    result = str(tmp_path / "result.pkl")
    assert places.job_of({**record, "who": me, "result": result}, cfg).state() == "running"
    reused = {**me, "start": "another-boot:1"}  # the same pid, another process
    assert places.job_of({**record, "who": reused, "result": result}, cfg).state() == "failed"
    away = {**me, "host": "another-host"}
    assert places.job_of({**record, "who": away, "result": result}, cfg).state() == "unknown"
    # a driver killed while it submitted left a pending entry: no job to find, claims guard it
    pending = {"launcher": "local", "job_id": None, "runs": []}
    assert places.job_of(pending, cfg).state() == "done"


def test_squeue_that_fails_is_unknown_not_dead(tmp_path, monkeypatch):
    from resnetf import places

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "squeue").write_text("#!/bin/sh\necho 'slurm_load_jobs error: timeout' >&2\nexit 1\n")
    (fake / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    assert places.squeue_live({"job_id": "12"}) is None
    (fake / "squeue").write_text("#!/bin/sh\necho 'Invalid job id specified' >&2\nexit 1\n")
    assert places.squeue_live({"job_id": "12"}) is False


def test_local_tasks_are_pinned_within_the_parents_devices(monkeypatch):
    from resnetf import places
    from resnetf.config import Config

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,6")
    cfg = Config(launcher="local", jobs=2)
    assert [places.pinned(cfg, i) for i in range(2)] == [["5"], ["6"]]
    assert places.pinned(cfg.replace(gpus_per_job=2), 0) == ["5", "6"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert places.gpus_per_task(cfg) == 0  # no GPU here: the CPU
    # on SLURM the nodes' GPUs count, not the driver's: 1 per task unless asked otherwise
    assert places.gpus_per_task(cfg.replace(launcher="slurm")) == 1
    assert places.gpus_per_task(cfg.replace(launcher="slurm", gpus_per_job=0)) == 0


@pytest.mark.slow
def test_sigterm_stops_the_task_and_a_rerun_resumes_its_run(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    argv = [EXPERIMENT, "--seeds", "2", "--vary", "cutout=0", "--"]
    flags = _tiny(tiny_data, runs, "--launcher=pool", "--jobs=1", "--epochs=6")
    command = [sys.executable, "-m", "resnetf.ablate", *argv, *flags]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not list(runs.glob("oc_24ep_s0_*/checkpoint.pt")):
        assert time.monotonic() < deadline and driver.poll() is None, "no epoch checkpointed"
        time.sleep(0.1)
    ((job,),) = [r["jobs"] for r in _records(runs)]
    os.kill(job["who"]["pid"], signal.SIGTERM)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 1 and b"TaskStopped" in err, err[-3000:]
    assert len(list(runs.glob("oc_24ep_s*/config.json"))) == 1  # the task started no other run
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list(runs.glob("oc_24ep_s*/summary.json"))) == 4
    (log,) = [p for p in runs.glob("launch/*/*_log.out") if "resumed" in p.read_text()]


@pytest.mark.slow
def test_a_study_driver_rerun_adds_no_workers_while_they_live(tmp_path, capsys):
    from resnetf.config import Config
    from resnetf.launch import run_workers

    cfg = Config(launcher="pool", jobs=2, runs_dir=str(tmp_path / "runs"), gpus_per_job=0)
    go = tmp_path / "go"

    def worker():  # a stand-in worker: waits until the test says go
        wait = f"until [ -e {go} ]; do sleep 0.05; done"
        return functools.partial(subprocess.run, ["sh", "-c", wait])

    first = run_in_thread(run_workers, cfg, worker, "tune_s", lambda: "x")
    record = tmp_path / "runs" / "launch" / "tune_s" / "launch.json"
    deadline = time.monotonic() + 120
    while not record.exists() or not all(j["job_id"] for j in _jobs(record)) or not _jobs(record):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    capsys.readouterr()
    watching = threading.Event()  # the second driver has decided what to submit: it watches

    def progress():
        watching.set()
        return "x"

    second = run_in_thread(run_workers, cfg, worker, "tune_s", progress)
    assert watching.wait(120)
    go.write_text("")
    first.join(120)
    second.join(120)
    assert "2 workers still at work, 0 new" in capsys.readouterr().out
    assert len(_jobs(record)) == 2


def _jobs(record: Path) -> list:
    try:
        return json.loads(record.read_text())["jobs"]
    except (OSError, ValueError, KeyError):
        return []


def run_in_thread(fn, *args):
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


# --- on a real one-node SLURM ------------------------------------------------------------------


@pytest.mark.slow
def test_an_ablation_on_a_slurm_array_gives_the_inline_table(
    slurm, inline_ablation, tiny_data, tmp_path
):
    runs = tmp_path / "runs"
    flags = _tiny(tiny_data, runs, "--launcher=slurm", "--jobs=2", "--gpus_per_job=1")
    table = ablate.main([*ABLATION, "--", *flags])
    inline_table, inline_runs = inline_ablation
    _same_table(table, inline_table)
    assert _per_run(runs) == inline_runs
    placed = [json.loads(p.read_text())["launch"] for p in runs.glob("oc_24ep_s*/config.json")]
    by_task = {(p["slurm_array_task_id"], p["cuda_visible_devices"]) for p in placed}
    assert {t for t, _ in by_task} == {"0", "1"} and len(by_task) == 2
    assert {d for _, d in by_task} == {"0", "1"}  # one fake GPU each, as SLURM's gres gave them


def _squeue(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


@pytest.mark.slow
def test_a_preempted_task_is_requeued_and_its_run_ends_as_an_uninterrupted_one(
    slurm, tiny_data, tmp_path
):
    flags = _tiny(tiny_data, tmp_path / "runs", "--epochs=6", "--batch_size=10")
    driver = subprocess.Popen(
        [sys.executable, EXPERIMENT, *flags, "--launcher=slurm"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not list((tmp_path / "runs").glob("oc_24ep_s0_*/checkpoint.pt")):
        assert time.monotonic() < deadline and driver.poll() is None, "no epoch checkpointed"
        time.sleep(0.2)
    (record,) = (tmp_path / "runs").glob("launch/*/launch.json")
    (job,) = [j["job_id"] for j in json.loads(record.read_text())["jobs"]]
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # SLURM's pre-timeout signal
    while _squeue(job) != "PENDING":  # submitit requeued it; SLURM holds it ~2 min: not here
        assert time.monotonic() < deadline and driver.poll() is None, "not requeued"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, out[-3000:]
    (log,) = record.parent.glob("*_log.out")
    assert "resuming" in log.read_text()
    plain = tmp_path / "plain"
    subprocess.run(
        [sys.executable, EXPERIMENT, *_tiny(tiny_data, plain, "--epochs=6", "--batch_size=10")],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )

    def metrics(folder):
        (path,) = folder.glob("oc_24ep_s0_*/metrics.csv")
        return pd.read_csv(path).drop(columns="epoch_seconds")

    pd.testing.assert_frame_equal(metrics(tmp_path / "runs"), metrics(plain))


@pytest.mark.slow
def test_a_failed_run_on_slurm_is_one_line_and_the_others_finish(slurm, tiny_data, tmp_path):
    runs = tmp_path / "runs"
    argv = [EXPERIMENT, "--seeds", "2", "--vary", "pct_start=0.05", "--"]
    flags = _tiny(tiny_data, runs, "--launcher=slurm", "--jobs=2")
    out = subprocess.run(
        [sys.executable, "-m", "resnetf.ablate", *argv, *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1
    failed = [l for l in out.stderr.splitlines() if l.startswith("error: pct_start=0.05")]
    assert len(failed) == 2, out.stderr[-3000:]
    assert len(list(runs.glob("oc_24ep_s*/summary.json"))) == 2


@pytest.mark.slow
def test_a_study_on_two_slurm_workers_ends_with_exactly_n_trials(slurm, tiny_data, tmp_path):
    from resnetf import main
    from resnetf.config import load_experiment

    storage = tmp_path / "study.log"
    flags = _tiny(tiny_data, tmp_path / "runs", "--epochs=3", "--batch_size=10")
    flags += ["--tune=5", "--val_size=20", "--pruner=none", f"--storage={storage}"]
    main(load_experiment(EXPERIMENT), [*flags, "--launcher=slurm", "--jobs=2"])
    study = optuna.load_study(
        study_name="oc_24ep",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(storage))
        ),
    )
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(finished) == 5
    workers = {t.user_attrs["worker"]["pid"] for t in finished}
    assert len(workers) == 2  # both workers ran trials
