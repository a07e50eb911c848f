"""``nnunet-dicephi report``: DSC, ΔV, detection ROC and paired bootstrap tests over nnU-Net results.

This is Table 1 and Fig. 2 of the MICCAI 2022 paper for any nnU-Net experiment: per class and
configuration the mean Dice similarity coefficient (DSC), the mean volume difference ΔV in ml, the
ROC curve and AUC of the predicted volume for detecting a class (telling a non-empty reference from
an empty one), and non-parametric paired bootstrap p-values between configurations.

Inputs. Each RESULTS_DIR is one of

* a trainer output folder ``nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<Configuration>``:
  the predictions are ``fold_*/validation/<case><file_ending>`` of every fold (or of ``--folds``),
  pooled, since in a cross-validation every case is validated in exactly one fold; the references
  are ``$nnUNet_preprocessed/DatasetXXX_Name/gt_segmentations``, as in nnU-Net's own validation,
  unless ``--reference`` is given; labels, file ending and manifest come from the folder's
  ``dataset.json`` and the image reader from its ``plans.json``;
* a dataset folder ``nnUNet_results/DatasetXXX_Name``: every trainer folder inside it;
* a plain folder of predictions (e.g. from ``nnUNetv2_predict``), with ``--reference`` and, when
  the folder has no ``dataset.json`` of its own, ``--dataset-json``.

A configuration is named by its trainer when that is unambiguous within its dataset, else by its
folder name ``<Trainer>__<Plans>__<Configuration>``; a plain folder by its folder name. Datasets
are reported separately; configurations of one dataset are compared pairwise.

Per (configuration, case, class). Classes are the ``dataset.json`` labels except background and
``ignore``; in region-based datasets each label is a region, the union of its label values.
Reference voxels with the ignore label are left out of the DSC and of both volumes, as in nnU-Net's
evaluator. Volumes are voxel counts times the voxel volume of the reference (its spacing as nnU-Net's
reader returns it) in ml (mm³ / 1000); ΔV = predicted − reference volume. For 2D images, where
nnU-Net's readers put a dummy spacing of 999 × the in-plane spacing on the singleton axis, the
thickness is taken as 1 mm, so "ml" is the area in mm² / 1000.

Empty maps, explicitly (nnU-Net's evaluator gives NaN when both maps are empty):

======================  ====================  =============================================
reference               prediction            DSC
======================  ====================  =============================================
empty                   empty                 1 (the empty map was correctly predicted)
empty                   not empty             0
not empty               empty                 0
======================  ====================  =============================================

Beside the mean DSC over all cases, the summary gives the mean over non-empty references only and
the mean over the pairs where nnU-Net's DSC is defined (it leaves out empty reference *and* empty
prediction), which is the number in nnU-Net's ``summary.json``.

Partial labels. When the ``dataset.json`` holds a partial-label manifest (see
:mod:`nnunet_dicephi.partial_labels`), an unannotated (case, class) pair is kept in ``per_case.csv``
with ``annotated = False`` and left out of every statistic (means, AUC, bootstrap), and counted as
``n_unannotated``. ``--all-pairs`` disregards the manifest, for references that are fully labelled
although training was not (the paper's setting).

Summary per (dataset, class, configuration), over annotated pairs: ``n``, mean and sample standard
deviation (ddof = 1) of the DSC, the two other DSC means above, mean reference and predicted volume,
mean ΔV and mean |ΔV|, and the AUC of the predicted volume as a score for "the reference is not
empty" (:func:`sklearn.metrics.roc_auc_score`; ties count one half). The AUC is NaN, with the
reason in ``auc_note``, unless both empty and non-empty references occur.

Paired bootstrap, per dataset, class, pair of configurations and metric (DSC and ΔV), over the
cases that both configurations have and that are annotated in both: the differences
``d = metric(a) − metric(b)`` are resampled with :func:`scipy.stats.bootstrap` (one sample,
statistic: the mean; percentile interval; a fresh ``numpy`` generator seeded with ``seed`` for
every test, so each result is reproducible and independent of the others). The two-sided p-value
is read off the bootstrap distribution of the mean difference ``m*``::

    p = min(1, 2 · min(P(m* ≤ 0), P(m* ≥ 0)))

i.e. the smallest α for which the two-sided (1 − α) percentile interval excludes 0; identical
configurations give p = 1, and p = 0 means p < 1 / n_resamples. Fewer than two common cases give
NaN with the reason in ``note``.

Outputs, in the output folder (written to a temporary sibling folder that is renamed into place):
``per_case.csv``, ``summary.csv``, ``pairwise.csv`` (long format), ``report.md``, and per dataset
``dsc_<dataset>.png``, ``delta_volume_<dataset>.png``, ``roc_<dataset>.png``.

Only the standard library and numpy are imported with this module; nnU-Net, SimpleITK, scipy,
scikit-learn, pandas and matplotlib are imported where they are used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nnunet_dicephi._files import staging_folder, write_text_atomically
from nnunet_dicephi.partial_labels import AnnotationTable, ManifestError, load_manifest

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_OUTPUT = "dicephi_report"
METRICS = {"dsc": "DSC", "delta_ml": "ΔV [ml]"}
"""Metrics compared between configurations, with their names in the paper's words."""
CONFIDENCE_LEVEL = 0.95
_CHUNK = 1 << 22
"""Voxels per step when counting, so that memory stays bounded on large volumes."""
_MAX_LISTED = 12
"""Offenders named per problem before "and N more"."""


class ReportError(ValueError):
    """Inputs that cannot be reported on; the message names every offender and how to fix it."""


# --- classes and per-case metrics -------------------------------------------------------------


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


