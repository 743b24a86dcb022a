"""Where runs execute: inline (this process, one after another), local (one process per shard,
pinned to a GPU each where there are GPUs) or a SLURM job array, through submitit. The repo only
says what to run; submitit and SLURM decide how.

An ablation, `--seeds N` and a benchmark are lists of ordinary runs. `run_many` deals the list
round-robin into `--jobs` shards, one array task each. A task loads the data once and runs its
runs one after another, each an ordinary run folder (and W&B run) recording where it ran. The run
folders are the only results: the driver watches them (runs finished / total, tasks failed),
then reads them back, and a rerun of the same command runs only what is missing.

Exactly once: a run that finished, diverged or failed (it raised) is done. A task stopped
mid-run (SIGTERM, SLURM's USR2 before its time limit or on preemption) is requeued by
submitit's checkpoint hook (`Shard.checkpoint`): it skips its done runs and resumes the
interrupted one from its last epoch's checkpoint (the repo's exact resume). The driver writes a
launch record (launch.json in --launch_dir) before it waits; killed and rerun, it finds the
record of the same work, waits for its jobs that still run, and submits only runs that no live
job holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Config, ConfigError, config_hash

DONE = ("finished", "diverged", "failed")  # a result: never run again by the same launch
POLL_SECONDS = 2.0


# --- what runs where: the executor ---------------------------------------------------------------


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
    gpus = visible_gpus()
    if cfg.launcher == "local" and gpus_per_job(cfg) > 0 and cfg.jobs * gpus_per_job(cfg) > gpus:
        raise ConfigError(
            f"jobs: --launcher local pins each job to its own GPU(s): {cfg.jobs} jobs x "
            f"{gpus_per_job(cfg)} GPU(s) but this machine has {gpus} (fewer --jobs, or "
            f"--gpus_per_job 0 to run on the CPU)"
        )
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


def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def gpus_per_job(cfg: Config) -> int:
    """--gpus_per_job, or 1 where CUDA exists and 0 on a CPU."""
    if cfg.gpus_per_job is not None:
        return cfg.gpus_per_job
    return 1 if visible_gpus() > 0 else 0


def executors(cfg: Config, folder: Path, tasks: int) -> list:
    """One submitit executor per task slot: local, one LocalExecutor per task, pinned to its own
    GPUs (submitit's own would give every job the same devices); slurm, one executor whose
    array runs at most --slurm_array_parallelism tasks at once."""
    import submitit

    timeout = cfg.slurm_time_min
    if cfg.launcher == "local":
        g = gpus_per_job(cfg)
        out = []
        for i in range(tasks):
            ex = submitit.LocalExecutor(folder)
            pinned = {"visible_gpus": list(range(i * g, (i + 1) * g))} if g else {}
            ex.update_parameters(timeout_min=timeout, gpus_per_node=g, **pinned)
            out.append(ex)
        return out
    # a task near its time limit or preempted is requeued this many times at most
    ex = submitit.AutoExecutor(folder, cluster="slurm", slurm_max_num_timeout=10)
    extra = dict(item.split("=", 1) for item in cfg.slurm_param)
    ex.update_parameters(
        timeout_min=timeout,
        slurm_array_parallelism=cfg.slurm_array_parallelism or tasks,
        gpus_per_node=gpus_per_job(cfg),
        tasks_per_node=1,
        slurm_additional_parameters={k: _number(v) for k, v in extra.items()},
        slurm_signal_delay_s=min(120, 60 * timeout // 4),
        **({"slurm_partition": cfg.slurm_partition} if cfg.slurm_partition else {}),
    )
    return [ex]


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        return text


# --- one shard: a task's runs, one after another ---------------------------------------------


def where() -> dict:
    """Where this process runs: host, SLURM job and array ids, devices, task index."""
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
    folder again (config hash, seed, data fingerprint)."""

    label: str
    cfg: Config
    job_type: str = "train"

    def key(self, fingerprint: str) -> tuple:
        return (config_hash(self.cfg), self.cfg.seed, fingerprint)


def run_folders(runs_dir: str, job_type: str = "train") -> dict:
    """(config hash, seed, data fingerprint) -> (folder, summary or None) of every run folder of
    that job type under runs_dir; the newest folder where several share a key."""
    found = {}
    for path in sorted(Path(runs_dir).glob("*/config.json"), key=lambda p: p.stat().st_mtime):
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if config.get("job_type", "train") != job_type:
            continue
        try:
            summary = json.loads((path.parent / "summary.json").read_text())
        except (OSError, ValueError):
            summary = None
        key = (config.get("config_hash"), config.get("seed"), config.get("data_fingerprint"))
        if key not in found or (found[key][1] or {}).get("status") != "finished":
            found[key] = (path.parent, summary)
    return found


class Shard:
    """A task's runs (submitit's callable). Requeued on preemption or timeout through
    `checkpoint`: the same shard again, which skips what is done and resumes what was
    interrupted; progress lives in the run folders, not in this object."""

    def __init__(self, runs: list[Run], index: int, launch_id: str, warmup: Config | None = None):
        self.runs, self.index, self.launch_id, self.warmup = runs, index, launch_id, warmup

    def __call__(self) -> list[dict]:
        from .data import load_cifar10
        from .train import Context, TrainingDiverged, run

        first = self.runs[0].cfg
        cifar = load_cifar10(first.data_dir, download=first.download)
        fingerprint, results = cifar.fingerprint(), []
        placed = {**where(), "task_index": self.index, "launch_id": self.launch_id}
        if self.warmup is not None:  # cudnn autotuning, allocator and compile caches: uncounted
            run(self.warmup.replace(launcher="inline"), Context(job_type="warmup"), cifar)
        for r in self.runs:
            cfg, why = self.next_config(r, fingerprint)
            if cfg is None:
                results.append({"label": r.label, **why})
                continue
            print(f"task {self.index}: {why} {r.label} (seed {r.cfg.seed})", flush=True)
            context = Context(
                job_type=r.job_type, tags=("launch",), extra_config={"launch": placed}
            )
            try:
                summary = run(cfg, context, cifar)
            except TrainingDiverged as e:  # a result among many
                summary = e.summary or {"status": "diverged", "error": str(e)}
            except Exception as e:  # recorded as failed (its folder says so); the task goes on
                print(
                    f"task {self.index}: {r.label} seed {r.cfg.seed} failed: {e}", file=sys.stderr
                )
                summary = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            results.append({"label": r.label, **summary})
        return results

    def next_config(self, r: Run, fingerprint: str):
        """(None, its summary) for a run that is done: finished, diverged, or failed in this
        launch; else (the config to run, "running" or "resuming"): a run stopped mid-way (its
        process was, with a checkpoint) resumes from its checkpoint, anything else starts anew."""
        from .checkpoint import saved_config

        folder, summary = run_folders(r.cfg.runs_dir, r.job_type).get(r.key(fingerprint)) or (
            None,
            None,
        )
        status = (summary or {}).get("status")
        if status in ("finished", "diverged") or (status == "failed" and self.mine(folder)):
            return None, summary
        cfg = r.cfg.replace(progress=False, checkpoint=True, launcher="inline")
        if folder is not None and status in (None, "interrupted", "running"):
            if (folder / "checkpoint.pt").exists():
                resumed = saved_config(folder).replace(
                    resume=str(folder), progress=False, workers=cfg.workers, device=cfg.device
                )
                return resumed, "resuming"
        return cfg, "running"

    def mine(self, folder: Path) -> bool:
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            return False
        return (config.get("launch") or {}).get("launch_id") == self.launch_id

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def deal(runs: list[Run], jobs: int) -> list[list[Run]]:
    """Round-robin: run i to shard i mod K (an interleaved list stays interleaved in each)."""
    k = max(1, min(jobs, len(runs)))
    return [runs[i::k] for i in range(k)]


# --- the driver: submit once, watch the run folders, read them back ----------------------------


def work_id(runs: list[Run], fingerprint: str) -> str:
    keys = sorted(json.dumps(r.key(fingerprint)) for r in runs)
    return hashlib.blake2b("\n".join(keys).encode(), digest_size=6).hexdigest()


def launch_folder(cfg: Config, name: str, work: str) -> Path:
    """--launch_dir, else the folder of an earlier launch of the same work (a rerun finds its
    record), else runs/launch/<name>_<time>."""
    if cfg.launch_dir:
        return Path(cfg.launch_dir)
    for record in sorted(Path(cfg.runs_dir, "launch").glob("*/launch.json")):
        try:
            if json.loads(record.read_text()).get("work") == work:
                return record.parent
        except (OSError, ValueError):
            continue
    return Path(cfg.runs_dir, "launch", f"{name}_{time.strftime('%Y%m%d-%H%M%S')}")


def alive(job: dict) -> bool:
    """A recorded job that still runs or waits: its process (local) or its SLURM job."""
    if job["launcher"] == "local":
        try:
            os.kill(int(job["job_id"]), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True
        return Path(f"/proc/{job['job_id']}").exists() and not _zombie(job["job_id"])
    import subprocess

    out = subprocess.run(
        ["squeue", "-h", "-j", str(job["job_id"]), "-o", "%T"], capture_output=True, text=True
    )
    return out.returncode == 0 and bool(out.stdout.strip())


def _zombie(pid) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def run_many(
    runs: list[Run], base: Config, name: str, fingerprint: str, warmup: Config | None = None
) -> list[dict]:
    """Every run of the list, on --launcher's executors; one summary per run, in list order
    (`label`, `seed` and where it ran added). Runs already done are not run again. `warmup`: a
    run each task makes first, uncounted (the benchmark's). LaunchFailed lists the runs that
    failed or never ran."""
    check(base)
    done = run_folders(base.runs_dir)
    todo = [r for r in runs if not _is_done(done.get(r.key(fingerprint)))]
    work = work_id(runs, fingerprint)
    folder = launch_folder(base, name, work)
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / "launch.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    held = {key for job in record.get("jobs", []) if alive(job) for key in job["runs"]}
    if held:
        print(f"launch: {len(held)} runs held by jobs of {record_path} still running: waiting")
    to_submit = [r for r in todo if json.dumps(r.key(fingerprint)) not in held]
    jobs = [j for j in record.get("jobs", []) if alive(j)]
    handles = []
    if to_submit:
        shards = deal(to_submit, base.jobs)
        if len(shards) < base.jobs:
            print(f"launch: {len(to_submit)} runs to do: {len(shards)} tasks, not {base.jobs}")
        handles = _submit(base, folder, shards, work, warmup)
        for shard, job in zip(shards, handles):
            jobs.append(
                {
                    "launcher": base.launcher,
                    "job_id": str(job.job_id),
                    "runs": [json.dumps(r.key(fingerprint)) for r in shard],
                    "log": str(job.paths.stdout),
                    "err": str(job.paths.stderr),
                }
            )
    record = {"work": work, "name": name, "command": sys.argv, "jobs": jobs}
    _write_json(record_path, record)
    print(
        f"launch: {len(runs)} runs, {len(runs) - len(todo)} already done, "
        f"{len(to_submit)} submitted as {len(handles)} {base.launcher} tasks; record {record_path}"
    )
    _wait(runs, base, fingerprint, jobs, handles)
    return _collect(runs, base, fingerprint, jobs, handles)


def _is_done(found) -> bool:
    return bool(found and found[1] and found[1].get("status") in ("finished", "diverged"))


def _submit(base: Config, folder: Path, shards: list[list[Run]], work: str, warmup) -> list:
    launch_id = f"{work}-{time.strftime('%Y%m%d-%H%M%S')}"
    return submit(base, folder, [Shard(s, i, launch_id, warmup) for i, s in enumerate(shards)])


def submit(cfg: Config, folder: Path, callables: list) -> list:
    """One task per callable: local processes, or one SLURM job array."""
    import logging

    # without accounting every status query warns that sacct failed: this driver asks squeue
    logging.getLogger("submitit").setLevel(logging.ERROR)
    pool = executors(cfg, folder, len(callables))
    if cfg.launcher == "local":
        return [ex.submit(c) for ex, c in zip(pool, callables)]
    with pool[0].batch():
        jobs = [pool[0].submit(c) for c in callables]
    return jobs


def run_workers(cfg: Config, workers: list, name: str, progress) -> None:
    """A study's workers as tasks (they share the study through its storage, which is their
    record: a rerun's workers go on with the same study); `progress()` is the line shown while
    they work. LaunchFailed names each worker that failed, with its log."""
    folder = Path(
        cfg.launch_dir or Path(cfg.runs_dir, "launch", f"{name}_{time.strftime('%Y%m%d-%H%M%S')}")
    )
    folder.mkdir(parents=True, exist_ok=True)
    handles = submit(cfg, folder, workers)
    jobs = [
        {"launcher": cfg.launcher, "job_id": str(h.job_id), "runs": [], "log": str(h.paths.stdout)}
        for h in handles
    ]
    _write_json(folder / "launch.json", {"name": name, "command": sys.argv, "jobs": jobs})
    print(f"launch: {len(handles)} {cfg.launcher} workers; record {folder / 'launch.json'}")
    last = None
    while True:
        states = [_job_ended(j, h) for j, h in zip(jobs, handles)]
        line = f"launch: {progress()}, {states.count('failed')} workers failed"
        if line != last:
            print(line, flush=True)
            last = line
        if "running" not in states:
            break
        time.sleep(POLL_SECONDS)
    failed = [
        f"worker {h.job_id} failed ({_last_line(h)}); log {h.paths.stderr}"
        for j, h in zip(jobs, handles)
        if _job_ended(j, h) == "failed"
    ]
    if failed:
        raise LaunchFailed(failed)


def _last_line(handle) -> str:
    try:
        lines = str(handle.exception()).strip().splitlines()
    except Exception as e:  # no result at all (killed): what submitit says of that
        lines = [f"{type(e).__name__}: {e}"]
    return lines[-1] if lines else "no message"


def _wait(runs, base, fingerprint, jobs, handles) -> None:
    """Until every job has ended: runs finished / total and tasks failed, on one line."""
    total, last = len(runs), None
    by_id = {str(h.job_id): h for h in handles}
    while True:
        found = run_folders(base.runs_dir)
        ended = sum(_is_ended(found.get(r.key(fingerprint))) for r in runs)
        states = [_job_ended(j, by_id.get(j["job_id"])) for j in jobs]
        failed = sum(1 for s in states if s == "failed")
        line = f"launch: {ended}/{total} runs done, {failed} tasks failed"
        if line != last:
            print(line, flush=True)
            last = line
        if all(s != "running" for s in states):
            return
        time.sleep(POLL_SECONDS)


def _is_ended(found) -> bool:
    return bool(found and found[1] and found[1].get("status") in DONE)


def _job_ended(job: dict, handle) -> str:
    """running, done or failed: a job this driver submitted by its result pickle (SLURM without
    accounting has no other record of an ended job) and whether it still runs; an adopted one
    (submitted by an earlier driver) by whether it still runs."""
    if handle is None:
        return "running" if alive(job) else "done"
    if job["launcher"] == "local" and not handle.done():
        return "running"
    if not handle.paths.result_pickle.exists():
        if job["launcher"] == "slurm" and alive(job):
            return "running"
        return "failed"  # killed: it left no result
    try:
        return "failed" if handle.exception() is not None else "done"
    except Exception:  # an unreadable result
        return "failed"


def _collect(runs, base, fingerprint, jobs, handles) -> list[dict]:
    """One summary per run, from its folder; each run not done said in one line with its log."""
    found = run_folders(base.runs_dir)
    out, problems = [], []
    log_of = {key: job["log"] for job in jobs for key in job["runs"]}
    for r in runs:
        folder, summary = found.get(r.key(fingerprint)) or (None, None)
        summary = dict(summary or {"status": "missing"})
        summary.setdefault("run_dir", str(folder) if folder else None)
        out.append({"label": r.label, "seed": r.cfg.seed, **summary, **placement(folder)})
        if summary["status"] not in ("finished", "diverged"):
            log = log_of.get(json.dumps(r.key(fingerprint)), "no task ran it")
            problems.append(f"{r.label} seed {r.cfg.seed}: {summary['status']}; log {log}")
    for j, h in zip(jobs[-len(handles) :] if handles else [], handles):
        if _job_ended(j, h) == "failed":
            problems.append(f"task {h.job_id} failed ({_last_line(h)}); log {h.paths.stderr}")
    if problems:
        raise LaunchFailed(problems)
    return out


def placement(folder: Path | None) -> dict:
    """Where a run folder's run ran (its config.json's launch record), as columns."""
    try:
        launch = json.loads((folder / "config.json").read_text()).get("launch") or {}
    except (OSError, ValueError, TypeError):
        return {}
    keys = ("host", "task_index", "slurm_job_id", "slurm_array_task_id", "cuda_visible_devices")
    return {k: launch.get(k) for k in keys}


class LaunchFailed(RuntimeError):
    """Runs that failed or never ran; each a line with its log's path. The finished runs are
    kept: the same command runs only the rest."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s):\n" + "\n".join(problems))


def _write_json(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)
