"""A real one-node SLURM for the tests: munge, slurmctld and slurmd started by hand (no systemd),
their config in a temporary folder with this machine's hostname and two fake GPUs (gres on two
tty devices), nothing listening beyond 127.0.0.1. `start(folder)` returns the environment a
client needs (SLURM_CONF) or raises Unavailable with the reason; `stop()` ends what it started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")


class Unavailable(RuntimeError):
    """SLURM cannot run here (binaries missing, not root, a daemon that does not come up)."""


def free_ports(n: int) -> list[int]:
    """Ports nothing listens on now: two suites at once each get a cluster of their own."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def config(folder: Path, host: str, ports: list[int]) -> str:
    return "\n".join(
        [
            "ClusterName=resnetf-test",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=4000 Gres=gpu:2 State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "GresTypes=gpu",
            "MpiDefault=none",
            "ReturnToService=2",
            "SlurmctldParameters=preempt_send_user_signal",
            f"SlurmctldPort={ports[0]}",
            f"SlurmdPort={ports[1]}",
            f"StateSaveLocation={folder}/state",
            f"SlurmdSpoolDir={folder}/spool",
            f"SlurmctldPidFile={folder}/slurmctld.pid",
            f"SlurmdPidFile={folder}/slurmd.pid",
            f"SlurmctldLogFile={folder}/slurmctld.log",
            f"SlurmdLogFile={folder}/slurmd.log",
            "",
        ]
    )


class Cluster:
    def __init__(self, folder: Path):
        self.folder, self.processes = Path(folder), []
        self.env = {"SLURM_CONF": str(self.folder / "slurm.conf")}

    def start(self) -> dict:
        missing = [b for b in BINARIES if shutil.which(b) is None]
        if missing:
            raise Unavailable(f"no SLURM here (missing {', '.join(missing)})")
        if os.geteuid() != 0:
            raise Unavailable("the test SLURM runs its daemons as root")
        host = socket.gethostname()
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "slurm.conf").write_text(config(self.folder, host, free_ports(2)))
        (self.folder / "gres.conf").write_text(f"NodeName={host} Name=gpu File=/dev/tty[0-1]\n")
        self._munge()
        env = {**os.environ, **self.env}
        for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            log = open(self.folder / f"{daemon[0]}.out", "w")  # noqa: SIM115
            self.processes.append(
                subprocess.Popen(daemon, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        self._wait_idle(host, env)
        return self.env

    def _munge(self) -> None:
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
            return  # one already runs: the daemons share it
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(run_dir, "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
            shutil.chown("/etc/munge/munge.key", "munge", "munge")
        started = subprocess.run(
            ["runuser", "-u", "munge", "--", "munged"], capture_output=True, text=True
        )
        if started.returncode != 0:
            raise Unavailable(f"munged did not start: {started.stderr.strip()}")

    def _wait_idle(self, host: str, env: dict, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-n", host, "-o", "%t"], env=env, capture_output=True, text=True
            )
            if out.stdout.strip() == "idle":
                return
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(0.5)
        logs = "; ".join(
            f"{p.name}: {p.read_text()[-300:]}" for p in sorted(self.folder.glob("*.log"))
        )
        self.stop()
        raise Unavailable(f"the SLURM node did not become idle in {timeout:.0f} s ({logs})")

    def stop(self) -> None:
        env = {**os.environ, **self.env}
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.processes = []
