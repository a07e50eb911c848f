"""Partial-label manifests: which labels are annotated in which case.

The manifest lives in the raw dataset's ``dataset.json`` under the key ``"dicephi_partial_labels"``;
``nnUNetv2_plan_and_preprocess`` copies that file verbatim, so the manifest reaches the preprocessed
folder and the trainer with nnU-Net unchanged::

    "dicephi_partial_labels": {
        "complete": false,
        "cases": {
            "BraTS_LGG_001": [],                 # nothing annotated: empty map = "not annotated"
            "patient001_frame12": ["RV", "LV"],  # labels by name ...
            "patient002_frame01": [1, 3]         # ... or by value
        }
    }

A case that is not listed has every label annotated, unless ``"complete": true``, in which case
every case of the dataset must be listed. Background is never listed: it is annotated in a case
exactly when every foreground label is (a 0 in a partially annotated case means "background or an
unannotated label"). Region-based datasets are refused: a region is a union of labels, so
"annotated" is not defined per region.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_dicephi._problems import one_message

MANIFEST_KEY = "dicephi_partial_labels"


class ManifestError(ValueError):
    """A manifest that cannot be used; the message lists every offender and how to fix it."""


@dataclass(frozen=True)
class AnnotationTable:
    """Validated manifest: for each listed case, which output channels are annotated."""

    labels: tuple[str, ...]
    """Channel names in output order, background first."""
    rows: dict[str, np.ndarray]
    """Case id → ``(C,)`` bool; cases not listed are fully annotated."""

    @property
    def is_partial(self) -> bool:
        return any(not row.all() for row in self.rows.values())

    def mask(self, keys: Sequence[str]) -> np.ndarray:
        """``(B, C)`` bool for the case identifiers of a batch (nnU-Net's ``batch['keys']``)."""
        full = np.ones(len(self.labels), dtype=bool)
        return np.stack([self.rows.get(str(key), full) for key in keys])

    def annotated(self, case: str, channel: int) -> bool:
        row = self.rows.get(case)
        return True if row is None else bool(row[channel])


def _label_values(dataset_json: dict, where: str) -> dict[str, int]:
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict):
        raise ManifestError(f"{where} has no 'labels' mapping; it is not an nnU-Net dataset.json")
    values = {}
    for label, value in labels.items():
        if label == "ignore":
            continue
        if isinstance(value, (list, tuple)) and len(value) != 1:
            raise ManifestError(
                f"{where}: label {label!r} is a region {value}: partial-label manifests work with one label per class "
                "only; remove 'dicephi_partial_labels' or convert the dataset to plain labels"
            )
        values[label] = int(value[0] if isinstance(value, (list, tuple)) else value)
    return values


def _lookalike_keys(dataset_json: dict) -> list[str]:
    """Keys that look like :data:`MANIFEST_KEY` but are not it: a typo would turn partial labels off."""
    found = []
    for key in dataset_json:
        if not isinstance(key, str) or key == MANIFEST_KEY:
            continue
        folded = key.lower()
        close = difflib.SequenceMatcher(None, folded, MANIFEST_KEY).ratio() >= 0.75
        if close or re.sub(r"[^a-z]", "", folded).startswith("dicephi"):
            found.append(key)
    return found


def load_manifest(
    dataset_json: dict, case_ids: Iterable[str] | None = None, source: str | os.PathLike | None = None
) -> AnnotationTable | None:
    """Validate the manifest of a ``dataset.json`` (None if there is none).

    Args:
        dataset_json: the dataset.json contents (raw or preprocessed copy).
        case_ids: every case of the dataset; when given, unknown ids are errors and, for a complete
            manifest, missing ids too.
        source: the file ``dataset_json`` was read from, named in errors, which then end with a line
            saying where to fix it: for nnU-Net's preprocessed copy, in the raw dataset.json, then
            copied over the preprocessed one.

    Raises:
        ManifestError: listing every problem found, not only the first; also for a key that looks
            like ``"dicephi_partial_labels"`` but is not it (``"dicephi_partial_label"``,
            ``"DicePhi_Partial_Labels"``, any ``"dicephi…"`` key), which would silently train without
            partial labels.
    """
    try:
        return _validated(dataset_json, case_ids, str(source) if source else "dataset.json", generic_fix=source is None)
    except ManifestError as error:
        if source is None:
            raise
        raise ManifestError(f"{error}\n{where_to_fix(source)}") from None


