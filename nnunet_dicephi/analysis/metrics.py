"""Per-case metrics of one segmentation class: DSC, volumes, ΔV, from reference and prediction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass


METRICS = {"dsc": "DSC", "delta_ml": "ΔV [ml]"}
"""Metrics compared between configurations, with their names in the paper's words."""
_CHUNK = 1 << 22
"""Voxels per step when counting, so that memory stays bounded on large volumes."""


class ReportError(ValueError):
    """Inputs that cannot be reported on; the message names every offender and how to fix it."""


@dataclass(frozen=True)
class SegmentationClass:
    """One evaluated class: a label, or in region-based datasets a region (a union of labels)."""

    name: str
    values: tuple[int, ...]
    """Label values whose union is the class."""
    is_region: bool = False

    @property
    def label(self) -> str:
        """The class as nnU-Net's ``summary.json`` keys it: ``"2"`` or ``"(1, 2)"``."""
        return str(self.values) if self.is_region else str(self.values[0])

    @property
    def channel(self) -> int | None:
        """The manifest's channel (the label value; labels are consecutive from 0); None for regions."""
        return None if self.is_region else self.values[0]


def dataset_classes(dataset_json: dict) -> tuple[list[SegmentationClass], int | None]:
    """The classes to evaluate (background and ``ignore`` left out) and the ignore label of a dataset.json.

    Raises:
        ReportError: if the labels are not an nnU-Net label mapping.
    """
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ReportError("dataset.json has no 'labels' mapping; it is not an nnU-Net dataset.json")
    ignore = labels.get("ignore")
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)):
        raise ReportError(f"dataset.json: the ignore label must be one integer (nnU-Net requires it), got {ignore!r}")
    values = {}
    for name, value in labels.items():
        if name == "ignore":
            continue
        value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ReportError(f"dataset.json: label {name!r} must be an integer or a list of integers, got {value!r}")
        values[name] = value
    # nnU-Net's LabelManager: one multi-value label makes the whole dataset region-based
    regions = any(len(v) > 1 for v in values.values())
    classes = [SegmentationClass(n, v, regions) for n, v in values.items() if v != (0,)]
    return classes, ignore


@dataclass(frozen=True)
class CaseMetrics:
    """Voxel counts of one (case, class) pair, ignore-label voxels left out, and what follows from them."""

    reference_voxels: int
    predicted_voxels: int
    overlap_voxels: int
    voxel_ml: float

    @property
    def dsc(self) -> float:
        """2|Y ∩ Ŷ| / (|Y| + |Ŷ|); 1 when reference and prediction are both empty."""
        total = self.reference_voxels + self.predicted_voxels
        return 1.0 if total == 0 else 2.0 * self.overlap_voxels / total

    @property
    def jaccard(self) -> float:
        """|Y ∩ Ŷ| / |Y ∪ Ŷ| = DSC / (2 − DSC); 1 when reference and prediction are both empty."""
        union = self.reference_voxels + self.predicted_voxels - self.overlap_voxels
        return 1.0 if union == 0 else self.overlap_voxels / union

    @property
    def reference_ml(self) -> float:
        return self.reference_voxels * self.voxel_ml

    @property
    def predicted_ml(self) -> float:
        return self.predicted_voxels * self.voxel_ml

    @property
    def delta_ml(self) -> float:
        """ΔV: predicted − reference volume."""
        return (self.predicted_voxels - self.reference_voxels) * self.voxel_ml


def voxel_volume_ml(spacing: Sequence[float], shape: Sequence[int]) -> float:
    """Voxel volume in ml from a spacing in array order, as nnU-Net's readers return it.

    For a 2D image the readers add a singleton axis with a dummy spacing of 999 × the largest
    in-plane spacing; that axis counts as 1 mm thick.
    """
    spacing = [abs(float(s)) for s in spacing]
    shape = list(shape)[-len(spacing) :]
    if len(spacing) >= 3 and shape[0] == 1 and spacing[0] >= 998.9 * max(spacing[1:]):
        spacing[0] = 1.0
    return float(np.prod(spacing)) / 1000.0


def confusion_counts(reference: np.ndarray, prediction: np.ndarray, size: int, ignore_label: int | None = None):
    """Voxel counts ``(size, size)``: row = reference value, column = predicted value.

    Values outside ``0 .. size − 2`` are counted in the last row/column ("any other value");
    reference voxels with the ignore label are dropped.

    Raises:
        ValueError: for shapes that differ or values that are not integers.
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, prediction {prediction.shape}")
    reference, prediction = reference.reshape(-1), prediction.reshape(-1)
    counts = np.zeros(size * size, dtype=np.int64)
    for start in range(0, reference.size, _CHUNK):
        ref = _as_labels(reference[start : start + _CHUNK], size, "reference")
        pred = _as_labels(prediction[start : start + _CHUNK], size, "prediction")
        counts += np.bincount(ref * size + pred, minlength=size * size)
    counts = counts.reshape(size, size)
    if ignore_label is not None:
        counts[min(ignore_label, size - 1) if ignore_label >= 0 else size - 1] = 0
    return counts


def _as_labels(chunk: np.ndarray, size: int, what: str) -> np.ndarray:
    labels = chunk.astype(np.intp)
    # nnU-Net's readers return float32 arrays; a non-integer value means a probability map or an
    # interpolated resampling, not a segmentation
    if chunk.dtype.kind == "f" and np.any(labels != chunk):
        raise ValueError(f"the {what} holds non-integer values; is it a segmentation?")
    labels[(labels < 0) | (labels >= size - 1)] = size - 1
    return labels


def case_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    classes: Sequence[SegmentationClass],
    *,
    ignore_label: int | None = None,
    voxel_ml: float = 1.0,
) -> list[CaseMetrics]:
    """The metrics of every class of one case, from one pass over the voxels.

    Args:
        reference: the reference label map.
        prediction: the predicted label map, same shape.
        classes: labels or regions to evaluate.
        ignore_label: reference voxels with this value are left out, as nnU-Net does.
        voxel_ml: the volume of one voxel in ml.
    """
    known = [v for c in classes for v in c.values] + ([ignore_label] if ignore_label is not None else [])
    size = max([v for v in known if v >= 0], default=0) + 2
    counts = confusion_counts(reference, prediction, size, ignore_label)
    results = []
    for segmentation_class in classes:
        values = [v for v in segmentation_class.values if 0 <= v < size - 1]
        results.append(
            CaseMetrics(
                reference_voxels=int(counts[values, :].sum()),
                predicted_voxels=int(counts[:, values].sum()),
                overlap_voxels=int(counts[np.ix_(values, values)].sum()),
                voxel_ml=voxel_ml,
            )
        )
    return results
