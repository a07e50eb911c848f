"""Evaluation that knows the partial-label manifest, and the trainers' per-case validation record.

nnU-Net's ``summary.json`` averages every (case, label) pair. With partial labels, a prediction of
an unannotated label counts as a false positive there, so the means are recomputed from the
per-case metrics over annotated pairs only. Per-case entries are kept as nnU-Net wrote them, and the
original file is kept beside it as ``summary_all_pairs.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np

from .partial_labels import AnnotationTable


def _case_id(path: str, file_ending: str) -> str:
    name = os.path.basename(path)
    return name[: -len(file_ending)] if file_ending and name.endswith(file_ending) else name.split(".")[0]


def restrict_summary_to_annotated(summary_path: str, table: AnnotationTable, file_ending: str = ".nii.gz") -> dict:
    """Rewrite nnU-Net's ``summary.json`` so that ``mean`` and ``foreground_mean`` skip unannotated pairs.

    Returns the new summary. Labels are nnU-Net's keys (``"1"``, ``"2"``, ...); region keys are left
    as they are (manifests are refused for region datasets).
    """
    with open(summary_path, encoding="utf-8") as handle:
        summary = json.load(handle)
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
    summary["mean"] = means
    foreground = [m for label, m in means.items() if label != "0"]
    metric_names = sorted({metric for m in foreground for metric in m})
    summary["foreground_mean"] = {metric: float(np.mean([m[metric] for m in foreground])) for metric in metric_names}
    summary["dicephi_partial_labels"] = "means over annotated (case, label) pairs only"
    original = os.path.join(os.path.dirname(summary_path), "summary_all_pairs.json")
    if not os.path.exists(original):
        shutil.copyfile(summary_path, original)
    tmp = f"{summary_path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
    os.replace(tmp, summary_path)
    return summary


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


VALIDATION_FILE = "dicephi_validation.jsonl"
"""A trainer's per-case validation record in its fold folder: per epoch, one JSON line with the
epoch and, per validation case, nnU-Net's online pseudo-Dice counts ``[tp, fp, fn]`` per foreground
class over that epoch's validation patches."""


def append_validation_record(path: str | os.PathLike, epoch: int, cases: dict[str, np.ndarray]) -> None:
    """Append one epoch's per-case counts (``(3, classes)`` each); a line cut short by a kill is skipped."""
    line = {"epoch": int(epoch), "cases": {key: np.asarray(value).T.tolist() for key, value in sorted(cases.items())}}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def read_validation_record(path: str | os.PathLike) -> dict[int, dict[str, np.ndarray]]:
    """A trainer's per-case validation record: ``{epoch: {case: counts}}``, counts ``(classes, 3)``.

    Counts are ``[tp, fp, fn]`` per foreground class over the epoch's validation patches (the online
    pseudo-Dice of nnU-Net, per case). A resumed run may have written an epoch twice: the last line
    wins. A line cut short by a killed run is skipped.
    """
    record: dict[int, dict[str, np.ndarray]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            record[int(entry["epoch"])] = {
                case: np.asarray(counts, dtype=np.float64).reshape(-1, 3) for case, counts in entry["cases"].items()
            }
    return dict(sorted(record.items()))
