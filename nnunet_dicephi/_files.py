"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def replace_folder(staging: str | os.PathLike, output: str | os.PathLike) -> None:
    """Move the finished folder ``staging`` to ``output``, which must be a sibling.

    An existing ``output`` is first moved aside and deleted only once the new folder is in place, so
    a failure leaves either the old folder or the new one, never a mixture. Callers decide whether
    an existing ``output`` may be replaced at all.
    """
    import shutil
    import tempfile

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