def where_to_fix(source: str | os.PathLike) -> str:
    """Where to correct a manifest read from ``source``, in one line.

    The trainers read the copy in ``nnUNet_preprocessed`` that ``nnUNetv2_plan_and_preprocess`` made;
    its original in ``nnUNet_raw`` is the one to edit, or the next preprocessing undoes the fix.
    """
    path = Path(source)
    dataset = path.parent.name
    preprocessed_root = os.environ.get("nnUNet_preprocessed")
    if (path.parent / "dataset_fingerprint.json").is_file() or (
        preprocessed_root and path.parent.parent.resolve() == Path(preprocessed_root).resolve()
    ):
        raw_root = os.environ.get("nnUNet_raw")
        raw = Path(raw_root, dataset, path.name) if raw_root else f"nnUNet_raw/{dataset}/{path.name}"
        return (
            f"That file is nnU-Net's copy of the raw dataset.json: fix it in {raw}, then copy that file to {path} "
            "(nnUNetv2_plan_and_preprocess made the copy; a new preprocessing would undo a fix made in the copy only)"
        )
    copy = Path(preprocessed_root, dataset, path.name) if preprocessed_root else None
    if copy is not None and copy.is_file():
        return f"Fix it in {path}, then copy that file to {copy} (nnU-Net's copy, which the trainers read)"
    return f"Fix it in {path}"


def _validated(
    dataset_json: dict, case_ids: Iterable[str] | None, where: str, generic_fix: bool
) -> AnnotationTable | None:
    lookalikes = _lookalike_keys(dataset_json)
    if lookalikes:
        found = " and ".join(repr(key) for key in lookalikes)
        raise ManifestError(
            f"{where} has {found} where the partial-label manifest key is {MANIFEST_KEY!r}, so partial labels "
            f"would be off: rename the key to {MANIFEST_KEY!r} (or remove it)"
            + (
                " in the raw dataset.json and in its copy in nnUNet_preprocessed/<Dataset>/ "
                "(nnUNetv2_plan_and_preprocess copies it)"
                if generic_fix
                else ""
            )
        )
    manifest = dataset_json.get(MANIFEST_KEY)
    if manifest is None:
        return None
    values = _label_values(dataset_json, where)
    by_value = sorted(values.items(), key=lambda item: item[1])
    names = tuple(label for label, _ in by_value)
    if [v for _, v in by_value] != list(range(len(by_value))):
        raise ManifestError(f"{where}: labels must be consecutive from 0 (nnU-Net requires it); got {values}")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cases"), dict):
        raise ManifestError(
            f"{where}: '{MANIFEST_KEY}' must be an object with a 'cases' object mapping case ids to lists of annotated "
            f'labels, e.g. {{"complete": false, "cases": {{"case_001": ["tumor"]}}}}; got {manifest!r}'
        )
    unknown_keys = sorted(set(manifest) - {"complete", "cases"})
    complete = manifest.get("complete", False)
    problems = []
    if unknown_keys:
        problems.append(f"unknown keys {unknown_keys} (allowed: 'complete', 'cases')")
    if not isinstance(complete, bool):
        problems.append(f"'complete' must be true or false, got {complete!r}")
    rows: dict[str, np.ndarray] = {}
    foreground = {name: value for name, value in values.items() if value != 0}
    for case, listed in manifest["cases"].items():
        if not isinstance(listed, list):
            problems.append(f"case {case!r}: expected a list of label names or values, got {listed!r}")
            continue
        row = np.zeros(len(names), dtype=bool)
        for label in listed:
            if isinstance(label, str) and label in foreground:
                row[foreground[label]] = True
            elif isinstance(label, int) and not isinstance(label, bool) and label in foreground.values():
                row[label] = True
            else:
                problems.append(
                    f"case {case!r}: unknown label {label!r} (foreground labels: "
                    f"{', '.join(f'{n}={v}' for n, v in foreground.items())}; background is implied)"
                )
        row[0] = row[1:].all()
        rows[str(case)] = row
    if case_ids is not None:
        known = {str(c) for c in case_ids}
        strangers = sorted(set(rows) - known)
        if strangers:
            problems.append(f"case ids not in the dataset: {', '.join(strangers)}")
        if complete is True:
            missing = sorted(known - {str(c) for c in manifest["cases"]})
            if missing:
                problems.append(f"'complete' is true but these cases are not listed: {', '.join(missing)}")
    if problems:
        raise ManifestError(one_message(f"invalid '{MANIFEST_KEY}' in {where}", problems))
    return AnnotationTable(names, rows)
