"""One case at a time, in worker processes: geometry and label checks, then the case's files.

Each image's header is compared with the first channel's and the label's (size, spacing, origin,
direction), label values are checked against the dataset's allowed set and mapped to nnU-Net's
consecutive values, and a partial-labelling scheme empties its labels. Problems are returned, not
raised, so that one run reports every case.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nnunet_dicephi.conversion._model import (
    FILE_ENDING,
    FULL_LABELS_FOLDER,
    GEOMETRY_TOLERANCE,
    DatasetSpec,
    Scheme,
    SourceCase,
)

# --- geometry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Size and physical placement of an image, as SimpleITK reports them."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def differences(self, other: Geometry, tolerance: float = GEOMETRY_TOLERANCE) -> list[str]:
        """What differs in ``other`` beyond ``tolerance`` ("spacing (1, 1, 2) vs (1, 1, 1)"); [] if it agrees."""
        if len(self.size) != len(other.size):
            return [f"{len(other.size)}-D vs {len(self.size)}-D"]
        out = [] if self.size == other.size else [f"size {other.size} vs {self.size}"]
        for what in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, what)), np.asarray(getattr(other, what))
            if not np.allclose(b, a, rtol=tolerance, atol=tolerance):
                out.append(f"{what} {_rounded(b)} vs {_rounded(a)}")
        return out


def _rounded(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(f"{v:.6g}") for v in values)


def _header(path: str) -> tuple[Geometry, int]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    geometry = Geometry(
        tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(reader.GetDirection())
    )
    return geometry, reader.GetNumberOfComponents()


def _geometry_of(image) -> Geometry:
    return Geometry(tuple(image.GetSize()), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def _placed(array: np.ndarray, geometry: Geometry):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


# --- one case, in a worker process ------------------------------------------------------------


class _CaseTask(NamedTuple):
    """One case for a worker process: where to read it, where to write it, how to map its labels."""

    case_id: str
    images: tuple[str, ...]
    label: str
    image_out: tuple[str, ...]
    label_out: str
    full_label_out: str | None
    value_map: tuple[tuple[int, int], ...]
    removed: tuple[int, ...]
    source_root: str


@dataclass(frozen=True)
class _CaseOutcome:
    case_id: str
    problems: tuple[str, ...] = ()
    values: tuple[int, ...] = ()
    """Label values written to labelsTr/labelsTs (after the scheme)."""


def _show(path: str, root: str) -> str:
    relative = os.path.relpath(path, root)
    return path if relative.startswith("..") else relative


def _error_text(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # SimpleITK's messages start with C++ file names; the last line says what went wrong
    return lines[-1] if lines else type(error).__name__


def _label_array(image, shown: str) -> tuple[np.ndarray | None, str | None]:
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        return None, f"{shown}: {image.GetNumberOfComponentsPerPixel()} components per voxel, expected a label map"
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        fractional = np.unique(array[array != np.round(array)])
        if fractional.size:
            return None, f"{shown}: non-integer label values {[float(v) for v in fractional[:5]]}"
    return array.astype(np.int64, copy=False), None


def convert_case(task: _CaseTask) -> _CaseOutcome:
    """Check and write one case; problems are returned, not raised, so that every case gets reported."""
    try:
        return _convert_case(task)
    except Exception as error:  # e.g. a full disk: reported with the other cases' problems
        return _CaseOutcome(task.case_id, (f"failed: {type(error).__name__}: {_error_text(error)}",))


def _convert_case(task: _CaseTask) -> _CaseOutcome:
    import SimpleITK as sitk

    root = task.source_root
    problems: list[str] = []
    headers: list[Geometry | None] = []
    for path in task.images:
        try:
            geometry, components = _header(path)
            if components != 1:
                problems.append(f"{_show(path, root)}: {components} components per voxel, expected one channel")
            headers.append(geometry)
        except RuntimeError as error:
            problems.append(f"{_show(path, root)}: cannot be read ({_error_text(error)})")
            headers.append(None)
    try:
        label_image = sitk.ReadImage(task.label)
    except RuntimeError as error:
        problems.append(f"{_show(task.label, root)}: cannot be read ({_error_text(error)})")
        label_image = None
    reference = headers[0]
    if reference is not None:
        first = _show(task.images[0], root)
        if len(reference.size) != 3:
            problems.append(f"{first}: {len(reference.size)}-D, expected a 3-D image")
        for path, geometry in zip(task.images[1:], headers[1:]):
            if geometry is not None and (diff := reference.differences(geometry)):
                problems.append(f"{_show(path, root)} does not match {first}: {'; '.join(diff)}")
        if label_image is not None and (diff := reference.differences(_geometry_of(label_image))):
            problems.append(f"{_show(task.label, root)} does not match {first}: {'; '.join(diff)}")
    array = None
    if label_image is not None:
        array, problem = _label_array(label_image, _show(task.label, root))
        if problem:
            problems.append(problem)
    if array is not None:
        present = np.unique(array)
        allowed = dict(task.value_map)
        unexpected = [int(v) for v in present if int(v) not in allowed]
        if unexpected:
            problems.append(
                f"{_show(task.label, root)}: unexpected label values {unexpected} (allowed: {sorted(allowed)})"
            )
    if problems or reference is None or array is None:
        return _CaseOutcome(task.case_id, tuple(problems))

    for path, geometry, out in zip(task.images, headers, task.image_out):
        if geometry == reference:
            shutil.copyfile(path, out)  # bit-exact: the download's own header and data type
        else:
            # within tolerance but not identical: nnU-Net compares with a tighter np.allclose, so give
            # every channel the first channel's geometry exactly
            image = sitk.ReadImage(path)
            image.SetSpacing(reference.spacing)
            image.SetOrigin(reference.origin)
            image.SetDirection(reference.direction)
            sitk.WriteImage(image, out, True)
    labels = np.zeros(array.shape, dtype=np.uint8)
    for source, written in task.value_map:
        if written:
            labels[array == source] = written
    if task.full_label_out is not None:
        sitk.WriteImage(_placed(labels, reference), task.full_label_out, True)
    if task.removed:
        labels[np.isin(labels, task.removed)] = 0
    sitk.WriteImage(_placed(labels, reference), task.label_out, True)
    return _CaseOutcome(task.case_id, (), tuple(int(v) for v in np.unique(labels)))


def run_tasks(tasks: list[_CaseTask], workers: int, progress: bool, title: str) -> list[_CaseOutcome]:
    from nnunet_dicephi._parallel import map_cases

    outcomes, _ = map_cases(
        convert_case, tasks, workers=workers, desc=f"converting {title}", disable_progress=not progress
    )
    return sorted(outcomes, key=lambda outcome: outcome.case_id)


# --- every case of a dataset -------------------------------------------------------------------


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def case_tasks(
    spec: DatasetSpec, cases: Sequence[SourceCase], scheme: Scheme | None, source: Path, staging: Path
) -> tuple[list[_CaseTask], dict[str, tuple[int, ...]]]:
    partial = scheme is not None
    folders = ["imagesTr", "labelsTr"] + ([FULL_LABELS_FOLDER] if partial else [])
    if any(c.test for c in cases):
        folders += ["imagesTs", "labelsTs"]
    for folder in folders:
        (staging / folder).mkdir()
    tasks, removed = [], {}
    value_map = tuple(sorted((int(k), int(v)) for k, v in spec.value_map.items()))
    for case in cases:
        split = "Ts" if case.test else "Tr"
        dropped = () if case.test or scheme is None else tuple(sorted(scheme.removed(case)))
        if dropped:
            removed[case.case_id] = dropped
        tasks.append(
            _CaseTask(
                case_id=case.case_id,
                images=tuple(str(p) for p in case.images),
                label=str(case.label),
                image_out=tuple(
                    str(staging / f"images{split}" / f"{case.case_id}_{i:04d}{FILE_ENDING}")
                    for i in range(len(case.images))
                ),
                label_out=str(staging / f"labels{split}" / f"{case.case_id}{FILE_ENDING}"),
                full_label_out=None
                if case.test or not partial
                else str(staging / FULL_LABELS_FOLDER / f"{case.case_id}{FILE_ENDING}"),
                value_map=value_map,
                removed=dropped,
                source_root=str(source),
            )
        )
    return tasks, removed
