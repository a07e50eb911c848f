"""What every converter shares: the target folder, the staging folder, the per-case worker, dataset.json.

A converter (one module per public dataset) only *finds* its cases — checking the download's layout
and naming every missing or malformed file — and describes its labels; this module does the rest:

1. checks the target ``$nnUNet_raw/Dataset<ID>_<Name>`` (name, id collisions, ``--force``);
2. converts every case in a staging folder beside it (``.Dataset<ID>_<Name>.staging-*``), in
   parallel processes: each image's header is compared with the first channel's and the label's
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
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from nnunet_dicephi._files import staging_folder, write_text_atomically
from nnunet_dicephi._problems import Problems, one_message

View = Literal["missing", "empty"]
"""How a partially labelled dataset declares its emptied labels (see :mod:`nnunet_dicephi.conversion`)."""
VIEWS: tuple[str, ...] = ("missing", "empty")
FILE_ENDING = ".nii.gz"
GEOMETRY_TOLERANCE = 1e-4
"""Relative (and absolute, for values near 0) tolerance on spacing, origin and direction."""
MANIFEST_FILE = "partial_labels.json"
"""The manifest as a plain file beside dataset.json, written for both views."""
RECORD_FILE = "dicephi_conversion.json"
"""What was converted from where: source files, patient, subset (HGG/LGG, ED/ES, site) per case."""
FULL_LABELS_FOLDER = "labelsTr_full"
"""The training labels before the scheme emptied any: the fully labelled reference of the paper."""
SPLITS_FILE = "splits_final.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_DATASET_FOLDER = re.compile(r"Dataset(\d+)_(.+)")


class ConversionError(ValueError):
    """A conversion that cannot be done; the message names every offender and how to fix it."""


def fail(what: str, problems: Sequence[str]) -> ConversionError:
    """One error for a list of problems, every problem on its own line."""
    return ConversionError(one_message(what, problems))


# --- what a converter describes ---------------------------------------------------------------


@dataclass(frozen=True)
class SourceCase:
    """One case as found in the download, before conversion."""

    case_id: str
    """nnU-Net's case identifier (file names ``<case_id>_0000.nii.gz``, ``<case_id>.nii.gz``)."""
    images: tuple[Path, ...]
    """One file per channel, in channel order."""
    label: Path
    group: str
    """What must not be split across folds (the patient)."""
    subset: str
    """The case's kind in the paper's tables: HGG/LGG, ED/ES, the WMH site."""
    test: bool = False
    """Written to imagesTs/labelsTs instead of imagesTr/labelsTr; never partially labelled."""


@dataclass(frozen=True)
class DatasetSpec:
    """Channels and labels of a converted dataset, and how source label values map to them."""

    title: str
    """The public dataset's name, e.g. "BraTS 2018"."""
    channel_names: Mapping[int, str]
    labels: Mapping[str, int | tuple[int, ...]]
    """nnU-Net's ``labels``: a value per label, or a tuple of values per region."""
    value_map: Mapping[int, int]
    """Source label value → written label value; its keys are the only values allowed in the source."""
    regions_class_order: tuple[int, ...] | None = None
    reference: str = ""
    licence: str = "see the dataset's terms of use at its download page"
    description: str = ""

    @property
    def has_regions(self) -> bool:
        return any(isinstance(v, (tuple, list)) and len(v) > 1 for v in self.labels.values())

    @property
    def foreground(self) -> dict[str, int]:
        """Plain labels except background (empty for region-based datasets)."""
        if self.has_regions:
            return {}
        return {name: int(v[0] if isinstance(v, (tuple, list)) else v) for name, v in self.labels.items() if v != 0}


@dataclass(frozen=True)
class Scheme:
    """A partial-labelling scheme: which written label values become background in which case."""

    name: str
    """The CLI name, e.g. ``lgg-empty``."""
    summary: str
    removed: Callable[[SourceCase], tuple[int, ...]]
    """Label values (after mapping) replaced by background in a training case; () keeps the case."""


@dataclass(frozen=True)
class ConversionResult:
    """What a converter wrote."""

    folder: Path
    """``$nnUNet_raw/Dataset<ID>_<Name>``."""
    training_cases: int
    test_cases: int
    scheme: str | None
    view: str | None
    manifest: dict | None
    """The partial-label manifest (``partial_labels.json``); in dataset.json too when view is "missing"."""
    splits_file: Path | None = None

    @property
    def dataset_name(self) -> str:
        return self.folder.name

    @property
    def dataset_id(self) -> int:
        return int(_DATASET_FOLDER.fullmatch(self.folder.name)[1])


# --- the target folder ------------------------------------------------------------------------


