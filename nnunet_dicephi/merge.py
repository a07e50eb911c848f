"""``nnunet-dicephi merge``: several nnU-Net raw datasets → one partially labelled raw dataset.

``nnunet-dicephi merge 501 502 -d 510`` writes ``$nnUNet_raw/Dataset510_<Name>`` over the union of
the sources' labels, with a partial-label manifest that says which labels each training case
annotates: exactly its source's (:mod:`nnunet_dicephi.partial_labels`). In two steps, as the
converters work:

1. :func:`plan_merge` — pure: from the sources' ``dataset.json`` files and file lists, what each
   case becomes (its new id, its files, its source's label map), the merged labels, the manifest and
   the record. Every problem found (incompatible channels or file endings, regions, a ``--same``
   name no source has, a broken source manifest, ...) goes into one :class:`InputError`.
2. :func:`write_merge` — one case at a time into a staging folder beside the target, renamed into
   place when complete. Images are hard links (copies where the file system refuses a link), never
   re-encoded; every label file is read with nnU-Net's reader for the file ending, its values are
   checked against its dataset.json, and it is linked when its values keep their numbers or written
   renumbered with nnU-Net's writer (geometry as read) when they do not.

Naming rules:

* **Labels** are matched by name; background is label 0 of every source, whatever its name (the
  first source's name is kept). ``--same "A=B"`` (repeatable, any number of ``=``-separated names)
  makes labels of different sources one label, called by its first name; every name must be a
  foreground label of some source, and one group cannot hold two labels of one source.
* **Values** are numbered by first appearance: the sources in the order given, each source's labels
  by value; the ignore label, when a source has one, comes last (nnU-Net requires it highest).
* **Case ids** become ``d<ID>_<case id>``, the source's dataset id in three digits
  (``d501_liver_007``): short, readable, and unique because two sources may not share an id.

Recorded in the merged ``dataset.json``, beside the manifest, under :data:`RECORD_KEY`: each source's
folder name, prefix, old → new label values and names, and case counts. Only a folder holding that
record is replaced by ``--force``.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import errno
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nnunet_dicephi._cli import add_verb, refuse
from nnunet_dicephi._files import staging_folder
from nnunet_dicephi._problems import InputError, Problems
from nnunet_dicephi.conversion._model import DATASET_FOLDER, ConversionError
from nnunet_dicephi.conversion._target import _NAME, _existing_datasets, move_into_place, prepare_target, raw_root
from nnunet_dicephi.partial_labels import MANIFEST_KEY, ManifestError, load_manifest

__all__ = [
    "RECORD_KEY",
    "CaseFiles",
    "MergePlan",
    "MergeResult",
    "PlannedCase",
    "SourceDataset",
    "add_parser",
    "case_prefix",
    "merge_datasets",
    "parse_same",
    "plan_merge",
    "read_source",
    "resolve_dataset",
    "source_cases",
    "write_merge",
]

RECORD_KEY = "nnunet_dicephi_merge"
"""The merge's record in dataset.json. Not ``dicephi_…``: the manifest check refuses such keys as typos."""
_CHANNEL_FILE = re.compile(r"(.+)_(\d{4})")
_NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
_LINK_REFUSED = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
"""Why ``os.link`` may fail on files that can still be copied: another file system, no hard links there."""


# --- the sources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseFiles:
    """One case of a source dataset as found on disk."""

    case_id: str
    images: tuple[Path, ...]
    """One file per channel, in channel order."""
    label: Path | None
    """None for a test case without a label file."""


@dataclass(frozen=True)
class SourceDataset:
    """A raw dataset to merge: its dataset.json and its cases."""

    folder: Path
    dataset_json: Mapping[str, Any]
    training: tuple[CaseFiles, ...]
    test: tuple[CaseFiles, ...]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def dataset_id(self) -> int:
        match = DATASET_FOLDER.fullmatch(self.name)
        return int(match[1]) if match else 0


def case_prefix(dataset_id: int) -> str:
    """``d<ID>_``, the id in three digits as in nnU-Net's folder names: ``d007_``, ``d501_``."""
    return f"d{int(dataset_id):03d}_"


