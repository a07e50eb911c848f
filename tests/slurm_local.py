"""A real single-node SLURM cluster on this machine, for end-to-end tests (Debian packages, no systemd).

What it does (measured facts in ``../shared/notes/slurm-local.md``):

* installs ``slurmctld slurmd slurm-client`` with apt-get when ``sbatch`` is missing (root + network);
* writes a private ``slurm.conf`` into a fresh folder and points ``SLURM_CONF`` at it, so nothing
  in ``/etc/slurm`` is touched and a second cluster (another test run) can run beside it: free TCP
  ports, fresh StateSaveLocation, job ids starting at a time-derived ``FirstJobId`` (ids restarting at
  1 would alias an earlier run's files);
* ``AuthType=auth/none`` + ``CredType=cred/none``: no munged to start, nothing global to share;
* ``KillWait=5``, ``batch_sched_delay=0``, ``MinJobAge=3600`` (``scontrol show job`` keeps finished
  jobs, which is how job states are read without slurmdbd), ``EnforcePartLimits=ALL``, and
  ``cred_expire=10`` with 5-s scheduling passes, so that a requeued job restarts within ~15 s
  (SLURM holds a requeued job for ``cred_expire``, 120 s by default);
* starts slurmctld and slurmd, waits for the node to be ``idle`` with a deadline (``timeout`` on
  every ``sinfo``, and the daemons' pids checked, since ``sinfo`` blocks while slurmctld is dead);
* tears down: cancels the jobs, stops the daemons by pid (``kill -9`` after 10 s).

Use as a context manager, or from a shell for debugging::

    python -m tests.slurm_local up /tmp/slurm     # prints: export SLURM_CONF=...
    python -m tests.slurm_local down /tmp/slurm
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client")
PARTITION = "debug"


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or started here; the message says why."""


def _run(args: list[str], timeout: float = 30, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, env=env)


def ensure_installed() -> None:
    """Install the Debian packages when ``sbatch`` or the daemons are missing (needs root and network)."""
    if all(shutil.which(p) or Path("/usr/sbin", p).exists() for p in ("sbatch", "slurmctld", "slurmd")):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("SLURM is not installed and installing it needs root (apt-get)")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable("SLURM is not installed and this machine has no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    steps = (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES])
    for step in steps:
        try:
            result = _run(step, timeout=600, env=env)
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"{' '.join(step)} timed out after 600 s") from None
        if result.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(step)} failed (exit {result.returncode}): {result.stderr[-800:]}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 4000


class LocalSlurm:
    """One private single-node cluster rooted at ``root``; ``env`` holds ``SLURM_CONF`` for clients."""

    def __init__(self, root: str | os.PathLike, cpus: int | None = None) -> None:
        self.root = Path(root).resolve()
        self.cpus = cpus or max(2, os.cpu_count() or 2)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "etc" / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self._pid_files = {name: self.root / "state" / f"{name}.pid" for name in ("slurmd", "slurmctld")}

    # --- configuration ------------------------------------------------------------------------

    def write_config(self) -> None:
        for sub in ("etc", "state/ctld", "state/d", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        memory = max(1000, int(_memory_mb() * 0.8))
        first_job_id = 1000 + int(time.time()) % 50_000_000  # unique ids across runs on one machine
        lines = [
            "ClusterName=dicephi",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/none",
            "CredType=cred/none",
            f"StateSaveLocation={self.root}/state/ctld",
            f"SlurmdSpoolDir={self.root}/state/d",
            f"SlurmctldPidFile={self._pid_files['slurmctld']}",
            f"SlurmdPidFile={self._pid_files['slurmd']}",
            f"SlurmctldLogFile={self.root}/log/slurmctld.log",
            f"SlurmdLogFile={self.root}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=1000",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            # no delay before batch jobs start; scheduling passes every 5 s (defaults 60 and 30 s), so that a
            # job whose dependency or begin time has passed starts within seconds
            "SchedulerParameters=batch_sched_delay=0,sched_interval=5,bf_interval=5",
            "MpiDefault=none",
            "EnforcePartLimits=ALL",
            "MinJobAge=3600",
            "KillWait=5",
            # a requeued job may start again after cred_expire seconds (default 120): the requeue tests wait for it
            "AuthInfo=cred_expire=10",
            f"FirstJobId={first_job_id}",
            "SlurmdParameters=config_overrides",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        # slurmd loads a cgroup plugin even with proctrack/linuxproc; without systemd it must not ask dbus
        (self.conf.parent / "cgroup.conf").write_text("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n", encoding="utf-8")

    # --- daemons ------------------------------------------------------------------------------

    def _pid(self, name: str) -> int | None:
        try:
            pid = int(self._pid_files[name].read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    def _logs(self) -> str:
        text = []
        for name in ("slurmctld", "slurmd"):
            path = self.root / "log" / f"{name}.log"
            if path.exists():
                text.append(f"--- {path} ---\n" + "".join(path.read_text(errors="replace").splitlines(True)[-30:]))
        return "\n".join(text)

    def start(self, deadline_s: float = 60) -> None:
        """Write the configuration, start both daemons and wait until the node is idle."""
        ensure_installed()
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmd needs root")
        self.write_config()
        for daemon in ("slurmctld", "slurmd"):
            args = [f"/usr/sbin/{daemon}"] + (["-N", self.node] if daemon == "slurmd" else ["-i"])
            result = _run(args, env=self.env)
            if result.returncode != 0:
                self.stop()
                raise SlurmUnavailable(f"{daemon} did not start: {result.stderr[-800:]}\n{self._logs()}")
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self._pid("slurmctld") is None and time.monotonic() > deadline - deadline_s + 3:
                self.stop()
                raise SlurmUnavailable("slurmctld died while starting\n" + self._logs())
            try:
                state = _run(["sinfo", "-h", "-o", "%T"], timeout=5, env=self.env).stdout.split()
            except subprocess.TimeoutExpired:
                state = []
            if "idle" in state:
                return
            time.sleep(0.25)
        self.stop()
        raise SlurmUnavailable(f"the node was not idle after {deadline_s:.0f} s\n{self._logs()}")

    def stop(self) -> None:
        """Cancel every job of this cluster, then stop the daemons (SIGTERM, SIGKILL after 10 s)."""
        if self._pid("slurmctld") is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                _run(["scancel", "--full", "--user", "root"], timeout=10, env=self.env)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    if not _run(["squeue", "-h", "-o", "%i"], timeout=5, env=self.env).stdout.strip():
                        break
                    time.sleep(0.5)
        for name in ("slurmd", "slurmctld"):
            pid = self._pid(name)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self._pid(name) is not None:
                time.sleep(0.2)
            if self._pid(name) is not None:  # slurmd ignores SIGTERM while it retries a dead controller
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> LocalSlurm:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: python -m tests.slurm_local up|down ROOT", file=sys.stderr)
        return 2
    cluster = LocalSlurm(argv[1])
    if argv[0] == "up":
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
