"""The target folder ``$nnUNet_raw/Dataset<ID>_<Name>``: its name, id collisions, ``--force``, the final rename."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from nnunet_dicephi.conversion._model import DATASET_FOLDER, ConversionError, fail

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def raw_root() -> Path:
    """``$nnUNet_raw``; a :class:`ConversionError` when it is not set."""
    value = os.environ.get("nnUNet_raw", "").strip().strip('"')
    if not value:
        raise ConversionError(
            "nnUNet_raw is not set: export nnUNet_raw=/path/to/nnUNet_raw (the folder that holds nnU-Net's raw "
            "datasets; see nnU-Net's documentation/set_environment_variables.md)"
        )
    return Path(value).expanduser()


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset<ID>_<Name>`` after checking both; the name cannot lead outside nnUNet_raw."""
    problems = []
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, (int, np.integer)) or not 1 <= dataset_id <= 999:
        problems.append(f"dataset id must be an integer from 1 to 999 (nnU-Net's three digits); got {dataset_id!r}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        why = []
        if isinstance(name, str):
            if "/" in name or "\\" in name or ".." in name:
                why.append("path separators and '..' are not allowed")
            if any(c.isspace() for c in name):
                why.append("spaces are not allowed")
            if len(name) > 64:
                why.append("at most 64 characters")
        problems.append(
            f"dataset name {name!r} is not allowed"
            + (f" ({'; '.join(why)})" if why else "")
            + ": use letters, digits, '_' and '-' only, starting with a letter or digit, e.g. BraTS2018"
        )
    if problems:
        raise fail("invalid dataset", problems)
    return f"Dataset{int(dataset_id):03d}_{name}"


def _existing_datasets(root: Path, dataset_id: int) -> list[str]:
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = DATASET_FOLDER.fullmatch(entry.name)
        if match and int(match[1]) == dataset_id and entry.is_dir():
            found.append(entry.name)
    return sorted(found)


def prepare_target(dataset_id: int, name: str, force: bool) -> Path:
    """The target folder, after refusing collisions; it is not created (the staging folder is renamed)."""
    folder_name = dataset_folder_name(dataset_id, name)
    root = raw_root()
    target = root / folder_name
    problems = []
    # nnU-Net resolves an id to one name across its three folders and fails on two; refuse early
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        value = os.environ.get(variable, "").strip().strip('"')
        if not value:
            continue
        for other in _existing_datasets(Path(value).expanduser(), int(dataset_id)):
            if other != folder_name:
                problems.append(
                    f"dataset id {int(dataset_id)} is taken by {Path(value) / other} ({variable}); pick another "
                    "id with -d, or remove that folder"
                )
    if target.exists() and not force:
        problems.append(f"{target} exists; pass --force (force=True) to replace it, or pick another id or name")
    if problems:
        raise fail(f"cannot write {folder_name}", problems)
    return target


def move_into_place(staging: Path, target: Path, force: bool) -> None:
    from nnunet_dicephi._files import replace_folder

    if target.exists() and not force:  # created by someone else while this conversion ran
        raise ConversionError(f"{target} appeared while converting; pass --force to replace it")
    replace_folder(staging, target)
