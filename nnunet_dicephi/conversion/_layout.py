"""Checking a download's layout: folders and files that must be there, collected into one error."""

from __future__ import annotations

from pathlib import Path

from nnunet_dicephi._problems import Problems
from nnunet_dicephi.conversion._model import ConversionError


def visible_dirs(folder: Path) -> list[Path]:
    """Sub-folders, sorted, without hidden ones and macOS archive debris (``__MACOSX``)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def require_dir(folder: Path, problems: list[str], what: str = "folder") -> bool:
    if folder.is_dir():
        return True
    problems.append(f"missing {what} {folder}" + (" (it is a file)" if folder.exists() else ""))
    return False


def require_file(path: Path, problems: list[str]) -> bool:
    if path.is_file():
        return True
    problems.append(f"missing file {path}" + (" (it is a folder)" if path.exists() else ""))
    return False


def layout_problems(what: str) -> Problems:
    """Problems found while checking a download's layout, raised together as a ConversionError."""
    return Problems(what, ConversionError)
