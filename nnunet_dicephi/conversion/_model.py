"""What a converter describes: its cases, its labels, a partial-labelling scheme; the files it writes.

A converter (one module per public dataset) only *finds* its cases — checking the download's layout
with :mod:`._layout` and naming every missing or malformed file — and describes its labels with the
classes here; :func:`~._dataset.write_dataset` does the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nnunet_dicephi._problems import one_message

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
DATASET_FOLDER = re.compile(r"Dataset(\d+)_(.+)")


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
        return int(DATASET_FOLDER.fullmatch(self.folder.name)[1])
