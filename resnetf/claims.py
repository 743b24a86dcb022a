"""One claim per run: whoever trains a run (a launcher's task, an inline ablation, `--seeds`,
the benchmark) holds the run's claim while it does, so commands that share runs share the work
instead of doubling it, and a run folder is written by one process at a time.

A run is its key (config hash, seed, data fingerprint). Its claim is two files under
runs_dir/claims/:

- `<digest>.lock`, held with `fcntl.flock` by the process that trains the run. The kernel
  releases it when that process ends, however it ends (SIGKILL included), so a dead holder's
  claim is free at once and a live one's is never taken over. The file itself is never removed
  (removing a lock file while another process waits on it would give two holders).
- `<digest>.json`, the run's record: its key, its folder, its status and summary once it ends,
  and each attempt (host, pid, process start, launch, devices, start and end). Only the lock's
  holder writes it, atomically (a temporary file renamed over it), so a reader never sees half.

What the claim needs from the file system: flock that every process sharing runs_dir sees. A
local file system has it; on NFS, Linux emulates flock with NFS byte-range locks (NFSv4, or v3
with its lock manager), so clients exclude each other, unless the mount says `local_lock=flock`
or `local_lock=all` (locks then stay on one client: don't share runs between machines there).
A dead NFS client's locks are freed when its lease ends (about 90 s on NFSv4).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path

FOLDER = "claims"
DONE = ("finished", "diverged")  # a result: whoever claims it next only reads it


def digest(key: tuple) -> str:
    return hashlib.blake2b(json.dumps(list(key)).encode(), digest_size=10).hexdigest()


def record_path(runs_dir: str | os.PathLike, key: tuple) -> Path:
    return Path(runs_dir, FOLDER, f"{digest(key)}.json")


def read(runs_dir: str | os.PathLike, key: tuple) -> dict | None:
    """A run's record, or None (never claimed, or a record that cannot be read: as good as
    none, since only a holder writes it and its holder rewrites it whole)."""
    try:
        record = json.loads(record_path(runs_dir, key).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# --- who a process is: host, pid and start, so that a reused pid is not taken for the holder ----


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """The process's start (boot id and start in clock ticks since boot), None where /proc has
    no such process or there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if fields[0] == "Z":  # a zombie has ended
        return None
    return f"{boot_id()}:{fields[19]}"  # field 22 of stat, the third after the name's ")"


def identity(pid: int | None = None) -> dict:
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid)}