def source_cases(
    dataset_json: Mapping[str, Any], source_id: int, identifiers: Sequence[str], fold: int | str
) -> tuple[list[str], list[str]]:
    """Fold ``fold``'s cases of one source of a merged dataset, split as nnU-Net splits that source alone.

    What a trainer named ``…_source<ID>`` trains on: the cases the merge took from dataset ``ID``
    (``identifiers`` are the merged dataset's), in nnU-Net's five folds of those cases — sorted ids,
    nnU-Net's own ``generate_crossval_split`` (seed 12345) — or all of them for fold ``all``. The
    merged dataset's split cannot serve: it need not validate a small source at all (fold 0 of the
    42 merged toy cases validates none of source 3's six). Labels stay the merged ones, so the test
    predictions compare with a model of the whole merge case for case.

    Raises:
        ValueError: naming the sources there are, when the dataset is no merge or ``source_id`` is not
            one of its sources, or when the source has fewer training cases than nnU-Net's folds.
    """
    record = dataset_json.get(RECORD_KEY)
    name = dataset_json.get("name", "this dataset")
    option = f"source{int(source_id):03d}"
    if not isinstance(record, Mapping) or not isinstance(record.get("sources"), list):
        raise ValueError(
            f"{option} trains on one source of a merged dataset, but {name} was not written by "
            f"nnunet-dicephi merge (its dataset.json has no {RECORD_KEY!r}); drop the source option"
        )
    prefixes = {str(source.get("prefix")): source.get("dataset") for source in record["sources"]}
    prefix = case_prefix(source_id)
    if prefix not in prefixes:
        known = ", ".join(f"source{p[1:-1]} ({dataset})" for p, dataset in prefixes.items())
        raise ValueError(f"{name} has no source dataset {int(source_id):03d}; its sources: {known}")
    cases = sorted(key for key in identifiers if key.startswith(prefix))
    if fold == "all":
        return cases, cases
    folds = 5
    if len(cases) < folds:
        raise ValueError(
            f"{option}: {prefixes[prefix]} brought {len(cases)} training cases into {name}, fewer than nnU-Net's "
            f"{folds} folds; train it with fold 'all'"
        )
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    split = generate_crossval_split(cases, seed=12345, n_splits=folds)[int(fold)]
    return [str(key) for key in split["train"]], [str(key) for key in split["val"]]


def _env_folder(variable: str) -> Path | None:
    value = os.environ.get(variable, "").strip().strip('"')
    return Path(value).expanduser() if value else None


def _known_datasets(raw: Path) -> str:
    if not raw.is_dir():
        return f"nnUNet_raw={raw} does not exist"
    found = sorted(p.name for p in raw.iterdir() if p.is_dir() and DATASET_FOLDER.fullmatch(p.name))
    if not found:
        return f"nnUNet_raw={raw} holds no Dataset<ID>_<Name> folder"
    listed = ", ".join(found[:20]) + (f" and {len(found) - 20} more" if len(found) > 20 else "")
    return f"nnUNet_raw holds {listed}"


def resolve_dataset(text: str | int, raw: Path) -> Path:
    """The raw folder of a dataset id (``501``) or name (``Dataset501_Liver``), as nnU-Net resolves it.

    nnU-Net's rule (``maybe_convert_to_dataset_name``): a name is taken as it is; an id names the one
    ``Dataset<ID>_*`` folder found across nnUNet_raw, nnUNet_preprocessed and nnUNet_results, and two
    different names for one id are an error. Unlike nnU-Net before 2.8, the variables are read now,
    not when nnU-Net was imported.

    Raises:
        InputError: naming the dataset, what was found, and the datasets nnUNet_raw does hold.
    """
    text = str(text).strip()
    if text.startswith("Dataset"):
        if "/" in text or "\\" in text or text in ("Dataset", ".", ".."):
            raise InputError(f"{text!r}: give a dataset id (501) or a folder name (Dataset501_Liver), not a path")
        folder = raw / text
        if not folder.is_dir():
            raise InputError(f"{text}: no such folder in nnUNet_raw ({_known_datasets(raw)})")
        return folder
    if not re.fullmatch(r"\d+", text):
        raise InputError(f"{text!r} is neither a dataset id (e.g. 501) nor a dataset name (e.g. Dataset501_Liver)")
    number = int(text)
    where: dict[str, list[str]] = {}
    for variable in _NNUNET_FOLDERS:
        root = raw if variable == "nnUNet_raw" else _env_folder(variable)
        for name in _existing_datasets(root, number) if root is not None else []:
            where.setdefault(name, []).append(variable)
    if len(where) > 1:
        found = "; ".join(f"{name} ({', '.join(variables)})" for name, variables in sorted(where.items()))
        raise InputError(
            f"dataset id {number} names {len(where)} datasets: {found}; nnU-Net refuses such an id too: "
            "give the full name, or rename or remove the others"
        )
    if not where:
        raise InputError(f"no dataset with id {number} ({_known_datasets(raw)})")
    name, variables = next(iter(where.items()))
    if "nnUNet_raw" not in variables:
        raise InputError(f"dataset id {number} is {name} in {', '.join(variables)} but not in nnUNet_raw={raw}")
    return raw / name


