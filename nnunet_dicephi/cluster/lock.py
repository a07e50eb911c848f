"""One lock per experiment folder, taken by ``run`` and by ``submit`` (one of them at a time), and its records.

The lock is an ``flock`` on ``<output>/.experiment.lock``: the kernel releases it when its holder ends
in any way, ``kill -9`` included. The holder writes its verb and pid into the file, for the refusal of
the next one, and removes the file when it lets go; a verb that locked a file removed meanwhile takes
the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nnunet_dicephi._files import write_text_atomically
from nnunet_dicephi._problems import InputError

LOCK_FILE = ".experiment.lock"


class ExperimentBusy(InputError):
    """Another ``run`` or ``submit`` holds the experiment, or processes of an earlier run still train."""


@contextlib.contextmanager
def experiment_lock(folder: str | os.PathLike, verb: str) -> Iterator[None]:
    """Hold the lock of the experiment whose output folder is ``folder``, as ``verb``; ExperimentBusy if held."""
    import fcntl

    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+", encoding="utf-8")  # held open for as long as the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "run or submit"
            handle.close()
            raise ExperimentBusy(
                f"another nnunet-dicephi {holder} of this experiment holds {path}; wait for it to end or stop it, "
                "then try again"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.stat(path), os.fstat(handle.fileno())):
                break
        handle.close()  # its holder removed the file between our open and our lock: lock the new one
    try:
        handle.truncate(0)
        handle.write(f"{verb} (pid {os.getpid()})\n")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before the lock goes, so that no one locks a file about to vanish
        handle.close()


def read_record(path: str | os.PathLike, version: int, what: str, remedy: str) -> dict | None:
    """The JSON record ``path`` (None when there is none); InputError naming ``what`` and ``remedy`` if unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    record = read_json(path, lambda error: InputError(f"cannot read {what} {path} ({error}); {remedy}"))
    if not isinstance(record, dict) or record.get("version") != version:
        raise InputError(f"{what} {path} is of another version of nnunet-dicephi; {remedy}")
    return record


def read_json(path: Path, refusal: Callable[[Exception], Exception]) -> Any:
    """The JSON in ``path``; ``refusal(error)`` is raised when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise refusal(error) from None


def write_record(path: str | os.PathLike, record: dict) -> None:
    """Write a JSON record atomically (a reader never sees half a file)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
