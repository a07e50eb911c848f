"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    The temporary name is unique across hosts and processes (:func:`_unique_name`), so writers on
    several nodes of a shared file system never write into one file. The file gets the permissions a
    newly created file gets (``0o666`` less the umask), and its data reaches the disk before the
    rename, so that a crash leaves the old content or the new, never an empty file.
    """
    path = os.fspath(path)
    tmp = _unique_name(f"{path}.tmp-")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _unique_name(prefix: str) -> str:
    """``<prefix><pid>@<host>.<random>``: no other process, here or on another host, draws it.

    The pid and host say who left a file or folder behind; the random part keeps apart processes
    with equal pids on one host name (containers, nodes of a shared file system). The caller creates
    it exclusively (``O_EXCL``, ``os.mkdir``), with a mode of its own choosing under the umask, where
    :mod:`tempfile` would make it private to its owner (0o600, 0o700).
    """
    return f"{prefix}{os.getpid()}@{socket.gethostname()}.{secrets.token_hex(8)}"


def replace_folder(staging: str | os.PathLike, output: str | os.PathLike) -> None:
    """Move the finished folder ``staging`` to ``output``, which must be a sibling.

    An existing ``output`` is first moved aside and deleted only once the new folder is in place, so
    a failure leaves either the old folder or the new one, never a mixture. Callers decide whether
    an existing ``output`` may be replaced at all.
    """
    output = os.path.abspath(output)
    old = None
    if os.path.isdir(output):
        if os.listdir(output):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.old-", dir=os.path.dirname(output))
            os.replace(output, old)  # onto the fresh empty folder
        else:
            os.rmdir(output)
    try:
        os.replace(staging, output)
    except OSError:
        if old is not None:
            os.replace(old, output)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staging_folder(target: str | os.PathLike) -> Path:
    """A new, empty, hidden folder beside ``target`` to build it in before renaming it into place.

    Its name records the process that made it: ``.<name>.staging-<pid>@<host>.<random>``, and it has
    the permissions of a folder made with ``mkdir`` (``0o777`` less the umask), which the published
    folder keeps: not the private ``0o700`` of :func:`tempfile.mkdtemp`. Such a
    folder left behind by a killed run (same host, process gone) is removed here first, so that
    interrupted runs do not pile up hidden copies of a dataset; folders of running processes, of other
    hosts (a shared file system) or of any other name are left alone.
    """
    target = Path(target)
    prefix, host = f".{target.name}.staging-", socket.gethostname()
    if target.parent.is_dir():
        for folder in target.parent.iterdir():
            owner = folder.name.startswith(prefix) and re.fullmatch(r"(\d+)@(.+)\.[^.]+", folder.name[len(prefix) :])
            if owner and owner[2] == host and not _running(int(owner[1])) and folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
    staging = Path(_unique_name(str(target.parent / prefix)))
    staging.mkdir(0o777)
    return staging


def _running(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end the process there; keep every folder
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def output_folder_problem(
    output: str | os.PathLike, *, force: bool, marker: str, command: str, parent_must_exist: bool = False
) -> str | None:
    """Why ``command`` may not write its output folder ``output``, or None when it may.

    A missing or empty folder is fine; a folder with content needs ``--force``, and ``--force``
    replaces only an earlier output of the same command (recognised by the file ``marker`` in it),
    never a folder of something else given by mistake.
    """
    output = Path(output).absolute()
    if output.exists() and not output.is_dir():
        return f"output {output} exists and is not a folder; choose another -o/--output"
    if output.is_dir() and any(output.iterdir()):
        if not force:
            return f"output folder {output} exists and is not empty; pass --force to replace it"
        if not (output / marker).is_file():
            return (
                f"output folder {output} holds no {marker}, so it is not an earlier output of {command}; "
                "--force only replaces those: choose another -o/--output"
            )
    if parent_must_exist and not output.parent.is_dir():
        return f"the parent folder of {output} does not exist"
    return None
