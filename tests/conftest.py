"""Shared fixtures: a synthetic CIFAR-10 folder in the standard layout, a real subset from
../shared (skipped when absent), a tiny config for CPU runs, and a reader for W&B's files."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnetf import Config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def write_standard_layout(root: Path, n_train: int = 100, n_test: int = 50, seed: int = 0) -> Path:
    """Random images in ROOT/cifar-10-batches-py/ (resnetf.data.write_random_layout)."""
    from resnetf.data import write_random_layout

    return write_random_layout(root, n_train, n_test, seed)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_standard_layout(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def real_subset(tmp_path_factory) -> Path:
    """5,000 train / 1,000 test real CIFAR-10 images (the JPEG set) in the standard layout."""
    pack, tool = SHARED / "data" / "cifar10-jpeg.npz", SHARED / "tools" / "cifar10_unpack.py"
    if not (pack.exists() and tool.exists()):
        pytest.skip(f"needs the JPEG CIFAR-10 pack and unpack tool under {SHARED}")
    root = tmp_path_factory.mktemp("real")
    subprocess.run(
        [sys.executable, str(tool), str(pack), str(root), "--train", "5000", "--test", "1000"],
        check=True,
        capture_output=True,
    )
    return root


@pytest.fixture
def tiny_cfg(tiny_data, tmp_path) -> Config:
    """A run that takes seconds on a CPU: narrow net, 20-image batches, no W&B, no workers."""
    return Config(
        name="tiny",
        model="resnet9",
        width=0.0625,
        epochs=2,
        batch_size=20,
        data_dir=str(tiny_data),
        runs_dir=str(tmp_path / "runs"),
        workers=0,
        device="cpu",
        wandb_mode="disabled",
        progress=False,
        max_lr=0.2,
    )


def tiny_run_flags(data, runs, *extra) -> list[str]:
    """The command-line flags of a run that takes seconds on a CPU (for ablate, the launcher)."""
    return [
        f"--data_dir={data}",
        f"--runs_dir={runs}",
        "--model=resnet9",
        "--width=0.0625",
        "--epochs=2",
        "--batch_size=20",
        "--workers=0",
        "--device=cpu",
        "--wandb_mode=disabled",
        "--no_progress",
        "--no_analysis",
        "--tta=none",
        *extra,
    ]


def scheduler_lrs(cfg: Config, steps_per_epoch: int) -> list:
    """The LR of every step of a run, from the scheduler the training loop builds."""
    import torch

    from resnetf.optim import make_optimizer, make_scheduler, total_steps

    opt = make_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = make_scheduler(opt, cfg, steps_per_epoch)
    lrs = []
    for _ in range(total_steps(cfg, steps_per_epoch)):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return lrs


def stepped_lrs(stepper, steps: int) -> list[dict]:
    """Every group's lr (`Stepper.lrs()`) before each of `steps` optimizer and schedule steps,
    taken without gradients (the optimizers skip every parameter)."""
    seen = []
    for _ in range(steps):
        seen.append(stepper.lrs())
        for o in stepper.optimizers:
            o.step()
        for s in stepper.schedulers:
            s.step()
    return seen


def run_dir_of(summary: dict) -> Path:
    return Path(summary["run_dir"])


# --- reading W&B's offline files ------------------------------------------------------------------


def read_wandb_history(run_dir: Path) -> list[dict]:
    """Every history row of the offline run under run_dir."""
    return [
        {
            (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
            for item in record.history.item
        }
        for record in read_wandb_records(run_dir, "history")
    ]


def read_wandb_summary(run_dir: Path) -> dict:
    """The run's summary as W&B holds it at the end: its summary records' updates, in order."""
    summary = {}
    for record in read_wandb_records(run_dir, "summary"):
        for item in record.summary.update:
            summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


def read_wandb_records(run_dir: Path, kind: str, timeout: float = 60) -> list:
    """The protobuf Records of one kind (history, exit, ...) of the offline run under run_dir,
    decoded from its .wandb file once W&B has closed it (it writes the file from a process of
    its own, which may lag behind run.finish() on a loaded machine)."""
    (path,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    deadline, size = time.monotonic() + timeout, -1
    while True:  # closed: the exit record is there and the file has stopped growing
        raw = path.read_bytes()
        closed = any(r.WhichOneof("record_type") == "exit" for r in _records(raw))
        if (closed and len(raw) == size) or time.monotonic() > deadline:
            break
        size = len(raw)
        time.sleep(0.5)
    return [r for r in _records(raw) if r.WhichOneof("record_type") == kind]


def _records(raw: bytes) -> list:
    """Decode a .wandb file: a LevelDB-style log (7-byte file header, 32 KiB blocks, 7-byte chunk
    headers) of protobuf Records, as W&B writes it."""
    from wandb.proto import wandb_internal_pb2 as pb

    if len(raw) < 7:  # not even the header yet
        return []
    ident, _magic, _version = struct.unpack("<4sHB", raw[:7])
    assert ident == b":W&B", "not a W&B datastore"
    block, pos, pending, rows = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, chunk_type = struct.unpack("<IHB", raw[pos : pos + 7])
        if pos + 7 + length > len(raw):  # a chunk W&B is still writing
            break
        chunk = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        # chunk types: 1 full, 2 first, 3 middle, 4 last
        pending = chunk if chunk_type in (1, 2) else pending + chunk
        if chunk_type in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            rows.append(record)
    return rows


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real one-node SLURM (munge, slurmctld, slurmd; two fake GPUs) for this session, started
    when its binaries exist (.ci/run installs them), else the test is skipped with the reason;
    stopped at the end. Clients find it through SLURM_CONF."""
    import os

    import slurm_cluster

    cluster = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        env = cluster.start()
    except slurm_cluster.Unavailable as e:
        pytest.skip(str(e))
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield cluster
    cluster.stop()
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
