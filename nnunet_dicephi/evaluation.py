"""Evaluation that knows the partial-label manifest, and the trainers' per-case validation record.

nnU-Net's ``summary.json`` averages every (case, label) pair. With partial labels, a prediction of
an unannotated label counts as a false positive there, so the means are recomputed from the
per-case metrics over annotated pairs only. Per-case entries are kept as nnU-Net wrote them, and
nnU-Net's file of the latest validation is kept beside it as ``summary_all_pairs.json``.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np

from ._files import write_text_atomically
from .partial_labels import AnnotationTable

ALL_PAIRS_FILE = "summary_all_pairs.json"
"""nnU-Net's own ``summary.json`` of the latest validation, beside the restricted one."""
RESTRICTED_KEY = "dicephi_partial_labels"
"""Marks a ``summary.json`` whose means were restricted to annotated pairs."""


def _case_id(path: str, file_ending: str) -> str:
    name = os.path.basename(path)
    return name[: -len(file_ending)] if file_ending and name.endswith(file_ending) else name.split(".")[0]


def restrict_summary_to_annotated(summary_path: str, table: AnnotationTable, file_ending: str = ".nii.gz") -> dict:
    """Rewrite nnU-Net's ``summary.json`` so that ``mean`` and ``foreground_mean`` skip unannotated pairs.

    Returns the new summary. Labels are nnU-Net's keys (``"1"``, ``"2"``, ...); region keys are left
    as they are (manifests are refused for region datasets). nnU-Net's file becomes
    :data:`ALL_PAIRS_FILE` each time it is new (every validation, ``--val`` re-runs included); a summary
    restricted already is restricted again and leaves that file alone.
    """
    with open(summary_path, encoding="utf-8") as handle:
        text = handle.read()
    summary = json.loads(text)
    per_label: dict[str, dict[str, list[float]]] = {}
    for entry in summary["metric_per_case"]:
        case = _case_id(entry["reference_file"], file_ending)
        for label, metrics in entry["metrics"].items():
            if label.lstrip("-").isdigit() and not table.annotated(case, int(label)):
                continue
            bucket = per_label.setdefault(label, {})
            for metric, value in metrics.items():
                bucket.setdefault(metric, []).append(value)
    means = {
        label: {
            metric: float(np.nanmean(values)) if not all(_nan(v) for v in values) else float("nan")
            for metric, values in metrics.items()
        }
        for label, metrics in per_label.items()
    }
    if summary.get(RESTRICTED_KEY) is None:
        # nnU-Net's own summary, fresh from a validation (the first, or a --val re-run): it becomes the
        # all-pairs record; an already restricted one is only restricted again
        write_text_atomically(os.path.join(os.path.dirname(summary_path), ALL_PAIRS_FILE), text)
    summary["mean"] = means
    foreground = [m for label, m in means.items() if label != "0"]
    metric_names = sorted({metric for m in foreground for metric in m})
    summary["foreground_mean"] = {metric: float(np.mean([m[metric] for m in foreground])) for metric in metric_names}
    summary[RESTRICTED_KEY] = "means over annotated (case, label) pairs only"
    write_text_atomically(summary_path, json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


VALIDATION_FILE = "dicephi_validation.jsonl"
"""A trainer's per-case validation record in its fold folder: per epoch, one JSON line with the
epoch and, per validation case, nnU-Net's online pseudo-Dice counts ``[tp, fp, fn]`` per foreground
class over that epoch's validation patches."""


def append_validation_record(path: str | os.PathLike, epoch: int, cases: dict[str, np.ndarray]) -> None:
    """Append one epoch's per-case counts (``(3, classes)`` each) as one line.

    A line cut short by a kill (the file does not end in a newline) is ended first, so that this
    epoch starts a line of its own: the reader then skips the cut line alone, not this epoch with it.
    """
    line = {"epoch": int(epoch), "cases": {key: np.asarray(value).T.tolist() for key, value in sorted(cases.items())}}
    text = json.dumps(line) + "\n"
    with open(path, "a+b") as handle:  # writes always go to the end; reads may seek
        end = handle.seek(0, os.SEEK_END)
        if end > 0:
            handle.seek(end - 1)
            if handle.read(1) != b"\n":
                text = "\n" + text
        handle.write(text.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def read_validation_record(path: str | os.PathLike) -> dict[int, dict[str, np.ndarray]]:
    """A trainer's per-case validation record: ``{epoch: {case: counts}}``, counts ``(classes, 3)``.

    Counts are ``[tp, fp, fn]`` per foreground class over the epoch's validation patches (the online
    pseudo-Dice of nnU-Net, per case). A resumed run may have written an epoch twice: the last line
    wins. A line that cannot be read (cut short by a killed run) is skipped with a warning naming it.
    """
    record: dict[int, dict[str, np.ndarray]] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:  # a cut line may end mid-character
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                epoch = int(entry["epoch"])
                counts = {
                    str(case): np.asarray(values, dtype=np.float64).reshape(-1, 3)
                    for case, values in entry["cases"].items()
                }
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                warnings.warn(
                    f"{path}, line {number}: not a validation record ({error}), skipped; a run killed while "
                    "writing leaves such a line, and the epochs after it are kept",
                    stacklevel=2,
                )
                continue
            record[epoch] = counts
    return dict(sorted(record.items()))
