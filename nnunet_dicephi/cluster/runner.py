"""The jobs that earlier releases pickled (``TrainJob``, ``StageJob``), for SLURM jobs still queued.

A job submitted before :class:`~.process.TaskRun` existed unpickles into one of these on its node
and runs as the task it describes; a requeue pickles the TaskRun.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .process import TaskRun
from .tasks import Task, TaskId


@dataclass(frozen=True)
class TrainJob:
    key: str
    argv: tuple[str, ...]
    fold_dir: str

    def run(self) -> TaskRun:
        return TaskRun(Task(TaskId(*self.key.split("/", 1)), (self.argv,), fold_dir=Path(self.fold_dir)))

    def __call__(self) -> str:
        return self.run()()

    def checkpoint(self, *args: object, **kwargs: object):
        return self.run().checkpoint()


@dataclass(frozen=True)
class StageJob:
    key: str
    commands: tuple[tuple[str, ...], ...]
    marker: str | None = None

    def run(self) -> TaskRun:
        marker = Path(self.marker) if self.marker is not None else None
        return TaskRun(Task(TaskId(*self.key.split("/", 1)), self.commands, marker=marker))

    __call__ = TrainJob.__call__
    checkpoint = TrainJob.checkpoint
