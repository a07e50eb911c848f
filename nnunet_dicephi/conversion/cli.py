"""``nnunet-dicephi convert <dataset>``: the converters and the split installer on the command line.

:func:`add_parser` adds the ``convert`` verb to ``nnunet-dicephi``; :func:`main` is the same command
standing alone (``python -m nnunet_dicephi.conversion``, ``scripts/convert_*.py``). Errors print one
message on stderr and give exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from nnunet_dicephi._cli import add_verb, positive_int, refuse
from nnunet_dicephi.conversion import acdc, brats2018
from nnunet_dicephi.conversion._model import FULL_LABELS_FOLDER, MANIFEST_FILE, ConversionError, ConversionResult
from nnunet_dicephi.conversion.splits import DEFAULT_SEED, install_splits

_VIEW_HELP = (
    "write the scheme's emptied labels WITHOUT a manifest in dataset.json, so that every trainer takes the empty "
    "maps at face value (the empty-label view: the paper's Table 1 setting for TrainerDiceI/BI/IEps). Default: the "
    "missing-label view, whose dataset.json declares the emptied labels as not annotated, so trainers mask them out "
    f"(for marginal/leaf Dice, _CE trainers and evaluation). Both views also write {MANIFEST_FILE} and "
    f"{FULL_LABELS_FOLDER}/ (the labels before the scheme)"
)


_CONVERT = """Convert BraTS 2018, ACDC or WMH 2017 as downloaded into nnU-Net's raw format (+ partial labels).

