"""resnetf.claims: one claim per run. Processes racing for one claim get it once; a live claim is
never taken over and a dead one is; two commands started together that share runs train each
run once, in one folder; a run whose holder was SIGKILLed resumes from its checkpoint; a reused
pid is not its holder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, tiny_run_flags
from resnetf import claims

EXPERIMENT = str(REPO / "experiments" / "oc_24ep.py")
KEY = ("abc123", 0, "fingerprint")

# takes the claim if it can, says so, and holds it until the release file exists
HOLDER = """
import sys, time
from pathlib import Path
from resnetf import claims
runs, release = sys.argv[1], Path(sys.argv[2])
claim = claims.take(runs, ("abc123", 0, "fingerprint"))
print("took" if claim else "held", flush=True)
while claim and not release.exists():
    time.sleep(0.05)
"""


@pytest.fixture
def holders(tmp_path):
    """start(n): n HOLDER processes; each is killed at the end whatever the test did."""
    started = []

    def start(n):
        release, procs = _start_holders(n, tmp_path)
        started.extend(procs)
        return release, procs

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def _start_holders(n, tmp_path):
    release = tmp_path / "release"
    return release, [
        subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tmp_path / "runs"), str(release)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]


def test_processes_racing_for_one_claim_get_it_once(holders):
    release, procs = holders(4)
    answers = [p.stdout.readline().strip() for p in procs]  # each has tried before any lets go
    release.write_text("")
    for p in procs:
        p.wait(timeout=60)
    assert sorted(answers) == ["held", "held", "held", "took"]


def test_a_live_claim_is_never_taken_and_a_dead_ones_is(tmp_path, holders):
    release, (holder,) = holders(1)
    assert holder.stdout.readline().strip() == "took"
    assert claims.take(tmp_path / "runs", KEY) is None  # held by a live process
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    claim = claims.take(tmp_path / "runs", KEY)  # its death released it
    assert claim is not None
    assert claims.take(tmp_path / "runs", KEY) is None  # held by this process now
    claim.release()


def test_a_record_is_written_whole_by_its_holder(tmp_path):
    with claims.take(tmp_path, KEY) as claim:
        claim.begin(task_index=3)
        claim.end("finished", {"final_test_acc": 0.5})
    record = claims.read(tmp_path, KEY)
    assert record["status"] == "finished" and record["summary"] == {"final_test_acc": 0.5}
    (attempt,) = record["attempts"]
    assert attempt["task_index"] == 3 and attempt["pid"] == os.getpid()
    assert attempt["seconds"] >= 0 and attempt["start"] == claims.process_start(os.getpid())
    assert not list((tmp_path / "claims").glob("*.tmp"))


def test_a_reused_pid_is_not_the_holder_and_another_hosts_process_is_unknown():
    me = claims.identity()
    assert claims.alive(me) is True
    assert claims.alive({**me, "start": "another-boot:1"}) is False  # same pid, another process
    assert claims.alive({**me, "host": "another-host"}) is None
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert claims.alive(claims.identity(child.pid)) is False  # it ended


def _seeds_command(tiny_data, runs, *extra):
    return [
        sys.executable,
        EXPERIMENT,
        "--seeds=2",
        *tiny_run_flags(tiny_data, runs, "--epochs=3", "--batch_size=10", *extra),
    ]


def _folders(runs: Path) -> dict:
    """seed -> its run folders (config.json's seed)."""
    out = {}
    for config in runs.glob("oc_24ep_s[0-9]*/config.json"):
        out.setdefault(json.loads(config.read_text())["seed"], []).append(config.parent)
    return out


@pytest.mark.slow
def test_two_commands_started_together_train_each_shared_run_once(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    command = _seeds_command(tiny_data, runs)
    procs = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=900)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folders = _folders(runs)
    assert sorted(folders) == [0, 1] and all(len(f) == 1 for f in folders.values()), folders
    for (folder,) in folders.values():  # each written by one process: 3 epochs, 10 steps each
        assert len(pd.read_csv(folder / "metrics.csv")) == 3
        assert len(pd.read_csv(folder / "steps.csv")) == 30
        assert json.loads((folder / "summary.json").read_text())["epochs_done"] == 3
    # the one that did not train a seed waited for it or found it done
    assert sum(o.count("waiting") + o.count("already done") for o in outs) >= 2, outs


@pytest.mark.slow
def test_a_run_whose_holder_was_killed_resumes_from_its_checkpoint(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    command = _seeds_command(tiny_data, runs, "--epochs=6")
    first = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    while not list(runs.glob("oc_24ep_s0_*/checkpoint.pt")):
        assert time.monotonic() < deadline and first.poll() is None, "no epoch checkpointed"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming" in again.stdout
    folders = _folders(runs)
    assert sorted(folders) == [0, 1] and all(len(f) == 1 for f in folders.values()), folders
    (seed0,) = folders[0]
    assert len(pd.read_csv(seed0 / "metrics.csv")) == 6
    record = next(
        json.loads(p.read_text())
        for p in (runs / "claims").glob("*.json")
        if json.loads(p.read_text())["key"][1] == 0
    )
    assert [a["status"] for a in record["attempts"]] == ["died", "finished"]
    assert record["attempts"][0]["pid"] == first.pid and record["status"] == "finished"