def raw_root() -> Path:
    """``$nnUNet_raw``; a :class:`ConversionError` when it is not set."""
    value = os.environ.get("nnUNet_raw", "").strip().strip('"')
    if not value:
        raise ConversionError(
            "nnUNet_raw is not set: export nnUNet_raw=/path/to/nnUNet_raw (the folder that holds nnU-Net's raw "
            "datasets; see nnU-Net's documentation/set_environment_variables.md)"
        )
    return Path(value).expanduser()


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset<ID>_<Name>`` after checking both; the name cannot lead outside nnUNet_raw."""
    problems = []
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, (int, np.integer)) or not 1 <= dataset_id <= 999:
        problems.append(f"dataset id must be an integer from 1 to 999 (nnU-Net's three digits); got {dataset_id!r}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        why = []
        if isinstance(name, str):
            if "/" in name or "\\" in name or ".." in name:
                why.append("path separators and '..' are not allowed")
            if any(c.isspace() for c in name):
                why.append("spaces are not allowed")
            if len(name) > 64:
                why.append("at most 64 characters")
        problems.append(
            f"dataset name {name!r} is not allowed"
            + (f" ({'; '.join(why)})" if why else "")
            + ": use letters, digits, '_' and '-' only, starting with a letter or digit, e.g. BraTS2018"
        )
    if problems:
        raise fail("invalid dataset", problems)
    return f"Dataset{int(dataset_id):03d}_{name}"


def _existing_datasets(root: Path, dataset_id: int) -> list[str]:
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _DATASET_FOLDER.fullmatch(entry.name)
        if match and int(match[1]) == dataset_id and entry.is_dir():
            found.append(entry.name)
    return sorted(found)


def prepare_target(dataset_id: int, name: str, force: bool) -> Path:
    """The target folder, after refusing collisions; it is not created (the staging folder is renamed)."""
    folder_name = dataset_folder_name(dataset_id, name)
    root = raw_root()
    target = root / folder_name
    problems = []
    # nnU-Net resolves an id to one name across its three folders and fails on two; refuse early
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        value = os.environ.get(variable, "").strip().strip('"')
        if not value:
            continue
        for other in _existing_datasets(Path(value).expanduser(), int(dataset_id)):
            if other != folder_name:
                problems.append(
                    f"dataset id {int(dataset_id)} is taken by {Path(value) / other} ({variable}); pick another "
                    "id with -d, or remove that folder"
                )
    if target.exists() and not force:
        problems.append(f"{target} exists; pass --force (force=True) to replace it, or pick another id or name")
    if problems:
        raise fail(f"cannot write {folder_name}", problems)
    return target


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


@dataclass(frozen=True)
class _CaseTask:
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


def _run_tasks(tasks: list[_CaseTask], workers: int, progress: bool, title: str) -> list[_CaseOutcome]:
    from nnunet_dicephi._parallel import map_cases

    outcomes, _ = map_cases(
        convert_case, tasks, workers=workers, desc=f"converting {title}", disable_progress=not progress
    )
    return sorted(outcomes, key=lambda outcome: outcome.case_id)


# --- the whole dataset ------------------------------------------------------------------------


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


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
        _usual_permissions(staging)
        tasks, removed = _tasks(spec, cases, scheme, source, staging)
        outcomes = _run_tasks(tasks, workers or default_workers(), progress, target.name)
        problems = [f"case {o.case_id}: {p}" for o in outcomes for p in o.problems]
        if problems:
            raise fail(f"{spec.title} in {source} cannot be converted", problems)
        manifest = _manifest(spec, removed) if scheme is not None else None
        _write_json_files(spec, cases, outcomes, staging, target, source, converter, scheme, view, manifest, splits)
        _self_check(staging, cases, manifest, spec)
        _move_into_place(staging, target, force)
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


def _tasks(
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


def _usual_permissions(folder: Path) -> None:
    # mkdtemp makes the folder private (0o700); the dataset should get what mkdir gives under the umask
    probe = folder / "permissions"
    probe.mkdir()
    mode = probe.stat().st_mode & 0o777
    probe.rmdir()
    os.chmod(folder, mode)


def _move_into_place(staging: Path, target: Path, force: bool) -> None:
    from nnunet_dicephi._files import replace_folder

    if target.exists() and not force:  # created by someone else while this conversion ran
        raise ConversionError(f"{target} appeared while converting; pass --force to replace it")
    replace_folder(staging, target)


# --- small helpers the converters share -------------------------------------------------------


def visible_dirs(folder: Path) -> list[Path]:
    """Sub-folders, sorted, without hidden ones and macOS archive debris (``__MACOSX``)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def require_dir(folder: Path, problems: list[str], what: str = "folder") -> bool:
    if folder.is_dir():
        return True
    problems.append(f"missing {what} {folder}" + (" (it is a file)" if folder.exists() else ""))
    return False


def require_file(path: Path, problems: list[str]) -> bool:
    if path.is_file():
        return True
    problems.append(f"missing file {path}" + (" (it is a folder)" if path.exists() else ""))
    return False


def layout_problems(what: str) -> Problems:
    """Problems found while checking a download's layout, raised together as a ConversionError."""
    return Problems(what, ConversionError)
