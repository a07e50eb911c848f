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

The parts live beside this verb: :mod:`.metrics` (classes and per-case metrics), :mod:`.inputs`
(results folders and their configurations), :mod:`.comparison` (summaries, bootstrap, AUC),
:mod:`.rendering` (Markdown and figures); this module measures the cases, assembles the report and
publishes its folder. Only the standard library and numpy are imported with these modules;
nnU-Net, SimpleITK, scipy, scikit-learn, pandas and matplotlib are imported where they are used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from nnunet_dicephi._files import staging_folder, write_text_atomically

if TYPE_CHECKING:
    import pandas as pd

from nnunet_dicephi._cli import add_verb, positive_int, refuse
from nnunet_dicephi._problems import Problems

from .comparison import (  # noqa: F401 - the report's public API
    PER_CASE_COLUMNS,
    PairedComparison,
    compare_pairwise,
    detection_auc,
    paired_bootstrap,
    summarize,
)
from .inputs import Configuration, discover, report_problems
from .metrics import (  # noqa: F401
    METRICS,
    CaseMetrics,
    ReportError,
    SegmentationClass,
    case_metrics,
    confusion_counts,
    dataset_classes,
    voxel_volume_ml,
)
from .rendering import _number, markdown_report, write_figures
from .transition import transition

DEFAULT_OUTPUT = "dicephi_report"


# --- measuring --------------------------------------------------------------------------------


class _CaseJob(NamedTuple):
    """One (reference, prediction) pair for a worker process."""

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
    from nnunet_dicephi._parallel import map_cases

    results, fell_back = map_cases(
        _measure, jobs, workers=workers, desc="measuring cases", disable_progress=True if len(jobs) < 16 else None
    )
    if fell_back:
        notes.append("worker processes could not start (see the traceback above); cases were read in one process")
    return results


def _per_case_rows(
    configurations: list[Configuration], workers: int, problems: Problems, notes: list[str]
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
                    "jaccard": m.jaccard,
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


# --- output folder ----------------------------------------------------------------------------


def _check_output(output: Path, force: bool) -> None:
    from nnunet_dicephi._files import output_folder_problem

    problem = output_folder_problem(output, force=force, marker="report.md", command="nnunet-dicephi report")
    if problem is not None:
        raise ReportError(problem)


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
    problems = report_problems()
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
        sweeps, transition_figures = transition(configurations, summary, staging, notes)
        if not sweeps.empty:
            write_text_atomically(staging / "transition.csv", sweeps.to_csv(index=False))
        for dataset, name in transition_figures:
            figures.setdefault(dataset, []).append(
                ("The measured transition: DSC and ΔV against ε or B, and Eq. 4", name)
            )
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


def add_parser(verbs: Any) -> None:
    """Add the ``report`` verb to the subparsers object of the ``nnunet-dicephi`` command."""
    parser = add_verb(verbs, "report", run_report)
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
        type=positive_int,
        default=10000,
        metavar="N",
        help="bootstrap resamples per test (default: 10000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    parser.add_argument(
        "-j",
        "--workers",
        type=positive_int,
        metavar="N",
        help="processes reading cases (default: min(4, number of CPUs))",
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier report in the output folder")


def run_report(args: argparse.Namespace) -> int:
    """DSC, volume difference, detection ROC and bootstrap p-values over nnU-Net results folders.

    Reads nnU-Net results (trainer folders with fold_*/validation, dataset folders of nnUNet_results,
    or folders of predictions) and their references, and writes per class and configuration the mean
    DSC, the volume difference in ml, the ROC/AUC of the predicted volume for detecting the class, and
    paired bootstrap p-values between configurations: per_case.csv, summary.csv, pairwise.csv,
    report.md and PNG figures. Empty reference and empty prediction count as DSC 1; pairs that the
    dataset.json's partial-label manifest marks as unannotated are left out. Exit status 2 when the
    inputs cannot be reported on.
    """
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
        return refuse("report", error)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for r in report.summary.to_dict("records"):
        print(
            f"{r['dataset']}  {r['class']}  {r['configuration']}: n={r['n']}  DSC {_number(r['dsc_mean'])}  "
            f"ΔV {_number(r['delta_ml_mean'], '.4g')} ml  AUC {_number(r['auc'])}"
        )
    print(f"report written to {report.output / 'report.md'}")
    return 0
