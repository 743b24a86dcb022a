"""Places to run tasks, behind the launcher's own job interface.

A place submits callables (a launch's shards, a study's workers) as tasks and answers for each
a `Job`: its state, its logs, its cancel, and the record that lets another driver (a rerun)
find it again. The launcher talks only to this interface; a new place to run is one class with
`@place("name")` and the three methods of `Place`.

    local  one process per task on this machine (submitit's LocalExecutor), each pinned to its
           own GPUs among the ones this process may use (its CUDA_VISIBLE_DEVICES)
    slurm  a SLURM job array (submitit), at most --slurm_array_parallelism tasks at once
    pool   plain subprocesses of this machine, no submitit: for tests and laptops

A job's state is "running" (or waiting), "done", "failed" or "unknown". Liveness is decided
by what can know it: locally by host, pid and the process's start time (a reused pid is another
process; a process of another host is "unknown", not dead), on SLURM by squeue (an error from
squeue is "unknown", not dead).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

from . import claims
from .config import Config, ConfigError

LIVE = ("running", "unknown")  # a job that may still hold its runs
FOREVER_MIN = 10 * 365 * 24 * 60  # a local task's time limit when none is asked for


class Job(Protocol):
    id: str

    def state(self) -> str: ...  # running, done, failed or unknown

    def logs(self) -> tuple[str, str]: ...  # stdout, stderr

    def cancel(self) -> None: ...

    def failure(self) -> str: ...  # one line: why it failed

    def record(self) -> dict: ...  # what `Place.job` needs to find it again


class Place(Protocol):
    def __init__(self, cfg: Config): ...

    def submit(self, folder: Path, callables: list, name: str) -> list[Job]: ...

    def job(self, record: dict) -> Job: ...


PLACES: dict[str, type] = {}


def place(name: str):
    def register(cls):
        PLACES[name] = cls
        cls.kind = name
        return cls

    return register


def of(cfg: Config) -> Place:
    return PLACES[cfg.launcher](cfg)


def job_of(record: dict, cfg: Config) -> Job:
    """A recorded job, by the place that ran it (not necessarily this command's)."""
    kind = record.get("launcher")
    if kind not in PLACES or not record.get("job_id") or not record.get("result"):
        return Lost(record)
    return PLACES[kind](cfg).job(record)


# --- devices: the ones this process may use, dealt to tasks --------------------------------------


def device_ids() -> list[str]:
    """The GPUs this process may use, as CUDA names them in CUDA_VISIBLE_DEVICES (the parent's
    list where it is set: `5,6` deals 5 and 6, not 0 and 1)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def gpus_per_task(cfg: Config) -> int:
    """--gpus_per_job, else what the place where tasks run has: on this machine (local, pool) 1
    where it has a GPU, 0 without; on SLURM 1 (the nodes' GPUs, not the login node's, count)."""
    if cfg.gpus_per_job is not None:
        return cfg.gpus_per_job
    if cfg.launcher == "slurm":
        return 1
    return 1 if device_ids() else 0


def pinned(cfg: Config, index: int) -> list[str]:
    g = gpus_per_task(cfg)
    return device_ids()[index * g : (index + 1) * g]


# --- jobs recorded by another driver --------------------------------------------------------------


class Lost:
    """A recorded job no place can find again (a driver killed while it submitted, a place this
    version does not know): ended, as far as anyone can tell. Claims keep its runs from being
    trained twice should it still run."""

    def __init__(self, record: dict):
        self.rec, self.id = record, str(record.get("job_id"))

    def state(self) -> str:
        return "done"

    def logs(self) -> tuple[str, str]:
        return self.rec.get("log", "?"), self.rec.get("err", "?")

    def cancel(self) -> None:
        pass

    def failure(self) -> str:
        return "no record of its job"

    def record(self) -> dict:
        return self.rec


# --- submitit: local processes and SLURM arrays ---------------------------------------------------


class SubmititJob:
    """A submitit job: the handle when this driver submitted it, else its record; `live()` is
    the place's answer to "does it still run or wait" (True, False or None: unknown)."""

    def __init__(self, record: dict, live, handle=None):
        self.rec, self.live, self.handle = record, live, handle
        self.id = str(record["job_id"])
        self.kind_local = record["launcher"] == "local"

    def state(self) -> str:
        live = self.live(self.rec)
        if live is None:
            return "unknown"
        if live or (self.handle is not None and self.kind_local and not self.handle.done()):
            return "running"
        if not Path(self.rec["result"]).exists():
            return "failed"  # killed: it left no result
        if self.handle is None:
            return "done"  # an earlier driver's: its runs' records say how they ended
        try:
            return "failed" if self.handle.exception() is not None else "done"
        except Exception:  # an unreadable result
            return "failed"

    def logs(self) -> tuple[str, str]:
        return self.rec["log"], self.rec["err"]

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel(check=False)
        elif self.rec["launcher"] == "slurm":
            subprocess.run(["scancel", self.id], capture_output=True)
        elif claims.alive(self.rec.get("who") or {}):
            os.kill(int(self.rec["who"]["pid"]), signal.SIGINT)

    def failure(self) -> str:
        if self.handle is None:
            return "ended without a result" if self.state() == "failed" else "done"
        try:
            lines = str(self.handle.exception()).strip().splitlines()
        except Exception as e:  # no result at all (killed): what submitit says of that
            lines = [f"{type(e).__name__}: {e}"]
        return lines[-1] if lines else "no message"

    def record(self) -> dict:
        return self.rec


def _submitit_record(kind: str, handle, who: dict | None = None) -> dict:
    return {
        "launcher": kind,
        "job_id": str(handle.job_id),
        "log": str(handle.paths.stdout),
        "err": str(handle.paths.stderr),
        "result": str(handle.paths.result_pickle),
        **({"who": who} if who else {}),
    }


def _quiet_submitit() -> None:
    import logging

    # without accounting every status query warns that sacct failed: the places ask squeue
    logging.getLogger("submitit").setLevel(logging.ERROR)


@place("local")
class Local:
    """One submitit LocalExecutor per task (submitit's own would give every task the same
    devices), no time limit unless --task_time_min asks for one."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def submit(self, folder: Path, callables: list, name: str) -> list[Job]:
        import submitit

        _quiet_submitit()
        out = []
        timeout = self.cfg.task_time_min or FOREVER_MIN
        for i, c in enumerate(callables):
            ex = submitit.LocalExecutor(folder)
            devices = pinned(self.cfg, i)
            ex.update_parameters(
                timeout_min=timeout,
                gpus_per_node=len(devices),
                **({"visible_gpus": [int(d) for d in devices]} if devices else {}),
            )
            handle = ex.submit(c)
            rec = _submitit_record("local", handle, claims.identity(int(handle.job_id)))
            out.append(SubmititJob(rec, _local_live, handle))
        return out

    def job(self, record: dict) -> Job:
        return SubmititJob(record, _local_live)


def _local_live(rec: dict) -> bool | None:
    return claims.alive(rec.get("who") or {"host": None})


@place("slurm")
class Slurm:
    """A SLURM job array through submitit; near its time limit or preempted, a task gets USR2,
    checkpoints its run and is requeued (at most 10 times)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def submit(self, folder: Path, callables: list, name: str) -> list[Job]:
        import submitit

        _quiet_submitit()
        cfg, timeout = self.cfg, self.cfg.task_time_min or self.cfg.slurm_time_min
        ex = submitit.AutoExecutor(folder, cluster="slurm", slurm_max_num_timeout=10)
        extra = dict(item.split("=", 1) for item in cfg.slurm_param)
        ex.update_parameters(
            name=name,
            timeout_min=timeout,
            slurm_array_parallelism=cfg.slurm_array_parallelism or len(callables),
            gpus_per_node=gpus_per_task(cfg),
            tasks_per_node=1,
            slurm_additional_parameters={k: _number(v) for k, v in extra.items()},
            slurm_signal_delay_s=min(120, 60 * timeout // 4),
            **({"slurm_partition": cfg.slurm_partition} if cfg.slurm_partition else {}),
        )
        with ex.batch():
            handles = [ex.submit(c) for c in callables]
        return [SubmititJob(_submitit_record("slurm", h), squeue_live, h) for h in handles]

    def job(self, record: dict) -> Job:
        return SubmititJob(record, squeue_live)


def squeue_live(rec: dict) -> bool | None:
    """Whether SLURM still has the job (waiting, running, requeued); None when squeue fails."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", str(rec["job_id"]), "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        # an ended job leaves squeue's memory after MinJobAge: "Invalid job id" is its answer
        return False if "Invalid job id" in out.stderr else None
    return bool(out.stdout.strip())


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        return text


# --- a pool of plain processes --------------------------------------------------------------------


@place("pool")
class Pool:
    """Each task a `python -m resnetf.places TASK.pkl` process of this machine, in a session of
    its own (a driver killed leaves it running, as local tasks do), pinned to its GPUs through
    CUDA_VISIBLE_DEVICES; its result is a JSON file beside its logs."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def submit(self, folder: Path, callables: list, name: str) -> list[Job]:
        out = []
        for i, c in enumerate(callables):
            stem = folder / f"{name}_{os.getpid()}_{i}"
            Path(f"{stem}.pkl").write_bytes(pickle.dumps(c))
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(pinned(self.cfg, i))}
            with open(f"{stem}_log.out", "wb") as log, open(f"{stem}_log.err", "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "resnetf.places", f"{stem}.pkl"],
                    stdout=log,
                    stderr=err,
                    env=env,
                    start_new_session=True,
                )
            rec = {
                "launcher": "pool",
                "job_id": f"{os.uname().nodename}:{proc.pid}",
                "log": f"{stem}_log.out",
                "err": f"{stem}_log.err",
                "result": f"{stem}_result.json",
                "who": claims.identity(proc.pid),
            }
            out.append(PoolJob(rec, proc))
        return out

    def job(self, record: dict) -> Job:
        return PoolJob(record)


class PoolJob:
    def __init__(self, record: dict, proc: subprocess.Popen | None = None):
        self.rec, self.proc, self.id = record, proc, record["job_id"]

    def state(self) -> str:
        if self.proc is not None and self.proc.poll() is None:
            return "running"
        if self.proc is None:
            live = claims.alive(self.rec["who"])
            if live is None or live:
                return "unknown" if live is None else "running"
        result = _read_result(self.rec["result"])
        return "done" if result is not None and result.get("error") is None else "failed"

    def logs(self) -> tuple[str, str]:
        return self.rec["log"], self.rec["err"]

    def cancel(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
        elif claims.alive(self.rec["who"]):
            os.kill(int(self.rec["who"]["pid"]), signal.SIGINT)

    def failure(self) -> str:
        result = _read_result(self.rec["result"])
        if result is None:
            return "killed: it left no result"
        return result.get("error") or "no message"

    def record(self) -> dict:
        return self.rec


def _read_result(path: str) -> dict | None:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _run_pool_task(pickled: str) -> int:
    """A pool task: the callable its driver pickled (this machine's own file, written by the
    driver that started this process), its result or its error's last line as JSON."""
    stem = pickled[: -len(".pkl")]
    task = pickle.loads(Path(pickled).read_bytes())
    try:
        task()
        error = None
    except BaseException as e:  # noqa: BLE001 - a task's end, whatever it was, is its result
        error = f"{type(e).__name__}: {e}".strip().splitlines()[-1]
        print(error, file=sys.stderr, flush=True)
    tmp = Path(f"{stem}_result.json.tmp")
    tmp.write_text(json.dumps({"error": error}))
    os.replace(tmp, f"{stem}_result.json")
    return 0 if error is None else 1


def check_devices(cfg: Config) -> None:
    g = gpus_per_task(cfg)
    if cfg.launcher in ("local", "pool") and g > 0 and cfg.jobs * g > len(device_ids()):
        raise ConfigError(
            f"jobs: --launcher {cfg.launcher} pins each job to its own GPU(s): {cfg.jobs} jobs "
            f"x {g} GPU(s) but this process may use {len(device_ids())} (fewer --jobs, or "
            f"--gpus_per_job 0 to run on the CPU)"
        )
    if cfg.launcher == "local" and g > 0 and not all(d.isdigit() for d in device_ids()):
        raise ConfigError(
            f"launcher: local pins GPUs by number, and CUDA_VISIBLE_DEVICES names them "
            f"otherwise ({','.join(device_ids())}): use --launcher pool"
        )


if __name__ == "__main__":
    raise SystemExit(_run_pool_task(sys.argv[1]))