def _list_cases(
    images: Path, labels: Path | None, ending: str, channels: int, where: str, problems: Problems, *, test: bool
) -> tuple[CaseFiles, ...]:
    """Cases of an ``images*`` folder (nnU-Net's file naming) with their label files."""
    if not images.is_dir():
        return ()
    by_case: dict[str, dict[int, Path]] = {}
    for path in sorted(images.iterdir()):
        if not path.name.endswith(ending) or not path.is_file():
            continue  # nnU-Net lists only files with the dataset's ending
        match = _CHANNEL_FILE.fullmatch(path.name[: -len(ending)])
        if match is None:
            problems.add(f"{path}: not named <case>_<4-digit channel>{ending}")
            continue
        by_case.setdefault(match[1], {})[int(match[2])] = path
    cases = []
    for case, files in sorted(by_case.items()):
        if sorted(files) != list(range(channels)):
            problems.add(
                f"{where}: case {case} has channel files {sorted(files)}, but channel_names declares "
                f"{channels} (0 to {channels - 1})"
            )
            continue
        label = labels / f"{case}{ending}" if labels is not None else None
        if label is not None and not label.is_file():
            if not test:
                problems.add(f"{where}: training case {case} has no label file {label}")
                continue
            label = None
        cases.append(CaseFiles(case, tuple(files[c] for c in range(channels)), label))
    return tuple(cases)


def read_source(folder: Path, problems: Problems) -> SourceDataset | None:
    """Read ``folder/dataset.json`` and list its training and test cases; None when it cannot be read.

    Training cases come from nnU-Net's own listing when dataset.json names its files (the
    ``dataset`` key), else from imagesTr/labelsTr; test cases from imagesTs, with labelsTs where it
    holds a file of the case. Every problem goes to ``problems``.
    """
    where = folder.name
    try:
        dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.add(f"{where}: no dataset.json in {folder}")
        return None
    except (OSError, ValueError) as error:
        problems.add(f"{where}: {folder / 'dataset.json'} cannot be read: {error}")
        return None
    missing = [key for key in ("channel_names", "labels", "file_ending") if key not in dataset_json]
    if missing or not isinstance(dataset_json.get("channel_names"), dict):
        problems.add(f"{where}: dataset.json lacks {', '.join(missing) or 'a channel_names mapping'}")
        return None
    ending, channels = str(dataset_json["file_ending"]), len(dataset_json["channel_names"])
    if "dataset" in dataset_json:
        from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

        listed = get_filenames_of_train_images_and_targets(str(folder), copy.deepcopy(dataset_json))
        training = []
        for case, files in sorted(listed.items()):
            absent = [f for f in (*files["images"], files["label"]) if not os.path.isfile(f)]
            if absent:
                problems.add(f"{where}: case {case}: files named in dataset.json do not exist: {', '.join(absent)}")
            elif len(files["images"]) != channels:
                problems.add(f"{where}: case {case} has {len(files['images'])} images; channel_names has {channels}")
            else:
                training.append(CaseFiles(case, tuple(Path(f) for f in files["images"]), Path(files["label"])))
        training = tuple(training)
    else:
        training = _list_cases(folder / "imagesTr", folder / "labelsTr", ending, channels, where, problems, test=False)
    declared = dataset_json.get("numTraining")
    if declared != len(training):
        problems.add(f"{where}: numTraining is {declared!r} in dataset.json, but {len(training)} training cases exist")
    labels_ts = folder / "labelsTs"
    test = _list_cases(
        folder / "imagesTs", labels_ts if labels_ts.is_dir() else None, ending, channels, where, problems, test=True
    )
    return SourceDataset(folder, dataset_json, training, test)


# --- the plan ---------------------------------------------------------------------------------


