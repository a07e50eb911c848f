"""Running a task, the same for every executor: what it runs now, its processes, its marker.

:class:`TaskRun` is the callable that submitit pickles and runs on a compute node, and what the local
executor asks what to run; a training task decides fresh or ``--c`` each time it starts, from its fold
folder. Under SLURM it is *checkpointable* in submitit's sense: before the time limit SLURM sends
``SIGUSR2`` and submitit calls :meth:`TaskRun.checkpoint`, which stops the command and requeues the job.
Each command runs in a session of its own (argv, never a shell), so that :func:`stop` ends it with
every worker it started.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from nnunet_dicephi._files import _running, write_text_atomically

from .tasks import CHECKPOINTS, FoldState, Task, fold_state, resumed

STOP_GRACE_S = 60
_POLL_S = 0.5

# the command a SLURM job runs right now; a module global, not an attribute, because the callable is
# pickled again when it is checkpointed and a Popen object cannot be pickled
_CHILD: subprocess.Popen | None = None


class CommandFailed(RuntimeError):
    """A command of the task exited with a non-zero status."""


def say(message: str) -> None:
    """One line on the task's log, marked as ours."""
    print(f"[nnunet-dicephi] {message}", flush=True)


def executable(name: str) -> str:
    """A console script beside this interpreter (a virtual environment's), else from PATH (FileNotFoundError)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} or on PATH: is nnunetv2 installed here?")
    return found


def _ignore_usr2() -> None:  # pragma: no cover - runs in the child between fork and exec
    # SLURM signals every process of the job step; SIGUSR2 would kill nnU-Net outright (its default
    # action) before submitit could checkpoint. SIG_IGN survives exec and is inherited by
    # nnU-Net's data-augmentation workers.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def start(argv, *, log=None, env=None, under_slurm: bool = False) -> subprocess.Popen:
    """Start one command (its program found already) in a session of its own, output to ``log`` or ours."""
    return subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        env=env,
        start_new_session=True,
        preexec_fn=_ignore_usr2 if under_slurm else None,
    )


def ended(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit status {code}"


def stop(processes: list[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """Stop commands and their workers: SIGTERM to their groups at once, SIGKILL after ``grace_s`` seconds."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
        deadline = time.monotonic() + wait_s
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            time.sleep(0.1)


def run_command(argv) -> None:
    """Run one command to its end (a SLURM job's), output to the job's logs; CommandFailed if it fails.

    The wait is a poll loop, not ``Popen.wait()``: submitit's signal handler runs in this thread and
    may stop the command (:meth:`TaskRun.checkpoint`), which must not block on ``wait``'s lock.
    """
    global _CHILD
    argv = [executable(argv[0]), *argv[1:]]
    say("$ " + shlex.join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    _CHILD = start(argv, under_slurm=True)
    try:
        while (code := _CHILD.poll()) is None:
            time.sleep(_POLL_S)
    finally:
        _CHILD = None
    minutes = (time.monotonic() - started) / 60
    if code != 0:
        raise CommandFailed(
            f"{Path(argv[0]).name} failed with {ended(code)} after {minutes:.1f} min: {shlex.join(argv)}"
        )
    say(f"finished in {minutes:.1f} min")


@dataclass(frozen=True)
class TaskRun:
    """One task as it runs: on a SLURM node (called by submitit), or asked by the local executor."""

    task: Task

    @property
    def key(self) -> str:
        return str(self.task.id)

    def commands(self) -> list[tuple[str, ...]]:
        """What to run now; a training fold is judged from its folder (fresh, ``--c``, or nothing when done)."""
        fold_dir = self.task.fold_dir
        if fold_dir is None:
            say(f"{self.key}: {len(self.task.commands)} command(s)")
            return list(self.task.commands)
        for path in (fold_dir / "checkpoint_latest.pth", fold_dir / "checkpoint_final.pth"):
            try:  # torch saves zip archives; one written while the job was killed would crash --c
                with zipfile.ZipFile(path) as archive:
                    whole = archive.testzip() is None
            except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
                whole = not path.is_file()
            if not whole:  # nnU-Net then falls back to the other checkpoints, or starts afresh
                say(f"{path} is incomplete; moved aside to {path.name}.broken")
                os.replace(path, path.with_name(path.name + ".broken"))
        state = fold_state(fold_dir)
        if state is FoldState.DONE:
            say(f"{self.key}: already finished; nothing to do")
            return []
        if state is FoldState.INTERRUPTED:
            found = next(n for n in CHECKPOINTS if (fold_dir / n).is_file())
            say(f"{self.key}: resuming from {found} with --c")
        else:
            say(f"{self.key}: starting fresh")
        return [resumed(c, resume=state is FoldState.INTERRUPTED) for c in self.task.commands]

    def succeeded(self) -> None:
        """Every command succeeded: write the marker (all but training)."""
        if self.task.marker is not None:
            self.task.marker.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(self.task.marker, "\n".join(shlex.join(c) for c in self.task.commands) + "\n")

    def __call__(self) -> str:
        restarts = os.environ.get("SLURM_RESTART_COUNT")
        if restarts:
            say(f"{self.key}: run after {restarts} requeue(s)")
        commands = self.commands()
        if not commands and self.task.fold_dir is not None:
            return f"{self.key}: already finished"
        for argv in commands:
            run_command(argv)
        self.succeeded()
        return f"{self.key}: done"

    def checkpoint(self, *args: object, **kwargs: object):
        """Time limit or preemption: stop the command; the requeued job resumes (training) or runs again."""
        again = "resume with --c" if self.task.fold_dir is not None else "run again"
        say(f"{self.key}: interrupted (time limit or preemption); requeued to {again}")
        child = _CHILD
        if child is not None and child.poll() is None:
            say(f"stopping {Path(str(child.args[0])).name} (pid {child.pid})")
            stop([child])
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def alive(pid: object) -> bool:
    """Whether ``pid`` (as read from a record) is a running process."""
    return isinstance(pid, int) and pid > 0 and _running(pid)


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log (empty when there is none)."""
    if not path.is_file():
        return ""
    with path.open("rb") as log:
        log.seek(max(0, log.seek(0, os.SEEK_END) - 64 * 1024))
        text = log.read().decode("utf-8", errors="replace")
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])
