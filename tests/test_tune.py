"""Optuna studies (pruning, resume after a kill, two workers on SQLite and on PostgreSQL), the
W&B sweep file, and the LR range test."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from conftest import REPO, read_wandb_records
from resnetf import tune as tuning
from resnetf.data import load_cifar10

TINY = [
    "--width=0.0625",
    "--batch_size=10",
    "--epochs=3",
    "--val_size=20",
    "--workers=0",
    "--wandb_mode=disabled",
    "--no_progress",
    "--backend=gpu",
    "--no_analysis",
]


def _experiment(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "experiments/oc_24ep.py", *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def _finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def _kill_mid_trial(proc, running, within_s=900):
    """SIGKILL the worker's process group while `running()` holds. The worker is stopped
    (SIGSTOP) and `running()` asked again before the kill: a trial that ends between the look
    and the kill (a tiny trial on a loaded machine) would otherwise pass for the killed one."""
    deadline = time.time() + within_s
    while True:
        assert proc.poll() is None, f"the worker ended before the trial: {proc.stdout.read()}"
        assert time.time() < deadline, f"the worker did not reach the trial in {within_s} s"
        if running():
            os.killpg(proc.pid, signal.SIGSTOP)
            if running():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.05)


def _trials(storage, study="oc_24ep"):
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


@pytest.mark.slow
def test_study_on_real_images_prunes_and_writes_its_trials_table(real_subset, tmp_path):
    out = _finish(
        _experiment(
            "--tune=6",
            f"--data_dir={real_subset}",
            f"--runs_dir={tmp_path}",
            "--width=0.0625",
            "--epochs=3",
            "--batch_size=128",
            "--val_size=1000",
            "--backend=gpu",
            "--wandb_mode=disabled",
            "--no_progress",
            "--no_analysis",
        ),
        timeout=1200,  # 6 trials on real images: 133 s idle, past 300 s on a loaded machine
    )
    table = pd.read_csv(tmp_path / "tune" / "oc_24ep_trials.csv")
    assert len(table) == 6
    assert (table["state"] == "PRUNED").sum() >= 1 and (table["state"] == "COMPLETE").sum() >= 2
    for p, (lo, hi) in {
        "max_lr": (0.01, 1.0),
        "pct_start": (0.1, 0.5),
        "dropout": (0, 0.3),
    }.items():
        assert table[f"params_{p}"].between(lo, hi).all()
    best = table[table["state"] == "COMPLETE"]["value"].max()
    assert f"validation accuracy {best:.2%}" in out
    # each trial is its own run, on the validation split, grouped under the study
    runs = list((tmp_path / "tune" / "oc_24ep").iterdir())
    assert len(runs) == 6
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["val_images"] == 1000 and config["wandb_group"] == "oc_24ep"
    # every trial, pruned ones too, says where its run folder is
    folders = {Path(d) for d in table["user_attrs_run_dir"]}
    assert folders == set(runs)


@pytest.mark.slow
def test_killed_study_resumes_and_the_killed_trial_is_marked_failed(tiny_data, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [
        "--tune=4",
        f"--storage={storage}",
        "--heartbeat=1",
        f"--data_dir={tiny_data}",
        f"--runs_dir={tmp_path}",
        *TINY,
    ]
    proc = _experiment(*args, start_new_session=True)

    def second_trial_runs():
        if not (tmp_path / "study.db").exists():
            return False
        try:
            states = [t.state for t in _trials(storage)]
        except Exception:  # the study table may not exist yet, or the stopped worker locks it
            return False
        return len(states) == 2 and states[-1] == TrialState.RUNNING

    # killed in the middle of its second trial, however long a loaded machine takes to get there
    _kill_mid_trial(proc, second_trial_runs)
    assert [t.state for t in _trials(storage)][-1] == TrialState.RUNNING  # left dangling
    time.sleep(2.5)  # past the grace period of 2 heartbeats
    _finish(_experiment(*args))
    trials = _trials(storage)
    assert trials[1].state == TrialState.FAIL  # the killed one, failed by its missing heartbeat
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4


def _two_workers(storage, tmp_path, tiny_data, n=6):
    common = ["--tune", n, f"--storage={storage}", f"--data_dir={tiny_data}", *TINY]
    # the very same command twice (only the local run folders differ, to count who ran what)
    procs = [_experiment(*common, f"--runs_dir={tmp_path / str(k)}") for k in range(2)]
    outs = [_finish(p) for p in procs]
    trials = _trials(storage)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # exactly n: a worker stops once the finished and running trials make n, and a trial asked
    # for in a race beyond them is surplus (failed unrun, not counted)
    assert len(done) == n
    assert len({t.number for t in trials}) == len(trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # none twice
    assert all(t.state != TrialState.RUNNING for t in trials)
    surplus = [t for t in trials if str(t.user_attrs.get("failure", "")).startswith("surplus")]
    ran = [len(list((tmp_path / str(k)).glob("tune/oc_24ep/*"))) for k in range(2)]
    assert all(r >= 1 for r in ran) and sum(ran) == len(trials) - len(surplus), (ran, outs)


@pytest.mark.slow
def test_two_workers_share_a_sqlite_study(tiny_data, tmp_path):
    _two_workers(f"sqlite:///{tmp_path / 'shared.db'}", tmp_path, tiny_data)


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (the machine's own binaries; .ci/run installs
    them). As root, the server runs as the postgres user: PostgreSQL refuses to run as root, and
    its folder lives outside pytest's root-only temp tree."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    initdb = bins[-1] / "initdb" if bins else shutil.which("initdb")
    if not initdb or not Path(initdb).exists():
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs them)")
    pg_ctl = Path(initdb).parent / "pg_ctl"
    folder = Path(tempfile.mkdtemp(prefix="resnetf-pg-"))
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        folder.chmod(0o700)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    subprocess.run(
        [*as_user, str(initdb), "-D", str(data), "-A", "trust", "-U", "resnetf"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_user,
            str(pg_ctl),
            "-D",
            str(data),
            "-l",
            str(folder / "log"),
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {folder}",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    yield f"postgresql://resnetf@127.0.0.1:{port}/postgres"
    subprocess.run(
        [*as_user, str(pg_ctl), "-D", str(data), "-m", "fast", "stop"], capture_output=True
    )
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(postgres_url, tiny_data, tmp_path):
    _two_workers(postgres_url, tmp_path, tiny_data)


@pytest.mark.slow
def test_retrain_best_reports_test_accuracy(tiny_data, tmp_path):
    out = _finish(
        _experiment(
            "--tune=2", "--retrain_best", f"--data_dir={tiny_data}", f"--runs_dir={tmp_path}", *TINY
        )
    )
    assert "retrained with the best parameters on the whole training set: test accuracy" in out
    (best_run,) = tmp_path.glob("oc_24ep_best_*")
    assert json.loads((best_run / "config.json").read_text())["val_images"] == 0


# --- the LR range test ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_study_replays_from_its_seed(tiny_data, tmp_path):
    params = []
    for k in range(2):
        _finish(
            _experiment(
                "--tune=3",
                "--pruner=none",
                f"--storage=sqlite:///{tmp_path}/s{k}.db",
                f"--data_dir={tiny_data}",
                f"--runs_dir={tmp_path / str(k)}",
                *TINY,
            )
        )
        params.append([t.params for t in _trials(f"sqlite:///{tmp_path}/s{k}.db")])
    assert params[0] == params[1]


# --- what a study records, and what it refuses ----------------------------------------------------


@pytest.mark.slow
def test_trials_never_look_at_the_test_split(tiny_data, tmp_path):
    out = _finish(
        _experiment(
            "--tune=2",
            "--pruner=none",
            f"--data_dir={tiny_data}",
            f"--runs_dir={tmp_path}",
            *TINY,
            "--analysis",
            "--trial_analysis",
            "--gradcam_images=1",
        )
    )
    trials = list((tmp_path / "tune" / "oc_24ep").iterdir())
    assert len(trials) == 2
    for trial in trials:
        metrics = pd.read_csv(trial / "metrics.csv")
        assert "val_acc" in metrics and not [c for c in metrics if c.startswith("test")]
        summary = json.loads((trial / "summary.json").read_text())
        assert summary["final_test_acc"] is None and summary["test_images"] == 0
        # its error analysis is drawn from the 20 validation images, not the 50 test images
        assert pd.read_csv(trial / "confusion.csv", index_col=0).to_numpy().sum() == 20
    assert "test" not in "".join(line for line in out.splitlines() if line.startswith("epoch"))


@pytest.mark.slow
def test_a_failing_trial_fails_alone_with_its_reason(tiny_cfg, monkeypatch):
    real, calls = tuning.run, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory, say")
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "run", flaky)
    study = tuning.tune(
        tiny_cfg.replace(tune=2, epochs=3, val_size=20, pruner="none", analysis=False)
    )
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert "CUDA out of memory" in study.trials[0].user_attrs["failure"]


def _sweep_copy(tmp_path, **parameters) -> Path:
    """sweeps/lr.yaml with parameters added or replaced."""
    import yaml

    sweep = yaml.safe_load((REPO / "sweeps" / "lr.yaml").read_text())
    sweep["parameters"].update(parameters)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.mark.slow
def test_every_point_of_the_space_is_checked_against_the_step_count_before_any_trial(
    tiny_data, tmp_path
):
    # 8 steps an epoch, 3 epochs: a warm-up of 0.02 * 24 steps is no step at all
    sweep = _sweep_copy(tmp_path, pct_start={"distribution": "uniform", "min": 0.02, "max": 0.5})
    proc = _experiment(
        "--tune=2", f"--data_dir={tiny_data}", f"--runs_dir={tmp_path}", *TINY, f"--sweep={sweep}"
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    (line,) = [l for l in out.splitlines() if l.startswith("error:")]
    assert "pct_start=0.02" in line and str(sweep) in line and "Traceback" not in out
    assert not (tmp_path / "tune" / "oc_24ep").exists()  # no trial ran


@pytest.mark.slow
def test_a_parameter_added_to_the_sweep_file_is_tuned(tiny_cfg, tmp_path):
    sweep = _sweep_copy(
        tmp_path,
        weight_decay={"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2},
        label_smoothing={"values": [0.0, 0.1]},
        flip={"value": False},
    )
    cfg = tiny_cfg.replace(
        tune=3,
        epochs=3,
        val_size=20,
        pruner="none",
        sweep=str(sweep),
        retrain_best=True,
        analysis=False,
    )
    study = tuning.tune(cfg)
    for trial in study.trials:
        assert set(trial.params) == {
            "max_lr",
            "pct_start",
            "dropout",
            "weight_decay",
            "label_smoothing",
        }
        config = json.loads((Path(trial.user_attrs["run_dir"]) / "config.json").read_text())
        assert config["weight_decay"] == trial.params["weight_decay"]
        assert config["label_smoothing"] == trial.params["label_smoothing"]
        assert config["flip"] is False  # a fixed value is set, not searched
    assert study.user_attrs["settings"]["search_space"]["weight_decay"] == {
        "distribution": "log_uniform_values",
        "min": 1e-5,
        "max": 1e-2,
    }
    (best,) = Path(cfg.runs_dir).glob("tiny_best_*")
    config = json.loads((best / "config.json").read_text())
    assert config["weight_decay"] == study.best_params["weight_decay"] and config["flip"] is False
    # a worker whose space differs is refused, naming the difference
    with pytest.raises(
        tuning.ConfigError,
        match=r"search space of weight_decay: study .*"
        r"'max': 0.01.*this worker .*'max': 0.1",
    ):
        tuning.tune(
            cfg.replace(
                sweep=str(
                    _sweep_copy(
                        tmp_path,
                        weight_decay={
                            "distribution": "log_uniform_values",
                            "min": 1e-5,
                            "max": 1e-1,
                        },
                    )
                )
            )
        )


@pytest.mark.slow
def test_default_validation_split_fits_small_data(tiny_data, tmp_path):
    no_val = [a for a in TINY if not a.startswith("--val_size")]
    out = _finish(
        _experiment(
            "--tune=1",
            "--pruner=none",
            f"--data_dir={tiny_data}",
            f"--runs_dir={tmp_path}",
            *no_val,
        )
    )
    assert "validation split: 10 of 100 training images" in out
    (trial,) = (tmp_path / "tune" / "oc_24ep").iterdir()
    assert json.loads((trial / "config.json").read_text())["val_images"] == 10


@pytest.mark.slow
def test_study_records_its_settings_and_its_trials_where_to_find_them(tiny_data, tmp_path):
    storage = f"sqlite:///{tmp_path / 'elsewhere' / 'study.db'}"
    (tmp_path / "elsewhere").mkdir()
    runs = tmp_path / "runs"
    common = [
        f"--storage={storage}",
        f"--data_dir={tiny_data}",
        f"--runs_dir={runs}",
        *[a for a in TINY if a != "--wandb_mode=disabled"],
        "--wandb_mode=offline",
        "--pruner=none",
    ]
    _finish(_experiment("--tune=2", *common))
    study = optuna.load_study(study_name="oc_24ep", storage=storage)
    fingerprint = load_cifar10(tiny_data, download=False).fingerprint()
    attrs = study.user_attrs["settings"]
    space = attrs.pop("search_space")
    # every field that changes a result, as the trials run it, but those the space sets
    from resnetf.config import result_fields

    expected = {"model": "resnet9", "epochs": 3, "width": 0.0625, "batch_size": 10}
    assert attrs.items() >= {**expected, "val_size": 20, "data": fingerprint}.items()
    assert set(attrs) == (set(result_fields()) - set(space)) | {
        "objectives",
        "trial_seeds",
        "min_val_acc",
        "data",
    }
    assert attrs["use_test"] is False and attrs["objectives"] == ["val_acc"]
    assert space["max_lr"] == {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0}
    for trial in study.trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        assert run_dir.parent == runs / "tune" / "oc_24ep"
        (wandb_run,) = read_wandb_records(run_dir, "run")
        assert trial.user_attrs["wandb_id"] == wandb_run.run.run_id
        # the W&B run keeps the experiment's tag, adds the study's, and says it is a trial
        assert {"oc_24ep", "study:oc_24ep"} <= set(wandb_run.run.tags)
        assert wandb_run.run.job_type == "trial" and wandb_run.run.run_group == "oc_24ep"
    # the trials table is where the README says, not next to the database
    assert len(pd.read_csv(runs / "tune" / "oc_24ep_trials.csv")) == 2
    assert not list((tmp_path / "elsewhere").glob("*.csv"))
    # a worker with other settings is refused, naming what differs, and adds no trial
    proc = _experiment("--tune=3", *common, "--epochs=4")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Traceback" not in out
    assert "epochs: study 3.0, this worker 4.0" in out
    assert len(optuna.load_study(study_name="oc_24ep", storage=storage).trials) == 2


# --- storage, the study page, pruning, sweep runs -------------------------------------------------


@pytest.mark.parametrize(
    "storage, cause",
    [
        ("foo://bar", "foo://bar"),
        ("postgresql://me:secret@127.0.0.1:1/db", "postgresql://me:***@127.0.0.1:1/db"),
        ("{tmp}/missing/study.log", "no folder"),
    ],
)
@pytest.mark.slow
def test_a_storage_that_cannot_be_opened_is_one_line_and_writes_nothing(
    tiny_data, tmp_path, storage, cause
):
    runs = tmp_path / "runs"
    proc = _experiment(
        "--tune=2",
        f"--storage={storage.format(tmp=tmp_path)}",
        f"--data_dir={tiny_data}",
        f"--runs_dir={runs}",
        *TINY,
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Traceback" not in out, out
    (line,) = [l for l in out.splitlines() if l.startswith("error:")]
    assert line.startswith("error: storage: cannot open") and cause in line
    assert "secret" not in out
    assert not runs.exists() or not any(runs.rglob("*"))


@pytest.mark.slow
def test_a_journal_file_holds_a_study_that_a_second_command_resumes(tiny_data, tmp_path):
    journal = tmp_path / "study.log"
    common = [
        f"--storage={journal}",
        f"--data_dir={tiny_data}",
        f"--runs_dir={tmp_path}",
        *TINY,
        "--pruner=none",
    ]
    _finish(_experiment("--tune=2", *common))
    out = _finish(_experiment("--tune=3", *common))
    assert "2 of 3 trials finished" in out
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(
        study_name="oc_24ep", storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3


@pytest.mark.slow
def test_the_study_page_and_its_wandb_run_follow_the_trials(tiny_cfg, tmp_path):
    cfg = tiny_cfg.replace(
        tune=3, epochs=3, val_size=20, pruner="none", wandb_mode="offline", study="watched"
    )
    study = tuning.tune(cfg)
    page = Path(cfg.runs_dir) / "tune" / "watched.html"
    text = page.read_text()
    assert text.count("<script") >= 1 and "Optimization History" in text  # plotly, inline
    assert "Parallel Coordinate" in text and "Hyperparameter Importances" in text
    for trial in study.trials:  # each trial's row links its run folder, relative to the page
        assert f'href="watched/{Path(trial.user_attrs["run_dir"]).name}"' in text
    (folder,) = (Path(cfg.runs_dir) / "tune" / "watched_study").iterdir()  # this worker's
    (record,) = read_wandb_records(folder, "run")
    assert record.run.job_type == "study" and record.run.run_group == "watched"
    summary = {}
    for r in read_wandb_records(folder, "summary"):
        summary.update({i.key: json.loads(i.value_json) for i in r.summary.update})
    assert summary["best_val_acc"] == study.best_value
    assert summary["best_max_lr"] == study.best_params["max_lr"]
    assert summary["trials_finished"] == 3
    assert not list(
        (Path(cfg.runs_dir) / "tune" / "watched").glob("*/confusion.png")
    )  # no analysis


@pytest.mark.slow
def test_a_trial_is_never_pruned_after_its_last_epoch(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
    sweep = _sweep_copy(tmp_path, pct_start={"value": 0.3})
    last = tuning.tune(tiny_cfg.replace(tune=1, epochs=1, val_size=20, sweep=str(sweep)))
    assert [t.state for t in last.trials] == [TrialState.COMPLETE]
    earlier = tuning.tune(
        tiny_cfg.replace(tune=1, epochs=2, val_size=20, sweep=str(sweep), study="two_epochs")
    )
    assert [t.state for t in earlier.trials] == [TrialState.PRUNED]


@pytest.mark.slow
def test_a_run_under_the_sweep_agent_never_looks_at_the_test_split(tiny_cfg, monkeypatch, capsys):
    from resnetf.cli import main

    monkeypatch.setenv("WANDB_SWEEP_ID", "s1")
    monkeypatch.setenv("WANDB_RUN_ID", "r1")
    args = ["--max_lr=0.2", "--no_analysis"]
    summary = main(tiny_cfg.replace(val_size=20), args)
    assert summary["final_test_acc"] is None and summary["test_images"] == 0
    assert summary["final_val_acc"] is not None
    assert "no test evaluation" in capsys.readouterr().out
    asked = main(tiny_cfg.replace(val_size=20), args + ["--use_test"])
    assert asked["final_test_acc"] is not None


def test_a_storage_url_is_printed_without_its_password_and_the_space_checked_per_corner(tmp_path):
    from resnetf import search_space
    from resnetf.config import Config, ConfigError

    assert tuning.masked("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert tuning.masked("sqlite:///runs/tune/a.db") == "sqlite:///runs/tune/a.db"
    cfg = Config(epochs=3, batch_size=10, val_size=20, sweep="s.yaml")
    fine = search_space.parse_param("pct_start", {"min": 0.2, "max": 0.5})
    bad_dropout = search_space.parse_param("dropout", {"values": [0.0, 1.5]})
    with pytest.raises(ConfigError, match=r"refused: dropout: must be in \[0, 1\)"):
        tuning.check_space(cfg, {"pct_start": fine, "dropout": bad_dropout}, 100)
    too_early = search_space.parse_param("pct_start", {"min": 0.02, "max": 0.5})
    with pytest.raises(ConfigError, match="pct_start=0.02"):  # 0.02 of 24 steps: no warm-up
        tuning.check_space(cfg, {"pct_start": too_early}, 100)
    tuning.check_space(cfg, {"pct_start": fine}, 100)


def test_a_worker_that_joins_while_the_first_records_the_settings_is_not_refused(tmp_path):
    # the two-worker tests' flake: worker B read the study between worker A's writes of its
    # settings, saw some of them, and refused itself ("epochs: study None, this worker 3")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    a = optuna.create_study(study_name="s", storage=storage)
    b = optuna.load_study(study_name="s", storage=storage)
    settings = {"experiment": "x", "epochs": 3, "search_space": {"max_lr": {"min": 0.1}}}
    write, joined = a.set_user_attr, []

    def interleaved(key, value):  # B arrives right after A's first write
        write(key, value)
        if not joined:
            joined.append(key)
            tuning.claim(b, settings)

    a.set_user_attr = interleaved
    tuning.claim(a, settings)
    assert joined and optuna.load_study(study_name="s", storage=storage).user_attrs == {
        "settings": settings
    }
    with pytest.raises(tuning.ConfigError, match="epochs: study 3, this worker 4"):
        tuning.claim(b, {**settings, "epochs": 4})


@pytest.mark.slow
def test_a_workers_trials_whiten_from_the_data_once(tiny_cfg, monkeypatch):
    from resnetf import models
    from resnetf.config import load_experiment

    calls = []
    real = models.WhitenedConvNet.init_from_data

    def counted(self, images):
        calls.append(len(images))
        return real(self, images)

    monkeypatch.setattr(models.WhitenedConvNet, "init_from_data", counted)
    cfg = load_experiment(REPO / "experiments" / "fast94.py").replace(
        **{
            k: getattr(tiny_cfg, k)
            for k in ("data_dir", "runs_dir", "workers", "device", "wandb_mode", "progress")
        },
        width=0.125,
        batch_size=10,
        epochs=3,
        val_size=20,
        tune=2,
        save_model=False,
    )
    study = tuning.tune(cfg)
    assert len(study.trials) == 2 and calls == [80]  # 80 training images, whitened once


# --- studies that compare only what they can, over seeds, on several objectives --------------


class _Data:
    def fingerprint(self):
        return "data"


@pytest.mark.parametrize(
    "change, refused",
    [
        ({"label_smoothing": 0.0}, "label_smoothing: study 0.2, this worker 0.0"),
        ({"weight_decay": 0.01}, "weight_decay: study 0.0005, this worker 0.01"),
        ({"workers": 7}, None),
        ({"progress": False}, None),
        ({"wandb_mode": "offline"}, None),
        ({"max_lr": 0.5}, None),  # the search space sets it
    ],
)
def test_a_study_refuses_a_worker_that_computes_something_else(change, refused):
    from resnetf.config import load_experiment
    from resnetf.search_space import read_space

    cfg, space = load_experiment(REPO / "experiments" / "oc_24ep.py"), read_space("sweeps/lr.yaml")
    study = optuna.create_study()
    tuning.claim(study, tuning.study_settings(cfg, _Data(), space))
    joining = tuning.study_settings(cfg.replace(**change), _Data(), space)
    if refused is None:
        tuning.claim(study, joining)
    else:
        with pytest.raises(tuning.ConfigError, match=refused):
            tuning.claim(study, joining)


def test_a_study_begun_before_a_field_existed_takes_a_worker_at_its_default():
    # a study recorded by the code before brightness existed: a worker of today's code joins it
    # while brightness is at its default (what that code computed), not when it jitters
    from resnetf.config import load_experiment
    from resnetf.search_space import read_space

    cfg, space = load_experiment(REPO / "experiments" / "oc_24ep.py"), read_space("sweeps/lr.yaml")
    study = optuna.create_study()
    older = tuning.study_settings(cfg, _Data(), space)
    del older["brightness"]
    tuning.claim(study, older)
    tuning.claim(study, tuning.study_settings(cfg, _Data(), space))
    with pytest.raises(tuning.ConfigError, match="brightness: study None, this worker 0.1"):
        tuning.claim(study, tuning.study_settings(cfg.replace(brightness=0.1), _Data(), space))


def test_the_front_trial_retrained_is_the_cheapest_that_reaches_the_target():
    from types import SimpleNamespace as T

    front = [T(number=0, values=(0.80, 0.1)), T(number=1, values=(0.90, 0.3))]
    front.append(T(number=2, values=(0.93, 0.6)))
    objectives = ["val_acc", "pflop"]
    assert tuning.choose_front_trial(front, objectives, 0.85)[0].number == 1
    assert tuning.choose_front_trial(front, objectives, None)[0].number == 2
    best, why = tuning.choose_front_trial(front, objectives, 0.95)
    assert best is None and "no front trial reaches" in why


@pytest.mark.slow
def test_a_trial_is_the_mean_of_its_seeds_each_a_run(tiny_cfg):
    cfg = tiny_cfg.replace(tune=2, epochs=3, val_size=20, pruner="none", trial_seeds=2)
    study = tuning.tune(cfg)
    for trial in study.trials:
        accs, dirs = trial.user_attrs["seed_values"], trial.user_attrs["run_dirs"]
        assert len(accs) == 2 and trial.value == pytest.approx(sum(accs) / 2)
        assert "pflop" not in trial.user_attrs  # not an objective: not counted (a CPU second)
        assert trial.user_attrs["seed_std"] == pytest.approx(pd.Series(accs).std())
        seeds = [json.loads((Path(d) / "config.json").read_text())["seed"] for d in dirs]
        assert seeds == [0, 1]
        assert all(
            json.loads((Path(d) / "config.json").read_text())["use_test"] is False for d in dirs
        )


@pytest.mark.slow
def test_a_two_objective_study_shows_its_front_and_retrains_the_trial_it_names(tiny_cfg, capsys):
    cfg = tiny_cfg.replace(
        tune=3,
        epochs=3,
        val_size=20,
        pruner="none",
        objectives="val_acc,pflop",
        retrain_best=True,
        target_acc=0.01,
        study="front",
    )
    study = tuning.tune(cfg)
    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    for trial in study.trials:  # pflop is the run's counted compute, as bench --flops counts it
        assert trial.values[1] == pytest.approx(trial.user_attrs["pflop"]) and trial.values[1] > 0
    tune_dir = Path(cfg.runs_dir) / "tune"
    table = pd.read_csv(tune_dir / "front_trials.csv")
    front = {t.number for t in study.best_trials}
    assert set(table.loc[table["pareto_front"], "number"]) == front
    assert "Pareto-front" in (tune_dir / "front.html").read_text()
    out = capsys.readouterr().out
    cheapest = min((t for t in study.best_trials if t.values[0] >= 0.01), key=lambda t: t.values[1])
    assert f"chose trial {cheapest.number}: the lowest pflop" in out
    assert "retrained with the best parameters" in out


# --- a study's failures, its files, and workers that died on a journal file ------------------


@pytest.mark.slow
def test_a_study_whose_trials_all_fail_exits_nonzero_without_optunas_tracebacks(
    tiny_cfg, monkeypatch
):
    import logging

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    logging.getLogger("optuna").addHandler(handler)

    def broken(*args, **kwargs):
        raise RuntimeError("broken, say")

    monkeypatch.setattr(tuning, "run", broken)
    try:
        with pytest.raises(tuning.StudyFailed, match="every one failed"):
            tuning.tune(tiny_cfg.replace(tune=2, epochs=3, val_size=20, pruner="none"))
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    failures = [r for r in records if " failed" in r.getMessage()]
    assert failures == [] and not any(r.exc_info for r in records)


def test_the_study_page_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    from pathlib import Path as P

    page = tmp_path / "s.html"
    page.write_text("the last good page")
    study = optuna.create_study(study_name="s")
    real = P.write_text

    def full_disk(self, text, *args, **kwargs):
        real(self, text[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(P, "write_text", full_disk)
    with pytest.raises(OSError):
        tuning.write_study_page(study, tuning.trials_table(study), page)
    assert page.read_text() == "the last good page" and list(tmp_path.iterdir()) == [page]


def test_a_trial_whose_worker_died_is_failed_by_the_next_worker_on_the_host(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))
    study = optuna.create_study(study_name="s", storage=storage)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan, alive, elsewhere = study.ask(), study.ask(), study.ask()
    host = socket.gethostname()
    orphan.set_user_attr("worker", {"host": host, "pid": gone.pid})
    alive.set_user_attr("worker", {"host": host, "pid": os.getpid()})
    elsewhere.set_user_attr("worker", {"host": "another-host", "pid": gone.pid})
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert tuning.fail_orphans(study, storage) == [orphan.number]
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    assert f"process {gone.pid} on {host}" in trials[0].user_attrs["failure"]
    # a second worker that started at the same moment saw the orphan still running: it skips
    # the trial the first one failed, instead of dying at start
    twin = optuna.load_study(study_name="s", storage=storage)
    twin.get_trials = lambda deepcopy=True, states=None: stale
    assert tuning.fail_orphans(twin, storage) == []
    assert [t.state for t in study.get_trials(deepcopy=False)][0] == TrialState.FAIL


def test_a_trial_whose_worker_is_gone_is_failed_by_whoever_finds_it_on_any_host(
    tmp_path, monkeypatch
):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from resnetf import places

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))
    study = optuna.create_study(study_name="s", storage=storage)
    me = tuning.worker_identity()
    reused, ended, running, unknown = (study.ask() for _ in range(4))
    reused.set_user_attr("worker", {**me, "start": "another-boot:1"})  # the pid, reused
    ended.set_user_attr("worker", {**me, "host": "node7", "slurm_job_id": "41"})
    running.set_user_attr("worker", {**me, "host": "node8", "slurm_job_id": "42"})
    unknown.set_user_attr("worker", {**me, "host": "node9"})  # no scheduler to ask
    monkeypatch.setattr(places, "squeue_live", lambda rec: rec["job_id"] == "42")
    assert tuning.fail_orphans(study, storage) == [reused.number, ended.number]
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    assert "SLURM job 41 has ended" in study.trials[1].user_attrs["failure"]


def test_a_worker_made_to_exit_mid_trial_fails_its_trial_then_exits(tmp_path, monkeypatch):
    from resnetf import Config

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")

    def requeued(trial):  # what submitit's USR2 handler does inside a trial: sys.exit(-1)
        raise SystemExit(-1)

    monkeypatch.setattr(tuning, "objective", lambda cfg, name, cifar, space: requeued)
    with pytest.raises(SystemExit):
        tuning.optimize(Config(tune=3), study, None, {})
    (trial,) = study.trials  # no second trial: the worker stopped
    assert trial.state == TrialState.FAIL and "stopped mid-trial" in trial.user_attrs["failure"]


def test_each_worker_writes_a_study_run_of_its_own(tiny_cfg, monkeypatch):
    """W&B takes one writer per run: two workers of one study never share a W&B run."""
    cfg = tiny_cfg.replace(wandb_mode="offline", study="shared")
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)  # W&B would take it as every run's id
    reports = []
    for pid in (101, 102):
        monkeypatch.setattr(tuning, "worker_tag", lambda pid=pid: f"host_{pid}")
        reports.append(tuning.StudyReport(cfg, "shared"))
    try:
        ids = {r.tracker.wandb_id for r in reports}
        folders = {r.tracker.run_dir for r in reports}
        assert len(ids) == 2 and None not in ids and len(folders) == 2
        assert {r.tracker.group for r in reports} == {"shared"}
    finally:
        for r in reports:
            r.close()


def test_no_private_name_of_optunas_is_used_anywhere_in_the_package():
    """Private names move without notice between Optuna releases: no module, logger, attribute
    or RandomState of Optuna's that starts with an underscore, in any module of the package."""
    import ast
    import re

    optuna_objects = r"\b(study|trial|storage|sampler|pruner|inner|optuna(\.\w+)*)\._[a-z]"
    for path in sorted((REPO / "resnetf").glob("*.py")):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names]
                for name in names:
                    if name.startswith("optuna"):
                        assert not re.search(r"(^|\.)_", name), f"{path.name} imports {name}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not re.search(r"optuna\.[\w.]*\._", node.value), (path.name, node.value)
        assert not re.search(optuna_objects, text), f"{path.name}: a private attribute of Optuna's"
        assert not re.search(r"\._(rng|random_sampler|optimize)\b", text), path.name


