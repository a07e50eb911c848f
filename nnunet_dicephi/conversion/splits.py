"""Cross-validation splits that keep a patient's cases together, and installing them for nnU-Net.

nnU-Net's default split draws *cases* at random. When one patient gives several cases (ACDC: the
end-diastolic and end-systolic frame), the same heart then lands in training and validation of
one fold, and validation scores are optimistic. :func:`grouped_splits` assigns whole groups
(patients) to folds instead; any converter can use it with its own group key per case.

Where the split lives. nnU-Net reads ``$nnUNet_preprocessed/Dataset<ID>_<Name>/splits_final.json``.
The converters never write outside ``nnUNet_raw``, so they put the split beside ``dataset.json``;
``nnUNetv2_plan_and_preprocess`` (nnU-Net ≥ 2.3.1) copies a raw ``splits_final.json`` into the
preprocessed folder when that has none. :func:`install_splits` (``nnunet-dicephi convert
install-splits ID``) is the explicit step after planning: it copies the file when nnU-Net did not,
confirms it when the same split is already there, and refuses to replace a *different* split — one
nnU-Net drew at random when training started before the split was in place — unless forced, since
folds trained on the old split are then not comparable with folds trained on the new one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nnunet_dicephi._files import write_text_atomically
from nnunet_dicephi.conversion._model import SPLITS_FILE, ConversionError, fail
from nnunet_dicephi.conversion._target import raw_root

DEFAULT_SEED = 12345
"""nnU-Net's own seed for its random 5-fold split."""


def grouped_splits(groups: Mapping[str, str], n_folds: int = 5, seed: int = DEFAULT_SEED) -> list[dict[str, list[str]]]:
    """A k-fold split of cases in which the cases of one group always share a fold.

    Groups are shuffled with ``seed`` and dealt to the folds in turn, so fold sizes differ by at
    most one group; every case is validated in exactly one fold.

    Args:
        groups: case id → group key (e.g. ``{"patient001_ED": "patient001", "patient001_ES": "patient001"}``).
        n_folds: number of folds (nnU-Net trains folds 0–4 by default).
        seed: seed of the shuffle; the same inputs always give the same split.

    Returns:
        nnU-Net's ``splits_final.json`` contents: one ``{"train": [...], "val": [...]}`` per fold,
        case ids sorted.

    Raises:
        ConversionError: fewer groups than folds, or fewer than two folds.

    Example:
        >>> grouped_splits({"p1_ED": "p1", "p1_ES": "p1", "p2_ED": "p2", "p2_ES": "p2"}, n_folds=2, seed=0)[0]
        {'train': ['p2_ED', 'p2_ES'], 'val': ['p1_ED', 'p1_ES']}
    """
    if n_folds < 2:
        raise ConversionError(f"a cross-validation needs at least 2 folds; got {n_folds}")
    keys = sorted(set(groups.values()))
    if len(keys) < n_folds:
        raise ConversionError(
            f"{n_folds} folds need at least {n_folds} groups (patients); there are {len(keys)}. Use fewer folds, "
            "or train nnU-Net's fold 'all'"
        )
    order = np.random.default_rng(seed).permutation(len(keys))
    fold_of = {keys[index]: position % n_folds for position, index in enumerate(order)}
    splits = []
    for fold in range(n_folds):
        val = sorted(case for case, group in groups.items() if fold_of[group] == fold)
        train = sorted(case for case, group in groups.items() if fold_of[group] != fold)
        splits.append({"train": train, "val": val})
    return splits


def _dataset_folder(root: Path, dataset: str | int, variable: str) -> Path:
    text = str(dataset)
    if re.fullmatch(r"\d+", text):
        number = int(text)
        found = (
            sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(rf"Dataset0*{number}_.+", p.name))
            if root.is_dir()
            else []
        )
        if len(found) != 1:
            listed = ", ".join(p.name for p in found) if found else "none"
            raise ConversionError(
                f"dataset id {number}: expected one Dataset{number:03d}_* folder in {variable}={root}; found {listed}"
            )
        return found[0]
    if "/" in text or "\\" in text or not text.startswith("Dataset"):
        raise ConversionError(f"dataset must be an id (e.g. 27) or a folder name (e.g. Dataset027_ACDC); got {text!r}")
    return root / text


def _same_split(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        set(x["train"]) == set(y["train"]) and set(x["val"]) == set(y["val"]) for x, y in zip(a, b)
    )


def install_splits(dataset: str | int, *, force: bool = False) -> tuple[Path, str]:
    """Copy a converted dataset's ``splits_final.json`` from nnUNet_raw to nnUNet_preprocessed.

    Run it after ``nnUNetv2_plan_and_preprocess`` and before ``nnUNetv2_train``.

    Args:
        dataset: dataset id (``27``) or folder name (``Dataset027_ACDC``).
        force: replace a different split already in nnUNet_preprocessed.

    Returns:
        The installed file and what happened: ``"installed"``, ``"unchanged"`` (the same split was
        there, e.g. copied by nnU-Net's planner) or ``"replaced"``.

    Raises:
        ConversionError: unset variables, no such dataset, no split in the raw folder, not yet
            planned, or a different split in place without ``force``.
    """
    raw = raw_root()
    preprocessed_value = os.environ.get("nnUNet_preprocessed", "").strip().strip('"')
    if not preprocessed_value:
        raise ConversionError("nnUNet_preprocessed is not set: export nnUNet_preprocessed=/path/to/nnUNet_preprocessed")
    source_folder = _dataset_folder(raw, dataset, "nnUNet_raw")
    source = source_folder / SPLITS_FILE
    problems = []
    if not source.is_file():
        problems.append(f"{source} does not exist (only converters that group cases write one, e.g. acdc)")
    target_folder = Path(preprocessed_value).expanduser() / source_folder.name
    if not target_folder.is_dir():
        problems.append(f"{target_folder} does not exist: run nnUNetv2_plan_and_preprocess -d <id> first")
    if problems:
        raise fail(f"cannot install the split of {source_folder.name}", problems)
    splits = json.loads(source.read_text(encoding="utf-8"))
    target = target_folder / SPLITS_FILE
    status = "installed"
    if target.is_file():
        current = json.loads(target.read_text(encoding="utf-8"))
        if _same_split(splits, current):
            return target, "unchanged"
        if not force:
            raise ConversionError(
                f"{target} holds a different split (nnU-Net draws a random one when training starts without "
                "splits_final.json). Folds trained on it are not comparable with folds on the grouped split: "
                "pass --force to replace it, then retrain those folds"
            )
        status = "replaced"
    write_text_atomically(target, json.dumps(splits, indent=2) + "\n")
    return target, status
