"""The experiment's state file: which SLURM job ran which key, submission after submission.

``<experiment output>/cluster_state.json`` lists every submission (time, submitit folder, key →
job id). The latest submission of a key wins. It is rewritten atomically after each job group is
submitted, so an interrupted ``submit`` still records what it did submit; ``submit`` holds a lock
file while it reads, submits and writes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nnunet_dicephi._files import write_text_atomically

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


def load_state(path: str | os.PathLike, experiment: str) -> dict:
    """The state file's content, or an empty state when there is none yet."""
    path = Path(path)
    if not path.is_file():
        return empty_state(experiment)
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("version") != VERSION or not isinstance(state.get("submissions"), list):
        raise ValueError(f"{path}: not a state file of this version of nnunet-dicephi")
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


@contextlib.contextmanager
def locked(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``folder/.submit.lock`` (one ``submit`` at a time per experiment)."""
    import fcntl

    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / ".submit.lock", "w", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another submit of this experiment is running (lock {handle.name})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
