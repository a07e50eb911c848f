"""What runs inside a SLURM job: picklable callables that submitit executes on the compute node.

Each job runs argv lists (never through a shell) as child processes of submitit's Python process.
Both callables are *checkpointable* in submitit's sense: shortly before the time limit SLURM sends
``SIGUSR2`` (``#SBATCH --signal=USR2@<signal_delay_s>``); submitit calls :meth:`checkpoint`, which
stops the running command and returns the job to run next, and requeues the job with
``scontrol requeue``. A preempted job (SIGTERM, then requeue by SLURM) re-runs its callable too.

A training job decides fresh or ``--c`` each time it starts, from the fold folder: a requeued or
preempted job therefore resumes from ``checkpoint_latest.pth``, and the trainer reuses the ε
recorded in ``dicephi_loss.json`` (see :meth:`nnunet_dicephi.trainers.base.DicePhiTrainer.resolved_eps`).
"""

from __future__ import annotations

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

from nnunet_dicephi._files import write_text_atomically

from .jobs import CHECKPOINTS, FoldState, fold_state, with_resume

STOP_GRACE_S = 60
_POLL_S = 0.5

# the command running right now; a module global, not an attribute, because the callable is
# pickled again when it is checkpointed and a Popen object cannot be pickled
_CHILD: subprocess.Popen | None = None


class CommandFailed(RuntimeError):
    """A command of the job exited with a non-zero status."""


def say(message: str) -> None:
    """One line on the job's stdout log, marked as ours."""
    print(f"[nnunet-dicephi] {message}", flush=True)


def executable(name: str) -> str:
    """A console script beside this interpreter (the job's virtual environment), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name) or name


def _ignore_usr2() -> None:  # pragma: no cover - runs in the child between fork and exec
    # SLURM signals every process of the job step; SIGUSR2 would kill nnU-Net outright (its default
    # action) before submitit could checkpoint. SIG_IGN survives exec and is inherited by
    # nnU-Net's data-augmentation workers.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def run_command(argv: tuple[str, ...] | list[str]) -> None:
    """Run one command to its end, output to the job's logs; raise :class:`CommandFailed` on failure.

    The child runs in its own session so that :func:`stop_child` can stop it with all its
    workers. The wait is a poll loop, not ``Popen.wait()``: submitit's signal handler runs in this
    thread and may call :func:`stop_child`, which must not block on ``wait``'s lock.
    """
    global _CHILD
    argv = [executable(argv[0]), *argv[1:]]
    say("$ " + shlex.join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    _CHILD = subprocess.Popen(argv, start_new_session=True, preexec_fn=_ignore_usr2)
    try:
        while (code := _CHILD.poll()) is None:
            time.sleep(_POLL_S)
    finally:
        _CHILD = None
    minutes = (time.monotonic() - started) / 60
    if code != 0:
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        raise CommandFailed(f"{Path(argv[0]).name} failed with {how} after {minutes:.1f} min: {shlex.join(argv)}")
    say(f"finished in {minutes:.1f} min")


def stop_child(grace_s: float = STOP_GRACE_S) -> None:
    """Stop the running command and its workers: SIGTERM, SIGKILL after ``grace_s`` seconds."""
    child = _CHILD
    if child is None or child.poll() is not None:
        return
    say(f"stopping {Path(str(child.args[0])).name} (pid {child.pid})")
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if child.poll() is not None:
                return
            time.sleep(0.1)


def _delayed(function: object):
    from submitit.helpers import DelayedSubmission

    return DelayedSubmission(function)


@dataclass(frozen=True)
class StageJob:
    """Preprocessing, prediction or report: commands in order, then a marker file on success."""

    key: str
    commands: tuple[tuple[str, ...], ...]
    marker: str | None = None

    def __call__(self) -> str:
        say(f"{self.key}: {len(self.commands)} command(s)")
        for argv in self.commands:
            run_command(argv)
        if self.marker is not None:
            Path(self.marker).parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(self.marker, "\n".join(shlex.join(c) for c in self.commands) + "\n")
        return f"{self.key}: done"

    def checkpoint(self, *args: object, **kwargs: object):
        """Time limit or preemption: stop, and run the whole stage again after the requeue."""
        say(f"{self.key}: interrupted (time limit or preemption); requeued to run again")
        stop_child()
        return _delayed(self)


def usable_checkpoint(path: Path) -> bool:
    """Whether a torch checkpoint file is complete (torch saves zip archives; a kill mid-write breaks them)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return False


@dataclass(frozen=True)
class TrainJob:
    """One training fold: ``nnUNetv2_train`` fresh, with ``--c`` when the fold has a checkpoint, or nothing.

    ``argv`` may carry ``--c`` or not: :meth:`command` decides it from the fold folder.
    """

    key: str
    argv: tuple[str, ...]
    fold_dir: str

    def command(self) -> tuple[str, ...] | None:
        """What to run now, judged from the fold folder; None when the fold is already done."""
        fold_dir = Path(self.fold_dir)
        for name in ("checkpoint_latest.pth", "checkpoint_final.pth"):
            path = fold_dir / name
            if path.is_file() and not usable_checkpoint(path):
                # written while the job was killed: --c would crash on it; nnU-Net then falls back to
                # the other checkpoints, or starts afresh
                say(f"{path} is incomplete; moved aside to {path.name}.broken")
                os.replace(path, path.with_name(path.name + ".broken"))
        state = fold_state(fold_dir)
        if state is FoldState.DONE:
            return None
        if state is FoldState.INTERRUPTED:
            found = next(n for n in CHECKPOINTS if (fold_dir / n).is_file())
            say(f"{self.key}: resuming from {found} with --c")
            return with_resume(self.argv, resume=True)
        say(f"{self.key}: starting fresh")
        return with_resume(self.argv, resume=False)

    def __call__(self) -> str:
        restarts = os.environ.get("SLURM_RESTART_COUNT")
        if restarts:
            say(f"{self.key}: run after {restarts} requeue(s)")
        argv = self.command()
        if argv is None:
            say(f"{self.key}: already finished; nothing to do")
            return f"{self.key}: already finished"
        run_command(argv)
        return f"{self.key}: done"

    def checkpoint(self, *args: object, **kwargs: object):
        """Time limit or preemption: stop training; the requeued job resumes from the latest checkpoint."""
        say(f"{self.key}: interrupted (time limit or preemption); requeued to resume with --c")
        stop_child()
        return _delayed(self)