@pytest.mark.slow
def test_a_worker_killed_mid_trial_on_a_journal_file_is_failed_and_the_study_completes(
    tiny_data, tmp_path
):
    journal = tmp_path / "study.log"
    args = [
        "--tune=3",
        f"--storage={journal}",
        f"--data_dir={tiny_data}",
        f"--runs_dir={tmp_path}",
        *TINY,
    ]
    proc = _experiment(*args, start_new_session=True)
    storage = f"journal:{journal}"

    def states():
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        journal_storage = JournalStorage(JournalFileBackend(str(journal)))
        try:
            return optuna.load_study(study_name="oc_24ep", storage=journal_storage).trials
        except KeyError:  # no study yet
            return []

    def first_trial_runs():
        if not journal.exists():
            return False
        trials = states()
        return (
            bool(trials)
            and trials[0].state == TrialState.RUNNING
            and ("worker" in trials[0].user_attrs)
        )

    _kill_mid_trial(proc, first_trial_runs)  # however long a loaded machine takes to get there
    assert states()[0].state == TrialState.RUNNING  # left dangling: a journal has no heartbeat
    out = _finish(_experiment(*args))
    trials = states()
    assert trials[0].state == TrialState.FAIL and "no longer exists" in out, storage
    assert "no longer exists" in trials[0].user_attrs["failure"]
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 3