# --- bootstrap --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedComparison:
    """Paired bootstrap of the mean difference ``a − b`` over common cases."""

    n: int
    mean_a: float
    mean_b: float
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    note: str = ""


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 10000,
    seed: int = 0,
    confidence_level: float = CONFIDENCE_LEVEL,
) -> PairedComparison:
    """Bootstrap the mean paired difference ``a − b``; two-sided p-value and percentile interval.

    ``p = min(1, 2 · min(P(m* ≤ 0), P(m* ≥ 0)))`` over the bootstrap distribution of the mean
    difference ``m*`` (see the module docstring). NaN, with a note, for fewer than 2 pairs.
    """
    from scipy.stats import bootstrap

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    mean_a = float(a.mean()) if n else math.nan
    mean_b = float(b.mean()) if n else math.nan
    if n < 2:
        return PairedComparison(
            n, mean_a, mean_b, mean_a - mean_b, math.nan, math.nan, math.nan, f"{n} common case(s); at least 2 needed"
        )
    difference = a - b
    # one-sample bootstrap of the differences = scipy's paired bootstrap of the two samples; the
    # percentile interval matches the p-value (p < α exactly when the (1 − α) interval excludes 0)
    result = bootstrap(
        (difference,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence_level,
        method="percentile",
        **_seeded(np.random.default_rng(seed)),
    )
    means = result.bootstrap_distribution
    p_value = min(1.0, 2.0 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return PairedComparison(
        n,
        mean_a,
        mean_b,
        float(difference.mean()),
        float(result.confidence_interval.low),
        float(result.confidence_interval.high),
        p_value,
    )


def _seeded(generator: np.random.Generator) -> dict:
    import inspect

    from scipy.stats import bootstrap

    # scipy ≥ 1.15 names the generator `rng`; older releases `random_state`
    return {"rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state": generator}


# --- inputs -----------------------------------------------------------------------------------


@dataclass
class Configuration:
    """One set of predictions to report on: a trainer folder (folds pooled) or a prediction folder."""

    dataset: str
    folder: Path
    kind: str
    """``"trainer"`` or ``"predictions"``."""
    dataset_json_file: Path
    classes: list[SegmentationClass]
    ignore_label: int | None
    file_ending: str
    reference_dir: Path
    reader: type
    manifest: AnnotationTable | None
    predictions: dict[str, tuple[str, Path]] = field(default_factory=dict)
    """Case → (fold, prediction file); fold is ``""`` for prediction folders."""
    name: str = ""

    def annotated(self, case: str, segmentation_class: SegmentationClass) -> bool:
        if self.manifest is None or segmentation_class.channel is None:
            return True
        return self.manifest.annotated(case, segmentation_class.channel)


class _Problems:
    """Problems collected over the whole run, raised as one ReportError."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if self.items:
            count = len(self.items)
            raise ReportError(
                f"cannot build the report ({count} problem{'s' * (count > 1)}):\n  - " + "\n  - ".join(self.items)
            )


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _fold_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("fold_*") if p.is_dir())


def _load_json(path: Path, problems: _Problems, what: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except FileNotFoundError:
        problems.add(f"{path}: not found ({what})")
        return None
    except (OSError, ValueError) as error:
        problems.add(f"{path}: cannot be read as JSON ({error})")
        return None
    if not isinstance(content, dict):
        problems.add(f"{path}: expected a JSON object")
        return None
    return content


def _reader_class(plans: dict | None, dataset_json: dict, example: Path | None, where: Path, problems: _Problems):
    from nnunetv2.imageio.reader_writer_registry import (
        determine_reader_writer_from_dataset_json,
        recursive_find_reader_writer_by_name,
    )

    try:
        # the reader nnU-Net itself validated with; else nnU-Net's choice from the file ending
        if plans and plans.get("image_reader_writer"):
            return recursive_find_reader_writer_by_name(plans["image_reader_writer"])
        return determine_reader_writer_from_dataset_json(
            dataset_json, str(example) if example else None, allow_nonmatching_filename=False, verbose=False
        )
    except (RuntimeError, KeyError) as error:
        problems.add(f"{where}: no nnU-Net image reader for these files ({error})")
        return None


def _dataset_name(folder: Path, kind: str, plans: dict | None, dataset_json: dict, dataset_json_file: Path) -> str:
    if kind == "trainer" and folder.parent.name.startswith("Dataset"):
        return folder.parent.name
    for candidate in (
        (plans or {}).get("dataset_name"),
        dataset_json.get("name") if str(dataset_json.get("name", "")).startswith("Dataset") else None,
        dataset_json_file.parent.name if dataset_json_file.parent.name.startswith("Dataset") else None,
    ):
        if candidate:
            return str(candidate)
    return folder.parent.name if kind == "trainer" else "predictions"


def _prediction_files(folder: Path, file_ending: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"*{file_ending}") if p.is_file())


def _configuration(
    folder: Path,
    kind: str,
    *,
    reference: Path | None,
    dataset_json_file: Path | None,
    folds: Sequence[str] | None,
    all_pairs: bool,
    problems: _Problems,
    notes: list[str],
) -> Configuration | None:
    """Read one trainer or prediction folder; None (with problems added) if it cannot be used."""
    dj_file = dataset_json_file or folder / "dataset.json"
    if dataset_json_file is None and not dj_file.is_file():
        how = "a trainer folder holds the dataset.json nnU-Net copied there" if kind == "trainer" else "pass it"
        problems.add(f"{folder}: no dataset.json ({how}; or pass --dataset-json FILE)")
        return None
    dataset_json = _load_json(dj_file, problems, "--dataset-json")
    if dataset_json is None:
        return None
    try:
        classes, ignore_label = dataset_classes(dataset_json)
    except ReportError as error:
        problems.add(f"{dj_file}: {error}")
        return None
    file_ending = dataset_json.get("file_ending")
    if not isinstance(file_ending, str) or not file_ending:
        problems.add(f"{dj_file}: no 'file_ending' (e.g. \".nii.gz\")")
        return None
    manifest = None
    if not all_pairs:
        try:
            manifest = load_manifest(dataset_json)
        except ManifestError as error:
            problems.add(f"{dj_file}: {error}")
            return None
    plans = _load_json(folder / "plans.json", problems, "") if (folder / "plans.json").is_file() else None
    dataset = _dataset_name(folder, kind, plans, dataset_json, dj_file)

    predictions: dict[str, tuple[str, Path]] = {}
    if kind == "trainer":
        fold_dirs = _fold_dirs(folder)
        if folds is not None:
            wanted = {f"fold_{f}" for f in folds}
            absent = sorted(wanted - {p.name for p in fold_dirs})
            if absent:
                problems.add(f"{folder}: no {', '.join(absent)} (folds there: {', '.join(p.name for p in fold_dirs)})")
            fold_dirs = [p for p in fold_dirs if p.name in wanted]
        seen: dict[str, list[str]] = {}
        for fold_dir in fold_dirs:
            validation = fold_dir / "validation"
            if not validation.is_dir():
                message = f"{fold_dir}: no validation folder (training not finished?)"
                if folds is not None:
                    problems.add(message + "; leave the fold out of --folds")
                else:
                    notes.append(message + "; fold skipped")
                continue
            fold = fold_dir.name[len("fold_") :]
            for path in _prediction_files(validation, file_ending):
                case = path.name[: -len(file_ending)]
                seen.setdefault(case, []).append(fold_dir.name)
                predictions.setdefault(case, (fold, path))
        twice = [f"{case} ({', '.join(where)})" for case, where in sorted(seen.items()) if len(where) > 1]
        if twice:
            problems.add(
                f"{folder}: cases validated in more than one fold: {_listed(twice)}; pick disjoint folds with "
                "--folds (e.g. --folds 0 1 2 3 4 for the cross-validation, or --folds all)"
            )
        if not predictions and not twice:
            problems.add(f"{folder}: no validation predictions (fold_*/validation/*{file_ending}); has training ended?")
        reference_dir = reference
        if reference_dir is None:
            preprocessed = os.environ.get("nnUNet_preprocessed")
            if not preprocessed:
                problems.add(
                    f"{folder}: nnUNet_preprocessed is not set, so {dataset}/gt_segmentations (the references of "
                    "nnU-Net's validation) cannot be found; set it or pass --reference DIR"
                )
                return None
            reference_dir = Path(preprocessed) / dataset / "gt_segmentations"
    else:
        for path in _prediction_files(folder, file_ending):
            predictions[path.name[: -len(file_ending)]] = ("", path)
        if not predictions:
            problems.add(
                f"{folder}: no predictions (*{file_ending}); expected a trainer folder (fold_*/validation), a "
                "dataset folder of trainer folders, or a folder of predictions"
            )
            return None
        if reference is None:
            problems.add(f"{folder}: a folder of predictions needs --reference DIR (the reference segmentations)")
            return None
        reference_dir = reference
    if not reference_dir.is_dir():
        problems.add(f"{folder}: reference folder {reference_dir} does not exist; pass --reference DIR")
        return None
    missing = sorted(case for case in predictions if not (reference_dir / f"{case}{file_ending}").is_file())
    if missing:
        problems.add(
            f"{folder}: no reference in {reference_dir} for {len(missing)} prediction(s): "
            f"{_listed([m + file_ending for m in missing])}; pass --reference DIR with the reference "
            f"segmentations named <case>{file_ending}"
        )
    example = next((reference_dir / f"{c}{file_ending}" for c in predictions if c not in missing), None)
    reader = _reader_class(plans, dataset_json, example, folder, problems)
    if reader is None:
        return None
    return Configuration(
        dataset=dataset,
        folder=folder,
        kind=kind,
        dataset_json_file=dj_file,
        classes=classes,
        ignore_label=ignore_label,
        file_ending=file_ending,
        reference_dir=reference_dir,
        reader=reader,
        manifest=manifest,
        predictions={c: v for c, v in predictions.items() if c not in missing},
    )


def discover(
    results_dirs: Iterable[str | os.PathLike],
    *,
    reference: str | os.PathLike | None = None,
    dataset_json: str | os.PathLike | None = None,
    folds: Sequence[int | str] | None = None,
    all_pairs: bool = False,
) -> tuple[list[Configuration], list[str], list[str]]:
    """Find the configurations in the RESULTS_DIRs; returns them, the problems and notes."""
    problems = _Problems()
    notes: list[str] = []
    reference_dir = Path(reference) if reference is not None else None
    dataset_json_file = Path(dataset_json) if dataset_json is not None else None
    if dataset_json_file is not None and not dataset_json_file.is_file():
        problems.add(f"--dataset-json {dataset_json_file}: no such file")
        return [], problems.items, notes
    fold_names = [str(f) for f in folds] if folds is not None else None
    folders: list[tuple[Path, str]] = []
    for given in results_dirs:
        path = Path(given)
        if not path.is_dir():
            problems.add(f"{path}: no such folder")
        elif _fold_dirs(path):
            folders.append((path, "trainer"))
        elif trainers := [p for p in sorted(path.iterdir()) if p.is_dir() and _fold_dirs(p)]:
            folders.extend((p, "trainer") for p in trainers)
            others = [p.name for p in sorted(path.iterdir()) if p.is_dir() and p not in trainers]
            if others:
                notes.append(f"{path}: skipped {', '.join(others)} (no fold_* folders: not trainer folders)")
        else:
            folders.append((path, "predictions"))
    configurations, seen = [], set()
    for folder, kind in folders:
        key = folder.resolve()
        if key in seen:
            notes.append(f"{folder}: given twice; reported once")
            continue
        seen.add(key)
        configuration = _configuration(
            folder,
            kind,
            reference=reference_dir,
            dataset_json_file=dataset_json_file,
            folds=fold_names,
            all_pairs=all_pairs,
            problems=problems,
            notes=notes,
        )
        if configuration is not None:
            configurations.append(configuration)
    _name_configurations(configurations)
    return configurations, problems.items, notes


def _name_configurations(configurations: list[Configuration]) -> None:
    by_dataset: dict[str, list[Configuration]] = {}
    for configuration in configurations:
        by_dataset.setdefault(configuration.dataset, []).append(configuration)
    for group in by_dataset.values():
        trainers = [c.folder.name.split("__")[0] for c in group if c.kind == "trainer"]
        names = []
        for configuration in group:
            trainer = configuration.folder.name.split("__")[0]
            short = configuration.kind == "trainer" and trainers.count(trainer) == 1
            names.append(trainer if short else configuration.folder.name)
        # equal folder names in different places: name them by their parent folder too
        names = [f"{c.folder.parent.name}/{n}" if names.count(n) > 1 else n for c, n in zip(group, names)]
        for i, (configuration, name) in enumerate(zip(group, names)):
            configuration.name = name if names.count(name) == 1 else f"{name} ({names[: i + 1].count(name)})"


# --- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CaseJob:
    reference: Path
    prediction: Path
    reader: type
    classes: tuple[SegmentationClass, ...]
    ignore_label: int | None


def _measure(job: _CaseJob) -> tuple[list[CaseMetrics] | None, str | None]:
    """Read one (reference, prediction) pair and measure it; a problem string instead of raising."""
    reader = job.reader()
    try:
        reference, reference_properties = reader.read_seg(str(job.reference))
        prediction, prediction_properties = reader.read_seg(str(job.prediction))
    except Exception as error:  # any reader failure becomes one listed problem
        return None, f"cannot read {job.prediction} or {job.reference}: {error}"
    if reference.shape != prediction.shape:
        return None, (
            f"{job.prediction}: shape {tuple(prediction.shape[1:])} but its reference {job.reference} has "
            f"{tuple(reference.shape[1:])}; predictions must be at the reference's resolution (nnU-Net's exported "
            "predictions are) and the reference folder must be the one of this dataset"
        )
    spacing = np.asarray(reference_properties.get("spacing", ()), dtype=float)
    predicted_spacing = np.asarray(prediction_properties.get("spacing", ()), dtype=float)
    if spacing.shape != predicted_spacing.shape or not np.allclose(spacing, predicted_spacing, rtol=1e-3):
        return None, (
            f"{job.prediction}: spacing {predicted_spacing.tolist()} but its reference {job.reference} has "
            f"{spacing.tolist()}; the prediction was not made for this reference image"
        )
    try:
        metrics = case_metrics(
            reference,
            prediction,
            job.classes,
            ignore_label=job.ignore_label,
            voxel_ml=voxel_volume_ml(spacing, reference.shape),
        )
    except ValueError as error:
        return None, f"{job.prediction} vs {job.reference}: {error}"
    return metrics, None


def _measure_all(
    jobs: list[_CaseJob], workers: int, notes: list[str]
) -> list[tuple[list[CaseMetrics] | None, str | None]]:
    from tqdm.auto import tqdm

    progress = {
        "total": len(jobs),
        "desc": "measuring cases",
        "unit": "case",
        "disable": True if len(jobs) < 16 else None,
    }
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        # processes, not threads: reading (SimpleITK, gzip) holds the GIL. spawn, as nnU-Net's own
        # evaluator: forking a process that may hold threads (BLAS, torch) can deadlock
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
                return list(tqdm(pool.map(_measure, jobs), **progress))
        except BrokenProcessPool:
            # spawned workers re-import the caller's main module, which fails for code read from stdin and
            # for scripts without an `if __name__ == "__main__":` guard; the report is still wanted
            notes.append("worker processes could not start (see the traceback above); cases were read in one process")
    return [_measure(job) for job in tqdm(jobs, **progress)]


def _per_case_rows(
    configurations: list[Configuration], workers: int, problems: _Problems, notes: list[str]
) -> list[dict]:
    jobs, owners = [], []
    for configuration in configurations:
        for case in sorted(configuration.predictions):
            fold, prediction = configuration.predictions[case]
            jobs.append(
                _CaseJob(
                    configuration.reference_dir / f"{case}{configuration.file_ending}",
                    prediction,
                    configuration.reader,
                    tuple(configuration.classes),
                    configuration.ignore_label,
                )
            )
            owners.append((configuration, case, fold))
    rows = []
    for job, (configuration, case, fold), (metrics, problem) in zip(jobs, owners, _measure_all(jobs, workers, notes)):
        if problem is not None:
            problems.add(problem)
            continue
        for segmentation_class, m in zip(configuration.classes, metrics):
            rows.append(
                {
                    "dataset": configuration.dataset,
                    "configuration": configuration.name,
                    "case": case,
                    "fold": fold,
                    "class": segmentation_class.name,
                    "label": segmentation_class.label,
                    "annotated": configuration.annotated(case, segmentation_class),
                    "reference_empty": m.reference_voxels == 0,
                    "prediction_empty": m.predicted_voxels == 0,
                    "dsc": m.dsc,
                    "reference_ml": m.reference_ml,
                    "predicted_ml": m.predicted_ml,
                    "delta_ml": m.delta_ml,
                    "reference_voxels": m.reference_voxels,
                    "predicted_voxels": m.predicted_voxels,
                    "overlap_voxels": m.overlap_voxels,
                    "voxel_ml": m.voxel_ml,
                    "prediction_file": str(job.prediction),
                    "reference_file": str(job.reference),
                }
            )
    return rows


# --- statistics -------------------------------------------------------------------------------

PER_CASE_COLUMNS = (
    "dataset",
    "configuration",
    "case",
    "fold",
    "class",
    "label",
    "annotated",
    "reference_empty",
    "prediction_empty",
    "dsc",
    "reference_ml",
    "predicted_ml",
    "delta_ml",
    "reference_voxels",
    "predicted_voxels",
    "overlap_voxels",
    "voxel_ml",
    "prediction_file",
    "reference_file",
)
SUMMARY_COLUMNS = (
    "dataset",
    "class",
    "label",
    "configuration",
    "n",
    "n_unannotated",
    "n_empty_reference",
    "n_empty_prediction",
    "dsc_mean",
    "dsc_std",
    "dsc_nonempty_reference_mean",
    "dsc_nnunet_mean",
    "reference_ml_mean",
    "predicted_ml_mean",
    "delta_ml_mean",
    "abs_delta_ml_mean",
    "auc",
    "auc_note",
)
PAIRWISE_COLUMNS = (
    "dataset",
    "class",
    "metric",
    "configuration_a",
    "configuration_b",
    "n_common",
    "mean_a",
    "mean_b",
    "mean_difference",
    "ci_low",
    "ci_high",
    "p_value",
    "n_resamples",
    "seed",
    "note",
)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def detection_auc(reference_empty: np.ndarray, predicted_ml: np.ndarray) -> tuple[float, str]:
    """AUC of the predicted volume as a score for "the reference is not empty"; NaN and why when undefined."""
    from sklearn.metrics import roc_auc_score

    present = ~np.asarray(reference_empty, dtype=bool)
    if present.size == 0:
        return math.nan, "no annotated cases"
    if present.all():
        return math.nan, "undefined: no annotated case has an empty reference"
    if not present.any():
        return math.nan, "undefined: every annotated reference is empty"
    return float(roc_auc_score(present, np.asarray(predicted_ml, dtype=float))), ""


def _groups(per_case: pd.DataFrame):
    """(dataset, class, configuration, rows) in the order of the inputs and of dataset.json's labels."""
    for dataset in dict.fromkeys(per_case["dataset"]):
        in_dataset = per_case[per_case["dataset"] == dataset]
        for name in dict.fromkeys(in_dataset["class"]):
            of_class = in_dataset[in_dataset["class"] == name]
            for configuration in dict.fromkeys(of_class["configuration"]):
                yield dataset, name, configuration, of_class[of_class["configuration"] == configuration]


def summarize(per_case: pd.DataFrame) -> pd.DataFrame:
    """Summary per (dataset, class, configuration) over annotated pairs; see the module docstring."""
    import pandas as pd

    rows = []
    for dataset, name, configuration, group in _groups(per_case):
        used = group[group["annotated"]]
        dsc = used["dsc"].to_numpy(float)
        empty_reference = used["reference_empty"].to_numpy(bool)
        empty_prediction = used["prediction_empty"].to_numpy(bool)
        auc, auc_note = detection_auc(empty_reference, used["predicted_ml"].to_numpy(float))
        rows.append(
            {
                "dataset": dataset,
                "class": name,
                "label": group["label"].iloc[0],
                "configuration": configuration,
                "n": len(used),
                "n_unannotated": int((~group["annotated"]).sum()),
                "n_empty_reference": int(empty_reference.sum()),
                "n_empty_prediction": int(empty_prediction.sum()),
                "dsc_mean": _mean(dsc),
                "dsc_std": float(np.std(dsc, ddof=1)) if len(dsc) > 1 else math.nan,
                "dsc_nonempty_reference_mean": _mean(dsc[~empty_reference]),
                "dsc_nnunet_mean": _mean(dsc[~(empty_reference & empty_prediction)]),
                "reference_ml_mean": _mean(used["reference_ml"].to_numpy(float)),
                "predicted_ml_mean": _mean(used["predicted_ml"].to_numpy(float)),
                "delta_ml_mean": _mean(used["delta_ml"].to_numpy(float)),
                "abs_delta_ml_mean": _mean(np.abs(used["delta_ml"].to_numpy(float))),
                "auc": auc,
                "auc_note": auc_note,
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def compare_pairwise(per_case: pd.DataFrame, *, n_resamples: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap between every two configurations of a dataset, per class and metric."""
    import pandas as pd

    rows = []
    for (dataset, name), group in per_case.groupby(["dataset", "class"], sort=False):
        names = list(dict.fromkeys(group["configuration"]))
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                a = group[(group["configuration"] == first) & group["annotated"]].set_index("case")
                b = group[(group["configuration"] == second) & group["annotated"]].set_index("case")
                common = sorted(set(a.index) & set(b.index))
                for metric in METRICS:
                    result = paired_bootstrap(
                        a.loc[common, metric].to_numpy(float),
                        b.loc[common, metric].to_numpy(float),
                        n_resamples=n_resamples,
                        seed=seed,
                    )
                    rows.append(
                        {
                            "dataset": dataset,
                            "class": name,
                            "metric": metric,
                            "configuration_a": first,
                            "configuration_b": second,
                            "n_common": result.n,
                            "mean_a": result.mean_a,
                            "mean_b": result.mean_b,
                            "mean_difference": result.mean_difference,
                            "ci_low": result.ci_low,
                            "ci_high": result.ci_high,
                            "p_value": result.p_value,
                            "n_resamples": n_resamples,
                            "seed": seed,
                            "note": result.note,
                        }
                    )
    return pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS))


# --- Markdown and figures ---------------------------------------------------------------------


def _number(value: float, digits: str = ".3f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, digits)


def _p(value: float, n_resamples: int) -> str:
    if math.isnan(value):
        return "–"
    return f"< {1 / n_resamples:.0e}" if value == 0 else f"{value:.3g}"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    def line(cells: Iterable[object]) -> str:
        # a "|" inside a cell (|ΔV|) would end the cell
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


CONVENTIONS = """\
- **DSC** = 2|Y ∩ Ŷ| / (|Y| + |Ŷ|) per case and class. **Empty reference and empty prediction → DSC = 1**
  (a correctly predicted empty map; nnU-Net's evaluator gives NaN there and leaves the case out of its mean);
  empty reference and non-empty prediction → 0; non-empty reference and empty prediction → 0.
  *DSC* is the mean over all annotated cases (± sample standard deviation), *DSC non-empty ref.* the mean over
  cases with a non-empty reference, *DSC nnU-Net* the mean over cases where nnU-Net's DSC is defined (not both
  empty), which is the number in nnU-Net's `summary.json`.
- **ΔV** = predicted − reference volume in ml, from the reference image's voxel spacing (2D images: 1 mm thick).
  Reference voxels with the ignore label are left out of the DSC and of both volumes, as in nnU-Net.
- **Partial labels**: (case, class) pairs that the dataset.json manifest (`dicephi_partial_labels`) marks as
  not annotated are left out of every statistic and counted as *unannotated*; they stay in `per_case.csv` with
  `annotated = False`.
- **AUC**: ROC of the predicted volume as a score for detecting a non-empty reference (the paper's Fig. 2); only
  defined when the annotated cases include both empty and non-empty references.
- **p**: paired non-parametric bootstrap over the cases both configurations have (annotated in both): the mean
  of the differences a − b is resampled ({n_resamples} resamples, seed {seed}); p = min(1, 2 min(P(m* ≤ 0),
  P(m* ≥ 0))) over the bootstrap distribution of the mean difference m*, with the 95 % percentile interval.
"""


def markdown_report(
    configurations: Sequence[Configuration],
    summary: pd.DataFrame,
    pairwise: pd.DataFrame,
    *,
    n_resamples: int,
    seed: int,
    notes: Sequence[str] = (),
    figures: dict[str, list[tuple[str, str]]] | None = None,
) -> str:
    """The report: inputs, conventions, and per dataset and class the summary and pairwise tables."""
    lines = ["# nnunet-dicephi report", "", "## Inputs", ""]
    lines += _table(
        ("configuration", "dataset", "folder", "folds", "cases", "references"),
        (
            (
                c.name,
                c.dataset,
                f"`{c.folder}`",
                ", ".join(sorted({fold for fold, _ in c.predictions.values()})) or "–",
                len(c.predictions),
                f"`{c.reference_dir}`",
            )
            for c in configurations
        ),
    )
    lines += ["", "## Conventions", "", CONVENTIONS.format(n_resamples=n_resamples, seed=seed)]
    for dataset in dict.fromkeys(summary["dataset"]):
        lines += [f"## {dataset}", ""]
        dataset_summary = summary[summary["dataset"] == dataset]
        for name in dict.fromkeys(dataset_summary["class"]):
            rows = dataset_summary[dataset_summary["class"] == name]
            lines += [f"### {name} (label {rows['label'].iloc[0]})", ""]
            lines += _table(
                (
                    "configuration",
                    "n",
                    "unannotated",
                    "empty ref.",
                    "DSC",
                    "DSC non-empty ref.",
                    "DSC nnU-Net",
                    "ΔV [ml]",
                    "|ΔV| [ml]",
                    "AUC",
                ),
                (
                    (
                        r.configuration,
                        r.n,
                        r.n_unannotated,
                        r.n_empty_reference,
                        f"{_number(r.dsc_mean)} ± {_number(r.dsc_std)}",
                        _number(r.dsc_nonempty_reference_mean),
                        _number(r.dsc_nnunet_mean),
                        _number(r.delta_ml_mean, ".4g"),
                        _number(r.abs_delta_ml_mean, ".4g"),
                        _number(r.auc),
                    )
                    for r in rows.itertuples()
                ),
            )
            reasons = {r.auc_note for r in rows.itertuples() if r.auc_note}
            lines += [""] + [f"AUC {reason}." for reason in sorted(reasons)] + ([""] if reasons else [])
            pairs = pairwise[(pairwise["dataset"] == dataset) & (pairwise["class"] == name)]
            if len(pairs):
                lines += _table(
                    ("a", "b", "metric", "n", "mean a", "mean b", "a − b [95 % CI]", "p"),
                    (
                        (
                            r.configuration_a,
                            r.configuration_b,
                            METRICS[r.metric],
                            r.n_common,
                            _number(r.mean_a, ".4g"),
                            _number(r.mean_b, ".4g"),
                            f"{_number(r.mean_difference, '.4g')} [{_number(r.ci_low, '.4g')}, "
                            f"{_number(r.ci_high, '.4g')}]" + (f" ({r.note})" if r.note else ""),
                            _p(r.p_value, n_resamples),
                        )
                        for r in pairs.itertuples()
                    ),
                )
                lines.append("")
        for title, file in (figures or {}).get(dataset, []):
            lines += [f"![{title}]({file})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines).rstrip() + "\n"


def _grid(n: int):
    from matplotlib.figure import Figure

    columns = min(n, 4)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(4.2 * columns, 3.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return figure, axes


def _distribution_figure(per_case: pd.DataFrame, dataset: str, metric: str, ylabel: str, path: Path) -> None:
    data = per_case[(per_case["dataset"] == dataset) & per_case["annotated"]]
    classes = list(dict.fromkeys(per_case.loc[per_case["dataset"] == dataset, "class"]))
    configurations = list(dict.fromkeys(per_case.loc[per_case["dataset"] == dataset, "configuration"]))
    figure, axes = _grid(len(classes))
    jitter = np.random.default_rng(0)
    for ax, name in zip(axes, classes):
        values = [
            data[(data["class"] == name) & (data["configuration"] == c)][metric].to_numpy(float) for c in configurations
        ]
        positions = [i for i, v in enumerate(values) if len(v)]
        if positions:
            ax.boxplot(
                [values[i] for i in positions], positions=positions, widths=0.5, showfliers=False, showmeans=True
            )
            for i in positions:
                ax.plot(i + jitter.uniform(-0.15, 0.15, len(values[i])), values[i], ".", alpha=0.5, color="C0")
        else:
            ax.text(0.5, 0.5, "no annotated cases", ha="center", va="center", transform=ax.transAxes)
        if metric == "delta_ml":
            ax.axhline(0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(configurations)), configurations, rotation=30, ha="right")
        ax.set_title(name)
        ax.set_ylabel(ylabel)
    figure.suptitle(dataset)
    figure.savefig(path, dpi=120)


def _roc_figure(per_case: pd.DataFrame, summary: pd.DataFrame, dataset: str, path: Path) -> None:
    from sklearn.metrics import roc_curve

    data = per_case[(per_case["dataset"] == dataset) & per_case["annotated"]]
    rows = summary[summary["dataset"] == dataset]
    classes = list(dict.fromkeys(rows["class"]))
    figure, axes = _grid(len(classes))
    for ax, name in zip(axes, classes):
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
        undefined = []
        for r in rows[rows["class"] == name].itertuples():
            if math.isnan(r.auc):
                undefined.append(f"{r.configuration}: AUC {r.auc_note}")
                continue
            cases = data[(data["class"] == name) & (data["configuration"] == r.configuration)]
            fpr, tpr, _ = roc_curve(~cases["reference_empty"].to_numpy(bool), cases["predicted_ml"].to_numpy(float))
            ax.plot(fpr, tpr, label=f"{r.configuration} (AUC {r.auc:.3f})")
        if undefined:
            ax.text(0.5, 0.5, "\n".join(undefined), ha="center", va="center", fontsize=7, wrap=True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="1 − specificity", ylabel="sensitivity")
        ax.set_title(f"{name}: detection by predicted volume")
    figure.suptitle(dataset)
    figure.savefig(path, dpi=120)


def write_figures(per_case: pd.DataFrame, summary: pd.DataFrame, folder: Path) -> dict[str, list[tuple[str, str]]]:
    """The PNG figures of every dataset; returns (title, file name) per dataset."""
    figures = {}
    for dataset in dict.fromkeys(per_case["dataset"]):
        safe = _safe(dataset)
        made = [
            ("DSC per class and configuration", f"dsc_{safe}.png"),
            ("ΔV per class and configuration", f"delta_volume_{safe}.png"),
            ("ROC of the predicted volume for detecting each class", f"roc_{safe}.png"),
        ]
        _distribution_figure(per_case, dataset, "dsc", "DSC", folder / made[0][1])
        _distribution_figure(per_case, dataset, "delta_ml", "ΔV [ml]", folder / made[1][1])
        _roc_figure(per_case, summary, dataset, folder / made[2][1])
        figures[dataset] = made
    return figures


# --- output folder ----------------------------------------------------------------------------


def _check_output(output: Path, force: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ReportError(f"output {output} exists and is not a folder; choose another -o/--output")
    if output.is_dir() and any(output.iterdir()):
        if not force:
            raise ReportError(f"output folder {output} exists and is not empty; pass --force to replace it")
        # --force replaces earlier reports only, never a folder of something else given by mistake
        if not (output / "report.md").is_file():
            raise ReportError(
                f"output folder {output} holds no report.md, so it is not an earlier report; --force only "
                "replaces earlier reports: choose another -o/--output"
            )


def _publish(staging: Path, output: Path, force: bool) -> None:
    """Move the finished folder into place; with force, the old report goes only once the new one is there."""
    from nnunet_dicephi._files import replace_folder

    _check_output(output, force)
    replace_folder(staging, output)


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """The tables of a report and where it was written."""

    output: Path
    configurations: tuple[Configuration, ...]
    per_case: pd.DataFrame
    summary: pd.DataFrame
    pairwise: pd.DataFrame
    notes: tuple[str, ...]
    files: tuple[str, ...]
    """File names inside ``output``."""


def build_report(
    results_dirs: Sequence[str | os.PathLike],
    output: str | os.PathLike = DEFAULT_OUTPUT,
    *,
    reference: str | os.PathLike | None = None,
    dataset_json: str | os.PathLike | None = None,
    folds: Sequence[int | str] | None = None,
    n_resamples: int = 10000,
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    all_pairs: bool = False,
) -> Report:
    """Measure every configuration in ``results_dirs`` and write the report to ``output``.

    Args:
        results_dirs: trainer folders, dataset folders of nnUNet_results, or prediction folders.
        output: the report folder; written whole or not at all.
        reference: folder of reference segmentations (default for trainer folders: nnU-Net's
            ``$nnUNet_preprocessed/<dataset>/gt_segmentations``; required for prediction folders).
        dataset_json: a dataset.json to use instead of the folders' own (labels, file ending, manifest).
        folds: folds to pool (e.g. ``[0, 1, 2, 3, 4]`` or ``["all"]``); default: every fold found.
        n_resamples: bootstrap resamples per test.
        seed: seed of every bootstrap.
        workers: processes reading cases (default: min(4, CPU count)); 1 reads in this process. Workers
            are spawned, as in nnU-Net: a calling script needs an ``if __name__ == "__main__":`` guard
            (without one the cases are read in this process, with a note).
        force: replace an existing report in ``output``.
        all_pairs: disregard the partial-label manifest (for fully labelled references).

    Returns:
        The tables and the files written.

    Raises:
        ReportError: naming every offending file or folder at once (missing references, shape
            mismatches, folders without predictions, an output folder in the way, ...).
    """
    import pandas as pd

    output = Path(output)
    if n_resamples < 1:
        raise ReportError(f"--n-resamples must be at least 1, got {n_resamples}")
    if not results_dirs:
        raise ReportError("no RESULTS_DIR given")
    _check_output(output, force)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    configurations, found, notes = discover(
        results_dirs, reference=reference, dataset_json=dataset_json, folds=folds, all_pairs=all_pairs
    )
    problems = _Problems()
    problems.items.extend(found)
    # measure whatever can be measured even when some inputs are broken, so that one error names
    # every missing reference and every mismatch at once
    rows = _per_case_rows(configurations, workers, problems, notes)
    problems.raise_if_any()
    per_case = pd.DataFrame(rows, columns=list(PER_CASE_COLUMNS))
    summary = summarize(per_case)
    pairwise = compare_pairwise(per_case, n_resamples=n_resamples, seed=seed)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(output)
    try:
        write_text_atomically(staging / "per_case.csv", per_case.to_csv(index=False))
        write_text_atomically(staging / "summary.csv", summary.to_csv(index=False))
        write_text_atomically(staging / "pairwise.csv", pairwise.to_csv(index=False))
        figures = write_figures(per_case, summary, staging)
        markdown = markdown_report(
            configurations, summary, pairwise, n_resamples=n_resamples, seed=seed, notes=notes, figures=figures
        )
        write_text_atomically(staging / "report.md", markdown)
        files = tuple(sorted(p.name for p in staging.iterdir()))
        _publish(staging, output, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Report(output, tuple(configurations), per_case, summary, pairwise, tuple(notes), files)


# --- command line -----------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(verbs: Any) -> None:
    """Add the ``report`` verb to the subparsers object of the ``nnunet-dicephi`` command."""
    parser = verbs.add_parser(
        "report",
        help="DSC, volume difference, detection ROC and bootstrap p-values over nnU-Net results folders",
        description="Reads nnU-Net results (trainer folders with fold_*/validation, dataset folders of "
        "nnUNet_results, or folders of predictions) and their references, and writes per class and "
        "configuration the mean DSC, the volume difference in ml, the ROC/AUC of the predicted volume for "
        "detecting the class, and paired bootstrap p-values between configurations: per_case.csv, summary.csv, "
        "pairwise.csv, report.md and PNG figures. Empty reference and empty prediction count as DSC 1; pairs "
        "that the dataset.json's partial-label manifest marks as unannotated are left out. Exit status 2 when "
        "the inputs cannot be reported on.",
    )
    parser.add_argument(
        "results_dirs",
        nargs="+",
        metavar="RESULTS_DIR",
        help="nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<Configuration>, nnUNet_results/DatasetXXX_Name "
        "(every trainer folder in it), or a folder of predictions (needs --reference)",
    )
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help=f"report folder (default: ./{DEFAULT_OUTPUT})")
    parser.add_argument(
        "--reference",
        metavar="DIR",
        help="reference segmentations <case><file_ending> (default for trainer folders: "
        "$nnUNet_preprocessed/<dataset>/gt_segmentations, as nnU-Net's validation)",
    )
    parser.add_argument(
        "--dataset-json",
        metavar="FILE",
        help="dataset.json with labels, file ending and partial-label manifest (default: the folder's own)",
    )
    parser.add_argument(
        "--folds", nargs="+", metavar="FOLD", help="folds to pool, e.g. 0 1 2 3 4 or all (default: every fold)"
    )
    parser.add_argument(
        "--all-pairs",
        action="store_true",
        help="disregard the partial-label manifest: every (case, class) pair counts (for fully labelled references)",
    )
    parser.add_argument(
        "--n-resamples",
        type=_positive,
        default=10000,
        metavar="N",
        help="bootstrap resamples per test (default: 10000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    parser.add_argument(
        "-j", "--workers", type=_positive, metavar="N", help="processes reading cases (default: min(4, number of CPUs))"
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier report in the output folder")
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    """The ``report`` verb: build the report, print a short summary; 2 when the inputs are unusable."""
    try:
        report = build_report(
            args.results_dirs,
            args.output,
            reference=args.reference,
            dataset_json=args.dataset_json,
            folds=args.folds,
            n_resamples=args.n_resamples,
            seed=args.seed,
            workers=args.workers,
            force=args.force,
            all_pairs=args.all_pairs,
        )
    except ReportError as error:
        print(f"nnunet-dicephi report: error: {error}", file=sys.stderr)
        return 2
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for r in report.summary.to_dict("records"):
        print(
            f"{r['dataset']}  {r['class']}  {r['configuration']}: n={r['n']}  DSC {_number(r['dsc_mean'])}  "
            f"ΔV {_number(r['delta_ml_mean'], '.4g')} ml  AUC {_number(r['auc'])}"
        )
    print(f"report written to {report.output / 'report.md'}")
    return 0