def alive(who: dict) -> bool | None:
    """True or False for a process of this host (same pid and same start: a reused pid is
    another process); None for one on another host, which this host cannot see."""
    if who.get("host") != socket.gethostname():
        return None
    try:
        pid = int(who["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    now = process_start(pid)
    if who.get("start") is None:  # recorded without /proc: the pid alone says what it can
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            return True
        return False
    return now is not None and now == who["start"]


# --- the claim ------------------------------------------------------------------------------------


class Claim:
    """A run's held claim; `record` is its record as this holder sees it. `save()` writes it."""

    def __init__(self, runs_dir: Path, key: tuple, fd: int):
        self.runs_dir, self.key, self.fd = Path(runs_dir), key, fd
        self.record = read(runs_dir, key) or {"key": list(key), "attempts": []}
        self.record.setdefault("attempts", [])

    @property
    def path(self) -> Path:
        return record_path(self.runs_dir, self.key)

    def save(self) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.record, indent=1))
        os.replace(tmp, self.path)

    def begin(self, **where) -> None:
        """A new attempt at the run, by this process (one that never ended died with its
        process: its claim was free while its record said running)."""
        for attempt in self.record["attempts"]:
            if attempt.get("ended") is None:
                attempt["status"] = "died"
        self.record["attempts"].append(
            {**identity(), **where, "began": time.time(), "ended": None, "seconds": None}
        )
        self.record["status"] = "running"
        self.save()

    def end(self, status: str, summary: dict | None = None) -> None:
        attempt = self.record["attempts"][-1] if self.record["attempts"] else {}
        attempt["ended"] = time.time()
        attempt["seconds"] = attempt["ended"] - attempt.get("began", attempt["ended"])
        attempt["status"] = status
        self.record["status"] = status
        if summary is not None:
            self.record["summary"] = summary
        self.save()

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def take(runs_dir: str | os.PathLike, key: tuple, wait: bool = False) -> Claim | None:
    """The run's claim, or None when a live process holds it (wait=True: block until it is
    free). A claim whose holder died is free: the record it left says where the run stands."""
    folder = Path(runs_dir, FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{digest(key)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return Claim(Path(runs_dir), key, fd)


def holder(runs_dir: str | os.PathLike, key: tuple) -> str:
    """Who holds (or last held) the run's claim, in words."""
    attempts = (read(runs_dir, key) or {}).get("attempts") or [{}]
    last = attempts[-1]
    return f"process {last.get('pid', '?')} on {last.get('host', '?')}"


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive flock on `path` for the block (a launch folder's record, say)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- a run taken through its claim ----------------------------------------------------------------


def run_claimed(cfg, cifar, context=None, *, where: dict | None = None, wait: bool = True):
    """Train the run `cfg` (its seed included) once, whoever else asks for it: (summary, how),
    how being "done" (a result already: its summary, nothing trained), "resumed", "ran", or
    "held" (another live process holds it and wait=False: summary None). With wait=True a held
    run is waited for, then read (its holder finished it) or resumed (its holder died).

    A run that raises is recorded (diverged, failed, interrupted) and the exception goes on to
    the caller. `where`: what to record of this attempt besides host and pid (a launch's id and
    task, the devices). A run that failed in the same launch (`where["launch_id"]`) is done."""
    from .config import config_hash
    from .train import Context, RunStopped, TrainingDiverged, run

    key = (config_hash(cfg), cfg.seed, cifar.fingerprint())
    claim = take(cfg.runs_dir, key)
    if claim is None:
        if not wait:
            return None, "held"
        print(f"run {cfg.name} seed {cfg.seed}: held by {holder(cfg.runs_dir, key)}: waiting")
        claim = take(cfg.runs_dir, key, wait=True)
    where = dict(where or {})
    with claim:
        record = claim.record
        if not record["attempts"] and not record.get("folder"):
            _adopt_unclaimed(claim, context.job_type if context else "train")
        status, summary = record.get("status"), record.get("summary")
        last = record["attempts"][-1] if record["attempts"] else {}
        same_launch = where.get("launch_id") and last.get("launch_id") == where["launch_id"]
        if status in DONE or (status == "failed" and same_launch):
            return {**(summary or {}), "status": status}, "done"
        run_cfg, how = _to_run(cfg, record)
        context = context or Context()
        chained = context.on_start

        def started(tracker) -> None:
            record["folder"] = str(tracker.run_dir)
            claim.save()
            if chained is not None:
                chained(tracker)

        claim.begin(**where)
        try:
            summary = run(run_cfg, _replace(context, on_start=started), cifar)
        except TrainingDiverged as e:
            claim.end("diverged", e.summary)
            raise
        except RunStopped as e:
            claim.end(e.status)
            raise
        except Exception as e:
            claim.end("failed", {"status": "failed", "error": f"{type(e).__name__}: {e}"})
            raise
        except BaseException:  # SIGKILL never gets here; a requeue's SystemExit or Ctrl-C does
            claim.end("interrupted")
            raise
        claim.end(summary.get("status", "finished"), summary)
        return summary, how


def _to_run(cfg, record: dict):
    """The config to train and how: the record's folder resumed where it holds a checkpoint and
    no result (its last holder stopped or died mid-run), else a new run."""
    from .checkpoint import saved_config

    folder = record.get("folder")
    if folder and record.get("status") in (None, "running", "interrupted"):
        if Path(folder, "checkpoint.pt").exists():
            resumed = saved_config(folder).replace(
                resume=str(folder), progress=cfg.progress, workers=cfg.workers, device=cfg.device
            )
            return resumed, "resumed"
    return cfg, "ran"


def _replace(context, **changes):
    import dataclasses

    return dataclasses.replace(context, **changes)


def _adopt_unclaimed(claim: Claim, job_type: str) -> None:
    """A result from before claims existed (or from a plain run): the newest finished (or
    diverged) folder of the run's key under runs_dir becomes the record's. An unfinished one is
    left alone: nothing says that its process is not still writing it."""
    found = unclaimed_folders(str(claim.runs_dir), job_type).get(tuple(claim.key))
    summary = (found or (None, None))[1]
    if not summary or summary.get("status") not in DONE:
        return
    claim.record.update(folder=str(found[0]), status=summary["status"], summary=summary)
    claim.save()


_SCANNED: dict = {}


def unclaimed_folders(runs_dir: str, job_type: str = "train") -> dict:
    """launch.run_folders, once per process and runs_dir: what claims do not record (folders
    from before them, plain runs); claimed runs never need it."""
    from .launch import run_folders

    if (str(runs_dir), job_type) not in _SCANNED:
        _SCANNED[(str(runs_dir), job_type)] = run_folders(runs_dir, job_type)
    return _SCANNED[(str(runs_dir), job_type)]
