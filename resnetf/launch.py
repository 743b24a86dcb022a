"""Where runs execute: inline (this process, one after another) or as tasks of a place to run
(resnetf.places: local processes, a SLURM job array, a pool of plain processes). The repo only
says what to run; the place decides how.

An ablation, `--seeds N` and a benchmark are lists of ordinary runs. `run_many` deals the list
into `--jobs` shards, one task each. A task loads the data once and runs its runs one after
another, each through its claim (resnetf.claims): an ordinary run folder (and W&B run), written
by one process at a time. The claims' records are the results: the driver watches its own runs'
records (runs done / total, tasks failed), then reads them back, and a rerun of the same command
runs only what is missing.

Exactly once: each run (config, seed, data) trains in one folder, written by one process at a
time, whatever commands overlap:
- a task takes a run's claim before it trains or resumes it; a run another live process holds
  is left for later in the task and then waited for (it ends done, or its holder died and this
  task resumes it from its checkpoint);
- a driver records its launch (launch.json, under a lock on its folder) before it submits, and
  adds each job as it is submitted; a rerun of the same work (the same runs, whatever
  --launch_dir) finds the record, waits for its live jobs and submits only the runs no live job
  holds; a folder holding another work's record is refused;
- SIGTERM, or SIGINT from a cancel, stops the task: its run is checkpointed as interrupted and
  the task ends (a rerun resumes it). SLURM's USR2 before the time limit, or on preemption,
  checkpoints the run and requeues the task through submitit (`Shard.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import claims, places
from .config import Config, ConfigError, config_hash

DONE = ("finished", "diverged", "failed")  # a result: never run again by the same launch
POLL_SECONDS = 2.0


def check(cfg: Config) -> None:
    """Bad launch settings, one ConfigError each, before anything is submitted or written."""
    if cfg.launcher == "inline":
        return
    if cfg.tune and cfg.launcher == "slurm" and (cfg.storage or "sqlite").startswith("sqlite"):
        raise ConfigError(
            "storage: a study's workers on SLURM run on several nodes, and SQLite is not for "
            "parallel writers across machines (Optuna's FAQ): give --storage a PostgreSQL URL, "
            "or a journal file (PATH.log) on storage every node shares"
        )
    for item in cfg.slurm_param:
        if "=" not in item:
            raise ConfigError(f"slurm_param: {item!r} is not KEY=VALUE")
    if cfg.launcher == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("launcher: slurm needs SLURM's sbatch on PATH (none on this machine)")
    places.check_devices(cfg)
    folder = Path(cfg.launch_dir or cfg.runs_dir).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"launch_dir: {existing} is not a folder")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"launch_dir: {existing} is not writable")
    if cfg.tune and cfg.launcher == "slurm" and not cfg.storage.startswith("postgres"):
        print(
            f"warning: --storage {cfg.storage}: a journal file needs a file system with working "
            f"locks that every node shares; not NFS (Optuna's journal file is unsafe there)",
            file=sys.stderr,
        )


# --- one shard: a task's runs, one after another ---------------------------------------------


def where() -> dict:
    """Where this process runs: host, SLURM job and array ids, devices."""
    env = os.environ
    return {
        "host": socket.gethostname(),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
    }


@dataclass
class Run:
    """One run of a list: its label (variant or seed), its config, and the key that finds its
    claim again (config hash, seed, data fingerprint)."""

    label: str
    cfg: Config
    job_type: str = "train"

    def key(self, fingerprint: str) -> tuple:
        return (config_hash(self.cfg), self.cfg.seed, fingerprint)


def run_folders(runs_dir: str, job_type: str = "train") -> dict:
    """(config hash, seed, data fingerprint) -> (folder, summary or None) of every run folder of
    that job type under runs_dir; the newest folder where several share a key. A scan of
    runs_dir: for folders no claim records (from before claims, or plain runs), never a poll."""
    found = {}
    for path in sorted(Path(runs_dir).glob("*/config.json"), key=lambda p: p.stat().st_mtime):
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(config, dict) or config.get("job_type", "train") != job_type:
            continue
        try:
            summary = json.loads((path.parent / "summary.json").read_text())
        except (OSError, ValueError):
            summary = None
        summary = summary if isinstance(summary, dict) else None
        key = (config.get("config_hash"), config.get("seed"), config.get("data_fingerprint"))
        if key not in found or (found[key][1] or {}).get("status") != "finished":
            found[key] = (path.parent, summary)
    return found


class TaskStopped(RuntimeError):
    """SIGTERM or SIGINT reached a task mid-run: the run is checkpointed, the task ends."""


class Shard:
    """A task's runs (the place's callable). Requeued on preemption or timeout through
    `checkpoint`: the same shard again, which skips what is done and resumes what was
    interrupted; progress lives in the claims' records and run folders, not in this object."""

    def __init__(self, runs: list[Run], index: int, launch_id: str, warmup: Config | None = None):
        self.runs, self.index, self.launch_id, self.warmup = runs, index, launch_id, warmup

    def __call__(self) -> list[dict]:
        from .data import load_cifar10
        from .train import Context, run

        first = self.runs[0].cfg
        cifar = load_cifar10(first.data_dir, download=first.download)
        placed = {**where(), "task_index": self.index, "launch_id": self.launch_id}
        if self.warmup is not None:  # cudnn autotuning, allocator and compile caches: uncounted
            run(self.warmup.here(), Context(job_type="warmup"), cifar)
        results = {}
        for wait in (False, True):  # what another live process holds: after the rest
            for i, r in enumerate(self.runs):
                if i not in results:
                    summary = self.one(r, cifar, placed, wait)
                    if summary is not None:
                        results[i] = {"label": r.label, **summary}
        return [results[i] for i in range(len(self.runs))]

    def one(self, r: Run, cifar, placed: dict, wait: bool) -> dict | None:
        from .train import Context, RunStopped, TrainingDiverged

        cfg = r.cfg.here().replace(progress=False, checkpoint=True)
        context = Context(job_type=r.job_type, tags=("launch",), extra_config={"launch": placed})
        label = f"{r.label} (seed {r.cfg.seed})"
        try:
            summary, how = claims.run_claimed(cfg, cifar, context, where=placed, wait=wait)
        except TrainingDiverged as e:  # a result among many
            return e.summary or {"status": "diverged", "error": str(e)}
        except RunStopped as e:
            if e.status == "interrupted":  # SIGTERM / cancel: the task stops, the run resumes
                raise TaskStopped(f"task {self.index}: {e} in {label}; rerun to resume") from None
            return {"status": e.status}
        except Exception as e:  # recorded as failed (its record says so); the task goes on
            print(f"task {self.index}: {label} failed: {e}", file=sys.stderr, flush=True)
            return {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        if how == "held":
            print(f"task {self.index}: {label} held by another process: later", flush=True)
            return None
        print(f"task {self.index}: {how} {label}", flush=True)
        return summary

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def deal(runs: list, jobs: int, group=None) -> list[list]:
    """Runs into min(jobs, len(runs)) shards, list order kept in each: the j-th run of group g
    (a config; `group(run)` names it) goes to shard (g + j) mod K, so every shard runs every
    config the seeds allow and a config's times are not one device's. One group: round-robin."""
    k = max(1, min(jobs, len(runs)))
    groups: dict = {}
    shards: list[list] = [[] for _ in range(k)]
    for r in runs:
        g = groups.setdefault(group(r) if group else None, [len(groups), 0])
        shards[(g[0] + g[1]) % k].append(r)
        g[1] += 1
    return [s for s in shards if s]


# --- the launch record: written before submitting, under its folder's lock ------------------------


def work_id(runs: list[Run], fingerprint: str) -> str:
    keys = sorted(json.dumps(r.key(fingerprint)) for r in runs)
    return hashlib.blake2b("\n".join(keys).encode(), digest_size=6).hexdigest()


def _index(runs_dir: str, work: str) -> Path:
    return Path(runs_dir, "launch", "works", f"{work}.json")


def launch_folder(cfg: Config, name: str, work: str) -> Path:
    """The folder of an earlier launch of the same work (whatever --launch_dir said then or
    now), else --launch_dir, else runs/launch/<name>_<work>: two drivers of one work meet in
    one folder, and a rerun finds its record."""
    try:
        earlier = Path(json.loads(_index(cfg.runs_dir, work).read_text())["folder"])
        if (earlier / "launch.json").exists():
            if cfg.launch_dir and Path(cfg.launch_dir).absolute() != earlier:
                print(f"launch: this work was launched from {earlier}: going on there")
            return earlier
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return Path(cfg.launch_dir or Path(cfg.runs_dir, "launch", f"{name}_{work}")).absolute()


def read_record(folder: Path, work: str, name: str) -> dict:
    """The folder's launch record, a new one if it has none; another work's is refused."""
    path = folder / "launch.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return {"work": work, "name": name, "jobs": []}
    except (OSError, ValueError) as e:
        raise ConfigError(f"launch_dir: {path} cannot be read ({e}): move it away") from None
    if not isinstance(record, dict) or not isinstance(record.get("jobs", []), list):
        raise ConfigError(f"launch_dir: {path} is not a launch record: move it away")
    if record.get("work") != work:
        raise ConfigError(
            f"launch_dir: {folder} holds the record of another work ({record.get('name')}, "
            f"work {record.get('work')}), not of this one ({name}, work {work}): give another "
            f"--launch_dir"
        )
    record["jobs"] = [j for j in map(_recorded_job, record.get("jobs", [])) if j is not None]
    return record


# what a place needs to find a recorded job again (pool: who started it, too)
JOB_KEYS = {"launcher": str, "job_id": (str, int), "result": str, "log": str, "err": str}


def _recorded_job(entry) -> dict | None:
    """A job entry of launch.json as the driver reads it: `runs` a list of run keys (none
    known otherwise); an entry lacking what its place needs to find the job again (or holding
    it in another type: a hand edit, a damaged file) loses its job id, so it is judged ended
    (places.Lost), as a pending entry is: the claims keep its runs from running twice."""
    if not isinstance(entry, dict):
        return None
    runs = entry.get("runs")
    entry = {
        **entry,
        "runs": [r for r in runs if isinstance(r, str)] if isinstance(runs, list) else [],
    }
    found = all(isinstance(entry.get(k), kind) for k, kind in JOB_KEYS.items())
    if not found or (entry["launcher"] == "pool" and not isinstance(entry.get("who"), dict)):
        entry["job_id"] = None
    return entry


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def submit_recorded(cfg: Config, folder: Path, record: dict, batches: list[dict]) -> list:
    """Each batch ({"callable", "runs"}) submitted as one task: recorded as pending before it
    is submitted, with its job once it is; returns the new jobs. Call under the folder's lock."""
    path, launch_id = folder / "launch.json", batches[0]["launch_id"] if batches else None
    entries = [
        {"launcher": cfg.launcher, "job_id": None, "launch_id": launch_id, "runs": b["runs"]}
        for b in batches
    ]
    record["jobs"].extend(entries)
    record["command"] = sys.argv
    _write_json(path, record)  # a driver killed while it submits leaves "pending" entries
    jobs = places.of(cfg).submit(folder, [b["callable"] for b in batches], record["name"])
    for entry, job in zip(entries, jobs):
        entry.update(job.record())
    _write_json(path, record)
    return jobs


# --- the driver: submit once, watch its runs' records, read them back ----------------------------


def run_many(
    runs: list[Run], base: Config, name: str, fingerprint: str, warmup: Config | None = None
) -> list[dict]:
    """Every run of the list, on --launcher's place; one summary per run, in list order
    (`label`, `seed` and where it ran added). Runs already done are not run again. `warmup`: a
    run each task makes first, uncounted (the benchmark's). LaunchFailed lists the runs that
    failed or never ran."""
    check(base)
    work = work_id(runs, fingerprint)
    folder = launch_folder(base, name, work)
    keys = [json.dumps(r.key(fingerprint)) for r in runs]
    with claims.locked(folder / "launch.lock"):
        record = read_record(folder, work, name)
        jobs = [places.job_of(j, base) for j in record["jobs"]]
        # liveness before results: a job that ends in between has its runs done by then
        live = [j for j in jobs if j.state() in places.LIVE]
        held = {k for job, rec in zip(jobs, record["jobs"]) if job in live for k in rec["runs"]}
        todo = [(r, k) for r, k in zip(runs, keys) if _status(base, r, fingerprint) not in DONE]
        if held:
            print(f"launch: {len(held)} runs held by live jobs of {folder}: waiting for them")
        to_submit = [r for r, k in todo if k not in held]
        new = []
        if to_submit:
            launch_id = f"{work}-{uuid.uuid4().hex[:8]}"  # this driver's: never shared
            shards = deal(to_submit, base.jobs, group=lambda r: config_hash(r.cfg))
            if len(shards) < base.jobs:
                print(f"launch: {len(to_submit)} runs to do: {len(shards)} tasks, not {base.jobs}")
            batches = [
                {
                    "callable": Shard(s, i, launch_id, warmup),
                    "runs": [json.dumps(r.key(fingerprint)) for r in s],
                    "launch_id": launch_id,
                }
                for i, s in enumerate(shards)
            ]
            new = submit_recorded(base, folder, record, batches)
        elif not folder.joinpath("launch.json").exists():
            _write_json(folder / "launch.json", record)
    _index(base.runs_dir, work).parent.mkdir(parents=True, exist_ok=True)
    _write_json(_index(base.runs_dir, work), {"folder": str(folder), "name": name})
    print(
        f"launch: {len(runs)} runs, {len(runs) - len(todo)} already done, "
        f"{len(to_submit)} submitted as {len(new)} {base.launcher} tasks; record "
        f"{folder / 'launch.json'}"
    )
    watched = live + new
    _wait(runs, base, fingerprint, watched)
    return _collect(runs, base, fingerprint, record, new)


def _status(cfg: Config, r: Run, fingerprint: str) -> str | None:
    """A run's status from its claim's record (a folder from before claims: from the folder)."""
    key = r.key(fingerprint)
    record = claims.read(cfg.runs_dir, key)
    if record is not None:
        return record.get("status")
    found = claims.unclaimed_folders(cfg.runs_dir, r.job_type).get(key)
    return ((found or (None, None))[1] or {}).get("status")


def _wait(runs, base, fingerprint, jobs) -> None:
    """Until every job has ended, or every run has: runs done / total and tasks failed, on one
    line. Reads only this work's runs' records: a poll costs O(its runs), not O(runs_dir)."""
    total, last = len(runs), None
    while True:
        ended = sum(_status(base, r, fingerprint) in DONE for r in runs)
        states = [j.state() for j in jobs]
        line = f"launch: {ended}/{total} runs done, {states.count('failed')} tasks failed"
        if states.count("unknown"):
            line += f", {states.count('unknown')} tasks of unknown state (still waited for)"
        if line != last:
            print(line, flush=True)
            last = line
        if ended == total or not any(s in places.LIVE for s in states):
            return
        time.sleep(POLL_SECONDS)


def _collect(runs, base, fingerprint, record, new) -> list[dict]:
    """One summary per run, from its record; each run not done said in one line with its log."""
    out, problems = [], []
    log_of = {key: job.get("log") for job in record["jobs"] for key in job["runs"]}
    for r in runs:
        key = r.key(fingerprint)
        rec = claims.read(base.runs_dir, key)
        if rec is None:  # a folder from before claims
            folder, summary = claims.unclaimed_folders(base.runs_dir, r.job_type).get(key) or (
                None,
                None,
            )
            rec = {"folder": str(folder) if folder else None, "summary": summary, "attempts": []}
        summary = dict(rec.get("summary") or {"status": rec.get("status") or "missing"})
        summary["status"] = rec.get("status") or summary.get("status") or "missing"
        summary.setdefault("run_dir", rec.get("folder"))
        out.append({"label": r.label, "seed": r.cfg.seed, **summary, **placement(rec)})
        if summary["status"] not in ("finished", "diverged"):
            log = log_of.get(json.dumps(key)) or "no task ran it"
            problems.append(f"{r.label} seed {r.cfg.seed}: {summary['status']}; log {log}")
    for job in new:
        if job.state() == "failed":
            problems.append(f"task {job.id} failed ({job.failure()}); log {job.logs()[1]}")
    if problems:
        raise LaunchFailed(problems)
    return out


def placement(record: dict) -> dict:
    """Where a run's last attempt ran, as columns (every attempt is in its claim's record)."""
    attempts = (record or {}).get("attempts") or [{}]
    last = attempts[-1]
    keys = ("host", "task_index", "slurm_job_id", "slurm_array_task_id", "cuda_visible_devices")
    return {k: last.get(k) for k in keys}


class LaunchFailed(RuntimeError):
    """Runs that failed or never ran; each a line with its log's path. The finished runs are
    kept: the same command runs only the rest."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s):\n" + "\n".join(problems))


# --- a study's workers ----------------------------------------------------------------------------


def run_workers(cfg: Config, make_worker, name: str, progress) -> None:
    """--jobs workers of a study as tasks; they share the study through its storage. The
    workers are recorded (launch.json in runs/launch/<name>, or --launch_dir) before they are
    submitted: a rerun while they live adds only what brings them back to --jobs.
    `progress()` is the line shown while they work. LaunchFailed names each worker that failed,
    with its log."""
    check(cfg)
    folder = Path(cfg.launch_dir or Path(cfg.runs_dir, "launch", name)).absolute()
    work = f"study:{name}"
    with claims.locked(folder / "launch.lock"):
        record = read_record(folder, work, name)
        live = [
            j for j in (places.job_of(r, cfg) for r in record["jobs"]) if j.state() in places.LIVE
        ]
        launch_id = f"{name}-{uuid.uuid4().hex[:8]}"
        batches = [
            {"callable": make_worker(), "runs": [], "launch_id": launch_id}
            for _ in range(max(0, cfg.jobs - len(live)))
        ]
        new = submit_recorded(cfg, folder, record, batches) if batches else []
    print(
        f"launch: {len(live)} workers still at work, {len(new)} new {cfg.launcher} workers; "
        f"record {folder / 'launch.json'}"
    )
    jobs, last = live + new, None
    while True:
        states = [j.state() for j in jobs]
        line = f"launch: {progress()}, {states.count('failed')} workers failed"
        if line != last:
            print(line, flush=True)
            last = line
        if not any(s in places.LIVE for s in states):
            break
        time.sleep(POLL_SECONDS)
    failed = [
        f"worker {j.id} failed ({j.failure()}); log {j.logs()[1]}"
        for j in new
        if j.state() == "failed"
    ]
    if failed:
        raise LaunchFailed(failed)
