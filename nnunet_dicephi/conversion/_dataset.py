"""Writing a converted dataset: the steps every converter shares, staged and published atomically.

A converter (one module per public dataset) only *finds* its cases — checking the download's layout
and naming every missing or malformed file — and describes its labels; :func:`write_dataset` does the rest:

1. checks the target ``$nnUNet_raw/Dataset<ID>_<Name>`` (name, id collisions, ``--force``; :mod:`._target`);
2. converts every case in a staging folder beside it (``.Dataset<ID>_<Name>.staging-*``), in
   parallel processes (:mod:`._cases`): each image's header is compared with the first channel's and the label's
   (size, spacing, origin, direction), label values are checked against the dataset's allowed set
   and mapped to nnU-Net's consecutive values, and a partial-labelling scheme empties its labels;
3. writes ``dataset.json`` with nnU-Net's own ``generate_dataset_json``, the partial-label manifest,
   the patient-grouped ``splits_final.json`` where the converter has one, and a record of the
   conversion;
4. renames the staging folder into place. Any problem removes the staging folder and raises one
   :class:`ConversionError` naming every offender, so the target either appears complete or not at all.

Only the standard library and numpy are imported with this module; SimpleITK, nnU-Net and tqdm
are imported where they are used.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from nnunet_dicephi._files import staging_folder, write_text_atomically
from nnunet_dicephi.conversion._cases import _CaseOutcome, case_tasks, default_workers, run_tasks
from nnunet_dicephi.conversion._model import (
    FILE_ENDING,
    FULL_LABELS_FOLDER,
    MANIFEST_FILE,
    RECORD_FILE,
    SPLITS_FILE,
    VIEWS,
    ConversionError,
    ConversionResult,
    DatasetSpec,
    Scheme,
    SourceCase,
    View,
    fail,
)
from nnunet_dicephi.conversion._target import move_into_place, prepare_target


def write_dataset(
    spec: DatasetSpec,
    cases: Sequence[SourceCase],
    *,
    source: Path,
    converter: str,
    dataset_id: int,
    name: str,
    scheme: Scheme | None = None,
    view: View = "missing",
    splits: list[dict[str, list[str]]] | None = None,
    force: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert ``cases`` into ``$nnUNet_raw/Dataset<ID>_<Name>``, atomically.

    Args:
        spec: channels and labels of the dataset.
        cases: every case, already checked for presence by the converter.
        source: the download's folder (recorded, and used to shorten paths in messages).
        converter: the converter's CLI name (``brats2018``, ...), recorded.
        dataset_id: nnU-Net dataset id, 1–999.
        name: dataset name (letters, digits, ``_``, ``-``).
        scheme: a partial-labelling scheme applied to the training cases, or None.
        view: ``"missing"`` embeds the scheme's manifest in dataset.json, ``"empty"`` does not.
        splits: ``splits_final.json`` contents to write beside dataset.json, or None.
        force: replace an existing dataset of the same folder name.
        workers: processes converting cases (default: min(4, CPUs)); 1 converts in this process.
        progress: show a progress bar.

    Raises:
        ConversionError: naming every offending file, case or option; nothing is left behind.
    """
    if view not in VIEWS:
        raise ConversionError(f"view must be one of {', '.join(VIEWS)}; got {view!r}")
    if scheme is None and view != "missing":
        raise ConversionError("the empty-label view (--as-empty) needs a partial-labelling scheme (--scheme)")
    if scheme is not None and view == "missing" and spec.has_regions:
        raise ConversionError(
            f"the scheme {scheme.name!r} cannot declare its missing labels on a region-based dataset: a region is a "
            "union of labels, so 'annotated' is not defined per region. Use the empty-label view (--as-empty), whose "
            "dataset.json has no manifest, or plain labels (e.g. --target classes)"
        )
    if workers is not None and workers < 1:
        raise ConversionError(f"workers must be at least 1; got {workers}")
    if not cases:
        raise ConversionError(f"no cases found in {source}")
    duplicates = sorted(case for case, n in Counter(c.case_id for c in cases).items() if n > 1)
    if duplicates:
        raise fail("case ids are not unique", duplicates)
    target = prepare_target(dataset_id, name, force)
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(target)
    try:
        tasks, removed = case_tasks(spec, cases, scheme, source, staging)
        outcomes = run_tasks(tasks, workers or default_workers(), progress, target.name)
        problems = [f"case {o.case_id}: {p}" for o in outcomes for p in o.problems]
        if problems:
            raise fail(f"{spec.title} in {source} cannot be converted", problems)
        manifest = _manifest(spec, removed) if scheme is not None else None
        _write_json_files(spec, cases, outcomes, staging, target, source, converter, scheme, view, manifest, splits)
        _self_check(staging, cases, manifest, spec)
        move_into_place(staging, target, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ConversionResult(
        folder=target,
        training_cases=sum(not c.test for c in cases),
        test_cases=sum(c.test for c in cases),
        scheme=scheme.name if scheme else None,
        view=view if scheme else None,
        manifest=manifest,
        splits_file=target / SPLITS_FILE if splits is not None else None,
    )


def _manifest(spec: DatasetSpec, removed: Mapping[str, tuple[int, ...]]) -> dict:
    """``{"complete": false, "cases": {case: [annotated label names]}}`` for the cases a scheme changed."""
    if spec.has_regions:
        # only ever written to partial_labels.json (the empty view): nothing is annotated in an emptied case
        return {"complete": False, "cases": {case: [] for case in sorted(removed)}}
    foreground = spec.foreground
    return {
        "complete": False,
        "cases": {
            case: [label for label, value in foreground.items() if value not in dropped]
            for case, dropped in sorted(removed.items())
        },
    }


def _write_json_files(
    spec: DatasetSpec,
    cases: Sequence[SourceCase],
    outcomes: Sequence[_CaseOutcome],
    staging: Path,
    target: Path,
    source: Path,
    converter: str,
    scheme: Scheme | None,
    view: View,
    manifest: dict | None,
    splits: list[dict[str, list[str]]] | None,
) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    from nnunet_dicephi import __version__
    from nnunet_dicephi.partial_labels import MANIFEST_KEY

    extra = {}
    description = spec.description
    if scheme is not None:
        description += f" Partial labelling scheme {scheme.name!r}: {scheme.summary}."
        if view == "missing":
            extra[MANIFEST_KEY] = manifest
            description += " Missing-label view: the manifest in dicephi_partial_labels declares the emptied labels."
        else:
            description += (
                " Empty-label view: no manifest here, the emptied maps are taken at face value "
                f"(the manifest is in {MANIFEST_FILE})."
            )
    generate_dataset_json(
        str(staging),
        channel_names={int(k): v for k, v in spec.channel_names.items()},
        labels={k: (tuple(v) if isinstance(v, (tuple, list)) else int(v)) for k, v in spec.labels.items()},
        num_training_cases=sum(not c.test for c in cases),
        file_ending=FILE_ENDING,
        regions_class_order=spec.regions_class_order,
        dataset_name=target.name,
        reference=spec.reference,
        description=description.strip(),
        license=spec.licence,
        converted_by=f"nnunet-dicephi {__version__} (nnunet-dicephi convert {converter})",
        **extra,
    )
    if manifest is not None:
        write_text_atomically(staging / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    if splits is not None:
        write_text_atomically(staging / SPLITS_FILE, json.dumps(splits, indent=2) + "\n")
    values = {o.case_id: list(o.values) for o in outcomes}
    record = {
        "converter": converter,
        "dataset": spec.title,
        "source": str(source.resolve()),
        "nnunet_dicephi_version": __version__,
        "scheme": scheme.name if scheme else None,
        "view": view if scheme else None,
        "manifest_in_dataset_json": bool(scheme is not None and view == "missing"),
        "full_labels": FULL_LABELS_FOLDER if scheme is not None else None,
        "cases": {
            case.case_id: {
                "split": "test" if case.test else "train",
                "group": case.group,
                "subset": case.subset,
                "images": [str(p.resolve()) for p in case.images],
                "label": str(case.label.resolve()),
                "label_values": values.get(case.case_id, []),
            }
            for case in sorted(cases, key=lambda c: c.case_id)
        },
    }
    write_text_atomically(staging / RECORD_FILE, json.dumps(record, indent=2) + "\n")


def _self_check(staging: Path, cases: Sequence[SourceCase], manifest: dict | None, spec: DatasetSpec) -> None:
    """Read back what was written: the manifest must pass the trainers' own validation."""
    from nnunet_dicephi.partial_labels import MANIFEST_KEY, ManifestError, load_manifest

    dataset_json = json.loads((staging / "dataset.json").read_text(encoding="utf-8"))
    training = [c.case_id for c in cases if not c.test]
    problems = []
    if dataset_json.get("numTraining") != len(training):
        problems.append(f"numTraining {dataset_json.get('numTraining')} but {len(training)} training cases")
    written = sorted(p.name[: -len(FILE_ENDING)] for p in (staging / "labelsTr").glob(f"*{FILE_ENDING}"))
    if written != sorted(training):
        problems.append("labelsTr does not hold exactly the training cases")
    if manifest is not None and not spec.has_regions:
        try:
            load_manifest({**dataset_json, MANIFEST_KEY: manifest}, training)
        except ManifestError as error:
            problems.append(str(error))
    if problems:
        raise fail("internal error: the converted dataset failed its own check (please report this)", problems)