Converts a public dataset, laid out as downloaded, into $nnUNet_raw/Dataset<ID>_<NAME>, optionally with
a partial-labelling scheme of the MICCAI 2022 paper, and installs grouped splits. The layout is checked
first, geometry and label values per case; every problem is reported at once. Nothing is written
outside nnUNet_raw (install-splits writes to nnUNet_preprocessed), and an interrupted or failed run
leaves no dataset folder behind.
"""


def _common(parser: argparse.ArgumentParser, default_name: str) -> None:
    parser.add_argument("-d", "--dataset-id", type=int, required=True, metavar="ID", help="nnU-Net dataset id, 1-999")
    parser.add_argument(
        "--name",
        help=f"dataset name: letters, digits, '_' and '-' (default: {default_name}); "
        "the dataset is written to $nnUNet_raw/Dataset<ID>_<NAME>",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing dataset folder of the same name")
    parser.add_argument(
        "-j", "--workers", type=positive_int, metavar="N", help="processes converting cases (default: min(4, CPUs))"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_subcommands(parser: argparse.ArgumentParser) -> None:
    datasets = parser.add_subparsers(dest="convert_dataset", required=True, metavar="DATASET")

    brats = add_verb(datasets, "brats2018", _run_brats2018)
    brats.add_argument("source", metavar="SOURCE", help="the MICCAI_BraTS_2018_Data_Training folder")
    _common(brats, "BraTS2018, with the target and scheme appended, e.g. BraTS2018LGGEmpty")
    brats.add_argument(
        "--target",
        choices=brats2018.TARGETS,
        default="whole-tumour",
        help="whole-tumour: one label, BraTS > 0 (the paper; default); classes: 1 edema, 2 non-enhancing/necrotic "
        "core, 3 enhancing (plain labels); regions: the same with nnU-Net's region-based training (whole tumour, "
        "tumour core, enhancing tumour), which cannot carry a manifest",
    )
    brats.add_argument(
        "--scheme", choices=brats2018.SCHEMES, help="lgg-empty: every LGG label replaced by an empty map"
    )
    brats.add_argument("--as-empty", action="store_true", help=_VIEW_HELP)

    acdc_parser = add_verb(datasets, "acdc", _run_acdc)
    acdc_parser.add_argument("source", metavar="SOURCE", help="the ACDC database folder, or its training/ folder")
    _common(acdc_parser, "ACDC, with the scheme appended, e.g. ACDCMyoESEmpty")
    acdc_parser.add_argument(
        "--scheme", choices=acdc.SCHEMES, help="es-myo-empty: the myocardium label removed in every ES frame"
    )
    acdc_parser.add_argument("--as-empty", action="store_true", help=_VIEW_HELP)
    acdc_parser.add_argument(
        "--include-test", action="store_true", help="also convert testing/ (patients 101-150) into imagesTs/labelsTs"
    )
    acdc_parser.add_argument("--folds", type=positive_int, default=5, help="folds of the grouped split (default: 5)")
    acdc_parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"seed of the grouped split (default: {DEFAULT_SEED})"
    )

    wmh = add_verb(datasets, "wmh2017", _run_wmh2017)
    wmh.add_argument("source", metavar="SOURCE", help="the training folder holding the site folders")
    _common(wmh, "WMH2017")

    splits = add_verb(datasets, "install-splits", _run_install_splits)
    splits.add_argument("dataset", metavar="DATASET", help="dataset id or folder name, e.g. 27 or Dataset027_ACDC")
    splits.add_argument("--force", action="store_true", help="replace a different split (retrain its folds!)")


def add_parser(verbs: Any) -> None:
    """Add the ``convert`` verb to the subparsers object of the ``nnunet-dicephi`` command."""
    parser = add_verb(verbs, "convert", None, doc=_CONVERT)
    _add_subcommands(parser)


def main(argv: Sequence[str] | None = None, prog: str = "nnunet-dicephi convert") -> int:
    """The ``convert`` verb as a command of its own; returns the exit status."""
    parser = argparse.ArgumentParser(prog=prog, description="Convert public datasets into nnU-Net's raw format.")
    _add_subcommands(parser)
    args = parser.parse_args(argv)
    return args.func(args)


def _view(args: argparse.Namespace) -> str:
    return "empty" if args.as_empty else "missing"


def _guarded(run):
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ConversionError as error:
            return refuse("convert", error)
        except KeyboardInterrupt:
            print("nnunet-dicephi convert: interrupted; no dataset folder was written", file=sys.stderr)
            return 130

    wrapped.__name__ = run.__name__
    wrapped.__doc__ = run.__doc__
    return wrapped


def _summary(result: ConversionResult, extra: str = "") -> int:
    print(f"wrote {result.folder}: {result.training_cases} training cases", end="")
    print(f", {result.test_cases} test cases" if result.test_cases else "")
    if result.scheme:
        changed = len(result.manifest["cases"]) if result.manifest else 0
        where = "dataset.json and " if result.view == "missing" else ""
        print(
            f"partial labels: scheme {result.scheme}, {result.view}-label view, {changed} cases changed; "
            f"manifest in {where}{MANIFEST_FILE}; unchanged labels in {FULL_LABELS_FOLDER}/"
        )
    print(f"next: nnUNetv2_plan_and_preprocess -d {result.dataset_id} --verify_dataset_integrity{extra}")
    return 0


@_guarded
def _run_brats2018(args: argparse.Namespace) -> int:
    """BraTS 2018 training data (HGG/ and LGG/): whole tumour or multi-class; scheme lgg-empty.

    Converts MICCAI_BraTS_2018_Data_Training (HGG/, LGG/; t1, t1ce, t2, flair, seg per subject) into
    $nnUNet_raw/Dataset<ID>_<NAME>. Case ids are <grade>_<subject>. Exit status 2 when the data or the
    target cannot be used; nothing is written then.
    """
    result = brats2018.convert_brats2018(
        args.source,
        args.dataset_id,
        args.name,
        target=args.target,
        scheme=args.scheme,
        view=_view(args),
        force=args.force,
        workers=args.workers,
        progress=not args.quiet,
    )
    return _summary(result)


@_guarded
def _run_acdc(args: argparse.Namespace) -> int:
    """ACDC (patientXXX/ with Info.cfg, ED/ES frames and _gt): RV, MYO, LV; scheme es-myo-empty; grouped split.

    Converts ACDC (the database folder, or its training/ folder) into $nnUNet_raw/Dataset<ID>_<NAME>:
    one case per ED and ES frame (patient001_ED, patient001_ES), labels RV, MYO, LV, and a
    splits_final.json that keeps both frames of a patient in one fold (install it after planning with
    'nnunet-dicephi convert install-splits ID'). Exit status 2 when the data or the target cannot be
    used.
    """
    result = acdc.convert_acdc(
        args.source,
        args.dataset_id,
        args.name,
        scheme=args.scheme,
        view=_view(args),
        include_test=args.include_test,
        folds=args.folds,
        seed=args.seed,
        force=args.force,
        workers=args.workers,
        progress=not args.quiet,
    )
    return _summary(result, f", then: nnunet-dicephi convert install-splits {result.dataset_id}")


@_guarded
def _run_wmh2017(args: argparse.Namespace) -> int:
    """WMH 2017 training data (site/subject/pre/FLAIR, pre/T1, wmh): WMH and other pathology as classes.

    Converts the WMH Segmentation Challenge 2017 training data (site folders Utrecht, Singapore, GE3T or
    Amsterdam/GE3T; pre/FLAIR.nii.gz, pre/T1.nii.gz, wmh.nii.gz per subject) into
    $nnUNet_raw/Dataset<ID>_<NAME> with labels WMH (1) and other_pathology (2). Case ids are
    <site>_<subject>.
    """
    from nnunet_dicephi.conversion import wmh2017

    result = wmh2017.convert_wmh2017(
        args.source, args.dataset_id, args.name, force=args.force, workers=args.workers, progress=not args.quiet
    )
    return _summary(result)


@_guarded
def _run_install_splits(args: argparse.Namespace) -> int:
    """Copy a converted dataset's grouped splits_final.json into nnUNet_preprocessed (after planning).

    Copies $nnUNet_raw/<dataset>/splits_final.json to $nnUNet_preprocessed/<dataset>/, where
    nnUNetv2_train reads it. Run after nnUNetv2_plan_and_preprocess, before training. nnU-Net's planner
    copies it too when the preprocessed folder has none; then this confirms it. A different split
    already there (drawn by nnU-Net when training started earlier) is an error unless --force.
    """
    path, status = install_splits(args.dataset, force=args.force)
    print(f"{status}: {path}")
    return 0