def parse_same(texts: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """``--same`` values (``"left kidney=kidney_left"``) → groups of label names, the merged name first.

    Raises:
        InputError: a group of fewer than two names, an empty name, a name repeated or in two groups.
    """
    problems = Problems("invalid --same", InputError)
    groups: list[tuple[str, ...]] = []
    seen: dict[str, str] = {}
    for text in texts:
        names = tuple(name.strip() for name in str(text).split("="))
        if len(names) < 2 or not all(names):
            problems.add(f"{text!r}: expected two or more label names separated by '=', e.g. 'kidney=kidney_left'")
            continue
        for name in names:
            if name in seen:
                where = "twice in it" if seen[name] == text else f"also in {seen[name]!r}"
                problems.add(f"{text!r}: label {name!r} is {where}; list each name in one --same only")
            seen.setdefault(name, text)
        groups.append(names)
    problems.raise_if_any()
    return tuple(groups)


@dataclass(frozen=True)
class _SourceLabels:
    background: str
    foreground: dict[str, int]
    """Name → value, by value."""
    ignore: int | None


def _source_labels(source: SourceDataset, problems: Problems) -> _SourceLabels | None:
    where = source.name
    labels = source.dataset_json["labels"]
    if not isinstance(labels, dict):
        problems.add(f"{where}: 'labels' in dataset.json is not a mapping of names to values")
        return None
    regions = {name: value for name, value in labels.items() if isinstance(value, (list, tuple)) and len(value) != 1}
    if regions or source.dataset_json.get("regions_class_order") is not None:
        shown = ", ".join(f"{name!r} = {tuple(value)}" for name, value in regions.items()) or "regions_class_order"
        problems.add(
            f"{where} uses regions ({shown}): a region is a union of labels, so which labels a merged case "
            "annotates is not defined per region; merge a version of it with plain labels (one value per label)"
        )
        return None
    values: dict[str, int] = {}
    for name, value in labels.items():
        value = value[0] if isinstance(value, (list, tuple)) else value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.add(f"{where}: label {name!r} has the value {value!r}; nnU-Net's label values are integers >= 0")
            return None
        values[name] = value
    ignore = values.pop("ignore", None)
    background = [name for name, value in values.items() if value == 0]
    if len(background) != 1:
        problems.add(f"{where}: expected one label with value 0 (background), found {background or 'none'}")
        return None
    shared = sorted({v for v in values.values() if list(values.values()).count(v) > 1})
    if shared:
        names = [f"{n}={v}" for n, v in values.items() if v in shared]
        problems.add(f"{where}: labels share a value ({', '.join(names)}); give each label its own value")
        return None
    foreground = dict(sorted(((n, v) for n, v in values.items() if v != 0), key=lambda item: item[1]))
    return _SourceLabels(background[0], foreground, ignore)


@dataclass(frozen=True)
class PlannedCase:
    """What one case of a source becomes in the merged dataset."""

    source: int
    """Index of its source in :attr:`MergePlan.sources`."""
    case_id: str
    """Its id in the merged dataset: the source's prefix and its own id."""
    split: Literal["Tr", "Ts"]
    images: tuple[Path, ...]
    label: Path | None


@dataclass(frozen=True)
class MergePlan:
    """Everything the merged dataset will be, before a file is written."""

    sources: tuple[SourceDataset, ...]
    labels: dict[str, int]
    """The merged dataset.json's ``labels``: background 0, then by first appearance, ``ignore`` last."""
    value_maps: tuple[dict[int, int], ...]
    """Per source: its label value → the merged value (background and ignore included)."""
    name_maps: tuple[dict[str, str], ...]
    """Per source: its foreground label name → the merged name."""
    same: tuple[tuple[str, ...], ...]
    cases: tuple[PlannedCase, ...]
    manifest: dict
    """``{"complete": true, "cases": {training case: [merged label names it annotates]}}``."""
    channel_names: dict[str, str]
    file_ending: str
    reader_writer: str | None
    """dataset.json's ``overwrite_image_reader_writer`` shared by the sources, or None."""

    def renumbers(self, source: int) -> bool:
        """Whether the label files of ``sources[source]`` change values (else they are linked as they are)."""
        return any(old != new for old, new in self.value_maps[source].items())

    @property
    def training_cases(self) -> int:
        return sum(case.split == "Tr" for case in self.cases)

    def record(self) -> dict:
        """What :data:`RECORD_KEY` holds in the merged dataset.json."""
        from nnunet_dicephi import __version__

        sources = []
        for index, source in enumerate(self.sources):
            cases = [case for case in self.cases if case.source == index]
            sources.append(
                {
                    "dataset": source.name,
                    "folder": str(source.folder.resolve()),
                    "prefix": case_prefix(source.dataset_id),
                    "labels": {str(old): new for old, new in sorted(self.value_maps[index].items())},
                    "label_names": dict(self.name_maps[index]),
                    "training_cases": sum(case.split == "Tr" for case in cases),
                    "test_cases": sum(case.split == "Ts" for case in cases),
                    "test_labels": sum(case.split == "Ts" and case.label is not None for case in cases),
                    "had_manifest": MANIFEST_KEY in source.dataset_json,
                }
            )
        return {"version": __version__, "same": [list(group) for group in self.same], "sources": sources}


def plan_merge(sources: Sequence[SourceDataset], same: Sequence[str] = ()) -> MergePlan:
    """Plan the merge of ``sources`` (in this order) with the ``--same`` groups ``same``.

    Raises:
        InputError: listing every problem: channel_names, file_ending or reader mismatches, regions,
            unknown or conflicting ``--same`` names, invalid source manifests, no training case at all.
    """
    problems = Problems("cannot merge these datasets", InputError)
    plan = _plan(sources, parse_same(same), problems)
    problems.raise_if_any()
    assert plan is not None
    return plan


def _compatibility(sources: Sequence[SourceDataset], problems: Problems) -> None:
    """Every source's channel_names, file_ending and reader against the first's: one problem per mismatch."""
    first = sources[0]
    channels = {str(k): v for k, v in first.dataset_json["channel_names"].items()}
    for other in sources[1:]:
        theirs = {str(k): v for k, v in other.dataset_json["channel_names"].items()}
        for key in sorted(set(channels) | set(theirs), key=lambda k: (len(k), k)):
            if key not in theirs:
                problems.add(f"channel {key} ({channels[key]!r}) is in {first.name} but not in {other.name}")
            elif key not in channels:
                problems.add(f"channel {key} ({theirs[key]!r}) is in {other.name} but not in {first.name}")
            elif channels[key] != theirs[key]:
                problems.add(
                    f"channel {key} is {channels[key]!r} in {first.name} but {theirs[key]!r} in {other.name} "
                    "(nnU-Net normalises by channel name)"
                )
        for key in ("file_ending", "overwrite_image_reader_writer"):
            mine, yours = first.dataset_json.get(key), other.dataset_json.get(key)
            if mine != yours:
                problems.add(f"{key} is {mine!r} in {first.name} but {yours!r} in {other.name}")


def _merged_labels(
    sources: Sequence[SourceDataset],
    parsed: Sequence[_SourceLabels],
    same: Sequence[tuple[str, ...]],
    problems: Problems,
) -> tuple[dict[str, int], list[dict[int, int]], list[dict[str, str]]]:
    merged_name = {name: group[0] for group in same for name in group}
    owners: dict[str, list[str]] = {}
    for source, labels in zip(sources, parsed):
        for name in labels.foreground:
            owners.setdefault(name, []).append(source.name)
    for group in same:
        for name in group:
            if name not in owners:
                background = [s.name for s, lab in zip(sources, parsed) if name in (lab.background, "ignore")]
                if background:
                    problems.add(
                        f"--same {'='.join(group)!r}: {name!r} is background or the ignore label in "
                        f"{', '.join(background)}; those are shared anyway, leave them out"
                    )
                    continue
                close = difflib.get_close_matches(name, list(owners), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.add(
                    f"--same {'='.join(group)!r}: no dataset has a label {name!r}{hint}; "
                    f"foreground labels: {', '.join(sorted(owners)) or 'none'}"
                )
        for source, labels in zip(sources, parsed):
            inside = [name for name in group if name in labels.foreground]
            if len(inside) > 1:
                problems.add(
                    f"--same {'='.join(group)!r}: {', '.join(map(repr, inside))} are all labels of {source.name}; "
                    "--same joins labels of different datasets only"
                )
    background = parsed[0].background
    labels: dict[str, int] = {background: 0}
    value_maps: list[dict[int, int]] = []
    name_maps: list[dict[str, str]] = []
    for source, own in zip(sources, parsed):
        values, names = {0: 0}, {}
        for name, value in own.foreground.items():
            new_name = merged_name.get(name, name)
            if new_name == background:
                problems.add(
                    f"{source.name}: foreground label {name!r} (value {value}) would be named {new_name!r}, the "
                    f"background's name in {sources[0].name}; rename one of them"
                )
                continue
            labels.setdefault(new_name, len(labels))
            values[value], names[name] = labels[new_name], new_name
        value_maps.append(values)
        name_maps.append(names)
    if any(own.ignore is not None for own in parsed):
        labels["ignore"] = len(labels)
        for values, own in zip(value_maps, parsed):
            if own.ignore is not None:
                values[own.ignore] = labels["ignore"]
    return labels, value_maps, name_maps


def _manifest(
    sources: Sequence[SourceDataset],
    parsed: Sequence[_SourceLabels],
    labels: Mapping[str, int],
    name_maps: Sequence[dict[str, str]],
    problems: Problems,
) -> dict:
    """Each training case annotates its source's labels (those its source's manifest says, if it has one)."""
    cases: dict[str, list[str]] = {}
    for source, own, names in zip(sources, parsed, name_maps):
        try:
            table = load_manifest(
                dict(source.dataset_json), [c.case_id for c in source.training], source.folder / "dataset.json"
            )
        except ManifestError as error:
            problems.add(f"{source.name}: {error}")
            continue
        prefix = case_prefix(source.dataset_id)
        for case in source.training:
            annotated = {
                names[name]
                for name, value in own.foreground.items()
                if name in names and (table is None or table.annotated(case.case_id, value))
            }
            cases[prefix + case.case_id] = sorted(annotated, key=labels.__getitem__)
    return {"complete": True, "cases": cases}


def _plan(sources: Sequence[SourceDataset], same: Sequence[tuple[str, ...]], problems: Problems) -> MergePlan | None:
    if len(sources) < 2:
        problems.add(f"merge needs two or more datasets; got {len(sources)}")
        return None
    _compatibility(sources, problems)
    parsed = [_source_labels(source, problems) for source in sources]
    if any(own is None for own in parsed):
        return None
    labels, value_maps, name_maps = _merged_labels(sources, parsed, same, problems)
    manifest = _manifest(sources, parsed, labels, name_maps, problems)
    if not any(source.training for source in sources):
        problems.add("none of the datasets has a training case: nnU-Net cannot train on the merged dataset")
    cases = [
        PlannedCase(index, case_prefix(source.dataset_id) + case.case_id, split, case.images, case.label)
        for split, attribute in (("Tr", "training"), ("Ts", "test"))
        for index, source in enumerate(sources)
        for case in getattr(source, attribute)
    ]
    first = sources[0].dataset_json
    return MergePlan(
        sources=tuple(sources),
        labels=labels,
        value_maps=tuple(value_maps),
        name_maps=tuple(name_maps),
        same=tuple(same),
        cases=tuple(cases),
        manifest=manifest,
        channel_names={str(k): v for k, v in first["channel_names"].items()},
        file_ending=str(first["file_ending"]),
        reader_writer=first.get("overwrite_image_reader_writer"),
    )


# --- writing ----------------------------------------------------------------------------------


@dataclass
class _Counts:
    linked: int = 0
    copied: int = 0
    labels_linked: int = 0
    labels_renumbered: int = 0


def _link(source: Path, target: Path) -> bool:
    """Hard-link ``source`` as ``target`` (True); copy its bytes where the file system refuses a link (False)."""
    try:
        os.link(source, target)
        return True
    except OSError as error:
        if error.errno not in _LINK_REFUSED:
            raise
    shutil.copyfile(source, target)
    return False


def _format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _write_label(
    case: PlannedCase, plan: MergePlan, reader: Callable[[], Any], target: Path, counts: _Counts, problems: Problems
) -> None:
    values = plan.value_maps[case.source]
    try:
        io = reader()
        seg, properties = io.read_seg(str(case.label))
    except Exception as error:  # a damaged or foreign file: name it with the others, no traceback
        problems.add(
            f"{case.label}: nnU-Net's reader for {plan.file_ending} cannot read it ({error or type(error).__name__})"
        )
        return
    found = np.unique(seg)
    undeclared = [v for v in found if not (float(v).is_integer() and int(v) in values)]
    if undeclared:
        source = plan.sources[case.source]
        problems.add(
            f"{case.label}: label values {', '.join(_format_value(v) for v in undeclared)} are not declared in "
            f"{source.folder / 'dataset.json'} (declared: {', '.join(map(str, sorted(values)))})"
        )
        return
    if not plan.renumbers(case.source):
        _link(case.label, target)
        counts.labels_linked += 1
        return
    table = np.zeros(max(values) + 1, dtype=np.uint16)
    for old, new in values.items():
        table[old] = new
    # nnU-Net's readers give (1, *spatial) float arrays and its writers take the spatial part
    io.write_seg(table[seg[0].astype(np.int64)], str(target), properties)
    counts.labels_renumbered += 1


def _readers(plan: MergePlan) -> list[Callable[[], Any]]:
    """Per source, nnU-Net's reader/writer for its files, chosen on its first image as nnU-Net's own check does."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    readers: list[Callable[[], Any]] = []
    for index, source in enumerate(plan.sources):
        example = next((case.images[0] for case in plan.cases if case.source == index), None)
        chosen: dict[str, Any] = {}

        def reader(source=source, example=example, chosen=chosen) -> Any:
            if "class" not in chosen:  # only sources with label files need one
                chosen["class"] = determine_reader_writer_from_dataset_json(
                    dict(source.dataset_json), str(example), verbose=False
                )
            return chosen["class"]()

        readers.append(reader)
    return readers


def _dataset_json(plan: MergePlan, staging: Path, name: str) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    names = ", ".join(source.name for source in plan.sources)
    generate_dataset_json(
        str(staging),
        channel_names=dict(plan.channel_names),
        labels=dict(plan.labels),
        num_training_cases=plan.training_cases,
        file_ending=plan.file_ending,
        dataset_name=name,
        description=f"{names} merged by nnunet-dicephi merge; each training case annotates its source's labels "
        f"({MANIFEST_KEY}); what came from where is in {RECORD_KEY}",
        license=f"the terms of each source dataset apply: {names}",
        converted_by="nnunet-dicephi merge",
        overwrite_image_reader_writer=plan.reader_writer,
        **{MANIFEST_KEY: plan.manifest, RECORD_KEY: plan.record()},
    )


def _self_check(staging: Path, plan: MergePlan) -> None:
    """Read back dataset.json: the manifest must pass the trainers' own validation."""
    written = json.loads((staging / "dataset.json").read_text(encoding="utf-8"))
    training = [case.case_id for case in plan.cases if case.split == "Tr"]
    try:
        load_manifest(written, training)
    except ManifestError as error:
        raise RuntimeError(
            f"internal error: the merged manifest failed its own check (please report this): {error}"
        ) from error


@dataclass(frozen=True)
class MergeResult:
    """What :func:`write_merge` wrote."""

    folder: Path
    plan: MergePlan
    images_linked: int
    images_copied: int
    labels_linked: int
    labels_renumbered: int


def write_merge(plan: MergePlan, target: Path, *, force: bool = False, progress: bool = True) -> MergeResult:
    """Write ``plan`` as ``target``: built in a staging folder beside it, renamed into place when complete.

    Args:
        plan: from :func:`plan_merge`.
        target: ``$nnUNet_raw/Dataset<ID>_<Name>``, already checked (:func:`merge_datasets` does).
        force: replace an existing ``target`` (only once the new one is complete).
        progress: show a progress bar over the cases.

    Raises:
        InputError: label files with values their dataset.json does not declare, every one named;
            nothing is left behind.
    """
    from tqdm.auto import tqdm

    problems = Problems(f"cannot merge into {target.name}", InputError)
    counts = _Counts()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(target)
    try:
        readers = _readers(plan)
        for folder in ("imagesTr", "labelsTr"):
            (staging / folder).mkdir()
        for case in tqdm(plan.cases, desc=target.name, unit="case", disable=not progress):
            images = staging / f"images{case.split}"
            images.mkdir(exist_ok=True)
            for channel, image in enumerate(case.images):
                if _link(image, images / f"{case.case_id}_{channel:04d}{plan.file_ending}"):
                    counts.linked += 1
                else:
                    counts.copied += 1
            if case.label is not None:
                labels = staging / f"labels{case.split}"
                labels.mkdir(exist_ok=True)
                _write_label(
                    case, plan, readers[case.source], labels / f"{case.case_id}{plan.file_ending}", counts, problems
                )
        problems.raise_if_any()
        _dataset_json(plan, staging, target.name)
        _self_check(staging, plan)
        try:
            move_into_place(staging, target, force)
        except ConversionError as error:
            raise InputError(str(error)) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return MergeResult(target, plan, counts.linked, counts.copied, counts.labels_linked, counts.labels_renumbered)


# --- the whole command ------------------------------------------------------------------------


def _default_name(sources: Sequence[SourceDataset]) -> str:
    """The sources' names joined by ``_`` (``Liver_KiTS``); ``Merged_501_502`` when that is not a valid name."""
    names = [DATASET_FOLDER.fullmatch(source.name)[2] for source in sources]
    joined = "_".join(names)
    if _NAME.fullmatch(joined):
        return joined
    return "Merged_" + "_".join(f"{source.dataset_id:03d}" for source in sources)


def _target_problems(
    dataset_id: int, name: str, force: bool, sources: Sequence[SourceDataset], problems: Problems
) -> Path | None:
    try:
        target = prepare_target(dataset_id, name, force)
    except ConversionError as error:
        problems.add(str(error))
        return None
    if any(target.resolve() == source.folder.resolve() for source in sources):
        problems.add(f"{target} is one of the datasets to merge; pick another id or name")
    elif target.exists():
        try:
            earlier = json.loads((target / "dataset.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = {}
        if not isinstance(earlier, dict) or RECORD_KEY not in earlier:
            problems.add(
                f"{target} has no {RECORD_KEY!r} record in its dataset.json, so merge did not write it; --force only "
                "replaces merged datasets: pick another id or name"
            )
    return target


def merge_datasets(
    sources: Sequence[str | int],
    dataset_id: int,
    name: str | None = None,
    *,
    same: Sequence[str] = (),
    force: bool = False,
    progress: bool = True,
) -> MergeResult:
    """Merge the raw datasets ``sources`` into ``$nnUNet_raw/Dataset<dataset_id>_<name>``.

    Args:
        sources: two or more dataset ids or names, in the order that numbers the merged labels.
        dataset_id: the merged dataset's id, 1-999, not used by another dataset in nnU-Net's folders.
        name: its name (default: the sources' names joined by ``_``).
        same: ``"A=B"`` groups of label names that are one label (the merged name is the first).
        force: replace an existing merged dataset of that folder name (only one this command wrote).
        progress: show a progress bar.

    Raises:
        InputError: one error listing every problem: unset nnUNet_raw, unknown or repeated datasets,
            incompatible channels or file endings, regions, unknown ``--same`` names, undeclared label
            values, a target that cannot be written. Nothing is written then.
    """
    try:
        raw = raw_root()
    except ConversionError as error:
        raise InputError(str(error)) from None
    if not raw.is_dir():
        raise InputError(f"nnUNet_raw={raw} does not exist; it must be the folder that holds the raw datasets")
    problems = Problems("cannot merge these datasets", InputError)
    try:
        groups = parse_same(same)
    except InputError as error:
        problems.add(str(error))
        groups = ()
    folders: dict[int, tuple[str, Path]] = {}
    read: list[SourceDataset] = []
    for text in sources:
        try:
            folder = resolve_dataset(text, raw)
        except InputError as error:
            problems.add(str(error))
            continue
        number = int(DATASET_FOLDER.fullmatch(folder.name)[1])
        if number in folders:
            earlier, first_folder = folders[number]
            same_folder = "" if first_folder == folder else f" ({first_folder.name} and {folder.name})"
            problems.add(f"dataset id {number} is given twice: {earlier!r} and {str(text)!r}{same_folder}")
            continue
        folders[number] = (str(text), folder)
        source = read_source(folder, problems)
        if source is not None:
            read.append(source)
    if len(sources) < 2:
        problems.add(f"merge needs two or more datasets; got {len(sources)}")
    plan = _plan(read, groups, problems) if len(read) >= 2 else None
    target_name = name or (_default_name(read) if read else None)
    target = _target_problems(dataset_id, target_name, force, read, problems) if target_name else None
    problems.raise_if_any()
    assert plan is not None and target is not None
    return write_merge(plan, target, force=force, progress=progress)


# --- command line -----------------------------------------------------------------------------


def run_merge(args: argparse.Namespace) -> int:
    """Merge nnU-Net raw datasets into one, with a manifest of which labels each case annotates.

    Writes $nnUNet_raw/Dataset<ID>_<Name> over the union of the sources' labels, matched by name
    (--same joins differing names) and numbered by first appearance, sources in the order given.
    Case ids get the prefix d<source id>_ (d501_case_007); test sets come along. Images are hard
    links, label files linked or renumbered with nnU-Net's reader and writer. dataset.json holds the
    partial-label manifest (each training case annotates its source's labels) and the record
    nnunet_dicephi_merge. Exit status 2, with every problem listed and nothing written, when the
    datasets cannot be merged.
    """
    try:
        result = merge_datasets(
            args.sources, args.dataset_id, args.name, same=args.same, force=args.force, progress=not args.quiet
        )
    except InputError as error:
        return refuse("merge", error)
    except KeyboardInterrupt:
        print("nnunet-dicephi merge: interrupted; no dataset folder was written", file=sys.stderr)
        return 130
    plan = result.plan
    tests = sum(case.split == "Ts" for case in plan.cases)
    test_labels = sum(case.split == "Ts" and case.label is not None for case in plan.cases)
    sources = ", ".join(f"{s.name} as {case_prefix(s.dataset_id)}*" for s in plan.sources)
    print(f"wrote {result.folder}: {plan.training_cases} training cases, {tests} test cases ({test_labels} labelled)")
    print(f"from {sources}")
    print("labels: " + ", ".join(f"{name}={value}" for name, value in plan.labels.items()))
    copied = f", {result.images_copied} copied (another file system)" if result.images_copied else ""
    print(
        f"files: {result.images_linked} hard links{copied}; label files: {result.labels_linked} kept, "
        f"{result.labels_renumbered} renumbered"
    )
    print(f"next: nnUNetv2_plan_and_preprocess -d {args.dataset_id} --verify_dataset_integrity")
    return 0


def add_parser(verbs: Any) -> None:
    """Add the ``merge`` verb to the subparsers object of the ``nnunet-dicephi`` command."""
    parser = add_verb(verbs, "merge", run_merge)
    parser.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="two or more dataset ids or names, e.g. 501 Dataset502_KiTS"
    )
    parser.add_argument(
        "-d", "--dataset-id", type=int, required=True, metavar="ID", help="the merged dataset's id, 1-999"
    )
    parser.add_argument(
        "--name", help="the merged dataset's name (default: the sources' names joined by '_', e.g. Liver_KiTS)"
    )
    parser.add_argument(
        "--same",
        action="append",
        default=[],
        metavar="A=B",
        help="label names of different datasets that are one label, called A in the merged dataset; repeatable, "
        "e.g. --same 'kidney=left kidney'",
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier merged dataset of that name")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
