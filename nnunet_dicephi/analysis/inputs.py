"""What the report reads: results folders, their configurations, predictions and references."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nnunet_dicephi._nnunet_names import parse_results_folder_name
from nnunet_dicephi._problems import Problems
from nnunet_dicephi.partial_labels import AnnotationTable, ManifestError, load_manifest

if TYPE_CHECKING:
    pass

from .metrics import ReportError, SegmentationClass, dataset_classes

_MAX_LISTED = 12
"""Offenders named per problem before "and N more"."""


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


def report_problems() -> Problems:
    """Problems collected over the whole run, raised as one ReportError."""
    return Problems("cannot build the report", ReportError)


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _fold_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("fold_*") if p.is_dir())


def _load_json(path: Path, problems: Problems, what: str) -> dict | None:
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


def _reader_class(plans: dict | None, dataset_json: dict, example: Path | None, where: Path, problems: Problems):
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
    problems: Problems,
    notes: list[str],
) -> Configuration | None:
    """Read one trainer or prediction folder; None (with problems added) if it cannot be used."""
    if kind == "trainer" and not any((fold_dir / "validation").is_dir() for fold_dir in _fold_dirs(folder)):
        # e.g. a trainer that was built but never trained: nnU-Net creates fold_<n> and its log at once
        problems.add(
            f"nothing to report in {folder}: no fold has validation results (fold_*/validation); train it to the "
            "end with nnUNetv2_train, or leave it out of the report"
        )
        return None
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
    problems = report_problems()
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
        elif problem := _nothing_to_report(path):
            problems.add(problem)
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


def _nothing_to_report(path: Path) -> str | None:
    """Why a folder that holds no trainer folders cannot be a folder of predictions either; None if it may be."""
    if any(p.is_file() for p in path.iterdir()):
        return None
    datasets = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name.startswith("Dataset"))
    if datasets:  # nnUNet_results itself, say
        return (
            f"nothing to report in {path}: it holds dataset folders ({', '.join(datasets)}), not trainer folders or "
            f"predictions; pass the trainer folders inside, e.g. {path / datasets[0]}/*"
        )
    return (
        f"nothing to report in {path}: no trainer folders (holding fold_*) and no prediction files; pass nnU-Net's "
        "trainer folders (nnUNet_results/Dataset<ID>_<Name>/<trainer>__<plans>__<configuration>) or a folder of "
        "predictions"
    )


def _trainer_of(folder_name: str) -> str:
    """The trainer of a results folder name; a plain folder's own name when it is not one."""
    try:
        return parse_results_folder_name(folder_name).trainer
    except ValueError:
        return folder_name


def _name_configurations(configurations: list[Configuration]) -> None:
    by_dataset: dict[str, list[Configuration]] = {}
    for configuration in configurations:
        by_dataset.setdefault(configuration.dataset, []).append(configuration)
    for group in by_dataset.values():
        trainers = [_trainer_of(c.folder.name) for c in group if c.kind == "trainer"]
        names = []
        for configuration in group:
            trainer = _trainer_of(configuration.folder.name)
            short = configuration.kind == "trainer" and trainers.count(trainer) == 1
            names.append(trainer if short else configuration.folder.name)
        # equal folder names in different places: name them by their parent folder too
        names = [f"{c.folder.parent.name}/{n}" if names.count(n) > 1 else n for c, n in zip(group, names)]
        for i, (configuration, name) in enumerate(zip(group, names)):
            configuration.name = name if names.count(name) == 1 else f"{name} ({names[: i + 1].count(name)})"
