"""The experiment's state file: which SLURM job ran which key, submission after submission.

``<experiment output>/cluster_state.json`` lists every submission (time, submitit folder, key →
job id). The latest submission of a key wins. It is rewritten atomically after each job group is
submitted, so an interrupted ``submit`` still records what it did submit; ``submit`` holds the
experiment's lock (:mod:`.lock`) while it reads, submits and writes.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nnunet_dicephi._files import write_text_atomically
from nnunet_dicephi._problems import InputError

if TYPE_CHECKING:
    from .experiment import ExperimentSpec

VERSION = 1


@dataclass(frozen=True)
class JobRecord:
    """The latest job of one key."""

    key: str
    job_id: str
    folder: str
    submitted: str


def empty_state(experiment: str) -> dict:
    return {"version": VERSION, "experiment": experiment, "submissions": []}


def read_record(path: str | os.PathLike, version: int, what: str, remedy: str) -> dict | None:
    """The content of the JSON record ``path`` (None when there is none), checked to be of ``version``.

    Raises:
        InputError: the file is unreadable (e.g. cut short by a full disk) or of another version;
            the message names it, ``what`` it is and the ``remedy``.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {what} {path} ({error}); {remedy}") from None
    if not isinstance(record, dict) or record.get("version") != version:
        raise InputError(f"{what} {path} is of another version of nnunet-dicephi; {remedy}")
    return record


_WHAT = "the record of the jobs submitted to SLURM"
_REMEDY = (
    "once no job of this experiment is queued or running (submit would submit those again), remove it to start "
    "that record afresh"
)


def load_state(path: str | os.PathLike, experiment: str) -> dict:
    """The state file's content, or an empty state when there is none yet.

    Raises:
        InputError: the file is unreadable, of another version, or holds no list of submissions.
    """
    state = read_record(path, VERSION, _WHAT, _REMEDY)
    if state is None:
        return empty_state(experiment)
    if not isinstance(state.get("submissions"), list):
        raise InputError(f"{_WHAT} {path} holds no list of submissions; {_REMEDY}")
    return state


def save_state(path: str | os.PathLike, state: dict) -> None:
    """Write the state atomically (a reader never sees half a file)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(state, indent=2, sort_keys=True) + "\n")


def new_submission(state: dict, folder: str | os.PathLike) -> dict:
    """Append an empty submission record and return it (fill its ``jobs`` as groups are submitted)."""
    submission = {
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "folder": str(folder),
        "jobs": {},
    }
    state["submissions"].append(submission)
    return submission


def latest_jobs(state: dict) -> dict[str, JobRecord]:
    """Key → its most recent job record."""
    out = {}
    for submission in state["submissions"]:
        for key, job_id in submission["jobs"].items():
            out[key] = JobRecord(key, str(job_id), submission["folder"], submission["time"])
    return out


def active_jobs(spec: ExperimentSpec, queue: Collection[str] | None = None) -> dict[str, str]:
    """Key → job id of this experiment's recorded jobs that SLURM still queues or runs.

    ``queue`` holds the ids that SLURM queues; without it ``squeue`` is asked, only when jobs were
    recorded.

    Raises:
        slurm.SubmissionError: the scheduler cannot be asked.
    """
    records = latest_jobs(load_state(spec.state_file, spec.name))
    if records and queue is None:
        from . import slurm

        queue = slurm.queued_jobs()
    return {key: r.job_id for key, r in records.items() if r.job_id in (queue or ())}
