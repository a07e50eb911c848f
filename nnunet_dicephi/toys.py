"""``nnunet-dicephi toy``: seeded toy datasets for studies, each the setting of one paper in miniature.

Every scenario writes small datasets in nnU-Net's raw format — one channel, float32 images, uint8
labels, training cases in imagesTr/labelsTr and a test set in imagesTs/labelsTs — through
:func:`~nnunet_dicephi.synthetic.write_raw_dataset`, so each folder appears only once complete. The
2D scenarios, ``(1, S, S)`` images small enough that nnU-Net's 2d planning and preprocessing take
seconds on a laptop CPU:

* ``missing-vs-empty`` — the demo's data (the MICCAI 2022 paper's BRATS setting): one lesion per
  image, type B's training labels are empty maps (:func:`~nnunet_dicephi.synthetic.lesion_cases`);
* ``rare-class`` — Kervadec & de Bruijne's WMH setting, whose "other pathologies" class is rare and
  often absent: a common class in every image, a small rare class in a fixed share of the images
  and correctly empty elsewhere;
* ``imbalanced`` — Eelbode et al.'s setting of structures of very different sizes: three classes in
  every image, their radii about S/4, S/10 and S/25.

The 3D scenarios, 40³ volumes for which nnU-Net's 3d_fullres plans a 40³ patch (trainable on a CPU):

* ``organs-3d`` — five structures of distinct shapes and textures in every volume (ellipsoid,
  torus, tube, sphere, box: :data:`~nnunet_dicephi.synthetic.ORGANS`), fully labelled;
* ``organs-3d-sources`` — the same structures written as several datasets, the way partially
  labelled collections are held: each *source* (:class:`Source`) annotates its own subset and
  labels the others, present in its images, as background; its dataset.json lists only its own
  labels, numbered 1, 2, … in the order of the structures, so that datasets are merged by name. A
  last, fully labelled *reference* dataset holds the test set (:func:`write_toy_sources`);
* ``organs-3d-merged`` — those datasets merged as ``nnunet-dicephi merge`` merges them, in one step:
  one dataset over the five structures whose manifest says what each case annotates, the sources'
  cases named ``d001_…``, ``d002_…``, ``d003_…`` (train one source alone with ``_source001``), the
  reference's volumes its test set (:func:`write_merged_toy`). What a study spec's ``toy`` names.

Beside dataset.json, ``dicephi_toy.json`` records the scenario, the seed, the package version, the
counts per split and what each class measures in the labels written (the share of images where it is
present, its mean area or, in 3D, volume), so that a study quotes its data rather than the recipe;
a multi-source dataset's record adds what its images hold and which source annotates what.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_dicephi._cli import add_verb, non_negative_int, positive_int, refuse
from nnunet_dicephi.conversion._target import prepare_target
from nnunet_dicephi.demo import DemoSize
from nnunet_dicephi.synthetic import (
    ORGAN_IMAGE,
    ORGANS,
    ToyCase,
    lesion_case,
    lesion_cases,
    organ_case,
    stripe,
    write_raw_dataset,
)

RECORD_FILE = "dicephi_toy.json"
"""What was generated and what it measures, beside dataset.json; also marks a folder ``--force`` may replace."""
IMAGE = 64
"""Side S of the ``rare-class`` and ``imbalanced`` images (``missing-vs-empty`` keeps the demo's)."""
NOISE = 0.35
_DEMO_SIZE = DemoSize()
PLACEMENT_TRIES = 200
"""Rejection-sampling draws per disc before placing it is given up as impossible."""
RARE_SHARE = 0.2
"""Share of the images of each split that hold the rare class."""


@dataclass(frozen=True)
class ToyData:
    """What a scenario generates: its cases per split (``test`` goes to imagesTs) and files beside dataset.json."""

    splits: Mapping[str, Sequence[ToyCase]]
    extra_files: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """One toy dataset: what it imitates, its labels, and the seeded function that draws its cases."""

    name: str
    summary: str
    dataset_name: str
    """The ``<Name>`` of ``Dataset<ID>_<Name>`` unless one is given."""
    labels: Mapping[str, int]
    generate: Callable[[np.random.Generator, int, int], ToyData] | None
    """``generate(rng, train_cases, test_cases)``; every draw comes from ``rng``. None: ``merges`` says."""
    train_cases: int
    test_cases: int
    dimensions: int = 2
    """2: ``(1, S, S)`` images, planned as nnU-Net's 2d; 3: volumes, planned as 3d_fullres."""
    merges: str | None = None
    """The multi-source scenario whose datasets this one merges (:func:`write_merged_toy`)."""


# --- drawing discs ----------------------------------------------------------------------------


def _disc(size: int, centre: np.ndarray, radius: float) -> np.ndarray:
    y, x = np.indices((size, size))
    return (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2


def place_discs(rng: np.random.Generator, size: int, radii: Sequence[float]) -> list[np.ndarray]:
    """Centres of discs of ``radii`` inside a ``size`` × ``size`` image, no two touching.

    Seeded rejection sampling, largest first as given: each disc gets :data:`PLACEMENT_TRIES` draws
    of its centre, at least one voxel from the border and ``r₁ + r₂ + 1`` from every disc already
    placed (so background lies between any two). A disc that finds no place is a ``ValueError``
    rather than an endless loop or a silently overlapping label.
    """
    centres: list[np.ndarray] = []
    for radius in radii:
        if 2 * radius + 2 >= size:
            raise ValueError(f"a disc of radius {radius:.1f} does not fit in a {size}×{size} image")
        for _ in range(PLACEMENT_TRIES):
            centre = rng.uniform(radius + 1, size - radius - 1, 2)
            if all(np.hypot(*(centre - other)) >= radius + r + 1 for other, r in zip(centres, radii)):
                centres.append(centre)
                break
        else:
            raise ValueError(
                f"could not place a disc of radius {radius:.1f} beside {len(centres)} others in a {size}×{size} "
                f"image in {PLACEMENT_TRIES} tries; use larger images or smaller discs"
            )
    return centres


def _draw(
    rng: np.random.Generator, size: int, discs: Sequence[tuple[int, float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """A noisy ``(1, size, size)`` image and its labels with one disc per ``(label, radius, intensity)``."""
    image = rng.normal(0.0, NOISE, (size, size)).astype(np.float32)
    label = np.zeros((size, size), dtype=np.uint8)
    for (value, radius, intensity), centre in zip(discs, place_discs(rng, size, [d[1] for d in discs])):
        inside = _disc(size, centre, radius)
        image[inside] += intensity
        label[inside] = value
    return image[None], label[None]


# --- the scenarios ----------------------------------------------------------------------------


def missing_vs_empty(rng: np.random.Generator, train_cases: int, test_cases: int) -> ToyData:
    """The demo's data for the same seed: type-B training labels are empty maps, no manifest.

    This is the empty-label view: nothing tells a study that B's empty maps hide a lesion, so
    learning them (Φ=BI, the heuristic ε) leaves B out and ignoring them (Φ=I) segments it. The demo's
    validation images (``toy_val_*``) stay in imagesTr, and ``lesion_types.json`` says each case's type.
    ``splits_final.json`` holds the demo's split, training images against validation images, as each
    of nnU-Net's five folds (nnU-Net's planner copies it into nnUNet_preprocessed): no fold trains on a
    labelled B. With one fold only, folds 1–4 would fall back to nnU-Net's random split of imagesTr,
    which trains on the validation images; here the folds are one split, trained again.
    """
    return lesion_regime(rng, train_cases, test_cases)


def lesion_regime(
    rng: np.random.Generator,
    train_cases: int,
    test_cases: int,
    *,
    unlabelled_every: int = _DEMO_SIZE.unlabelled_every,
    radius_scale: float = 1.0,
    dimensions: int = 2,
    image: int = _DEMO_SIZE.image,
    others: bool = False,
) -> ToyData:
    """:func:`missing_vs_empty` with one thing changed: the defaults draw the demo's data.

    ``unlabelled_every``: every n-th training image holds type B (the share 1/n of empty lesion
    maps); ``radius_scale``: the lesions' radius (area ×scale², volume ×scale³); ``dimensions=3``:
    ``image``³ volumes with spherical lesions; ``others``: two structures labelled in every image
    beside the lesion (:func:`lesion_among_others`). The ``transition-*`` scenarios, on which the
    transition model of ``advise`` is checked where it was not fitted (docs/studies.md).
    """
    counts = {"train": train_cases, "val": _DEMO_SIZE.validation_cases, "test": test_cases}
    if others:
        draw = lesion_among_others
    else:
        draw = functools.partial(lesion_case, radius_scale=radius_scale, dimensions=dimensions)
    cases, types = lesion_cases(rng, counts, image, unlabelled_every, draw)
    by_id = {case.case_id: case for case in cases}
    return ToyData(
        {split: [by_id[case] for case in ids] for split, ids in types.items()},
        {
            "lesion_types.json": json.dumps(types, indent=2),
            "splits_final.json": json.dumps(
                [{"train": sorted(types["train"]), "val": sorted(types["val"])}] * 5, indent=2
            ),
        },
    )


def lesion_among_others(rng: np.random.Generator, kind: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The demo's lesion (label 1, type A or B) beside a dark disc (2) and a bright one (3), never touching.

    Radii: lesion S/10–S/6 as in the demo, dark S/9–S/7, bright S/14–S/11; intensities +1.6 (B's
    stripes 1.05 darker, as :func:`~nnunet_dicephi.synthetic.lesion_case`), −1.6 and +3.0.
    """
    discs = [
        (1, rng.uniform(size / 10, size / 6), 1.6),
        (2, rng.uniform(size / 9, size / 7), -1.6),
        (3, rng.uniform(size / 14, size / 11), 3.0),
    ]
    image, label = _draw(rng, size, discs)
    if kind == "B":
        stripe(image, label == 1)
    return image, label


def rare_class(
    rng: np.random.Generator, train_cases: int, test_cases: int, *, share: float = RARE_SHARE, size: int = IMAGE
) -> ToyData:
    """A bright common blob in every image; a small dark rare blob in exactly ``round(share·N)`` of each split.

    Which images hold the rare class is a seeded permutation per split, so the share is exact and
    not a binomial draw; elsewhere the rare class is truly absent and its empty map correct. Radii:
    common S/8–S/6, rare S/32–S/24 (at least 2 voxels), so the rare class's mean area is about a
    sixteenth of the common class's — WMH's "other pathologies" against the hyperintensities.
    """
    splits: dict[str, list[ToyCase]] = {}
    for split, count in (("train", train_cases), ("test", test_cases)):
        holds_rare = set(rng.permutation(count)[: round(share * count)].tolist())
        cases = []
        for i in range(count):
            discs = [(1, rng.uniform(size / 8, size / 6), 1.6)]
            if i in holds_rare:
                discs.append((2, rng.uniform(max(2.0, size / 32), max(2.5, size / 24)), -1.6))
            cases.append(ToyCase(f"toy_{split}_{i:03d}", *_draw(rng, size, discs), test=split == "test"))
        splits[split] = cases
    return ToyData(splits)


SIZES = {"large": 1 / 4, "medium": 1 / 10, "small": 1 / 25}
"""Radius of each ``imbalanced`` class as a share of the image side S (each drawn within ±10 %)."""
INTENSITIES = {"large": 1.0, "medium": 2.0, "small": -1.5}


def imbalanced(rng: np.random.Generator, train_cases: int, test_cases: int, *, size: int = IMAGE) -> ToyData:
    """Three classes in every image, radii about S/4, S/10 and S/25 (at least 2 voxels), never overlapping.

    Areas in the ratio of about 100 : 16 : 2.6 within each image, each class with its own intensity,
    so any loss can tell them apart and what differs between losses is how they weigh the sizes.
    """
    splits: dict[str, list[ToyCase]] = {}
    for split, count in (("train", train_cases), ("test", test_cases)):
        cases = []
        for i in range(count):
            discs = [
                (value, max(2.0, share * size * rng.uniform(0.9, 1.1)), INTENSITIES[name])
                for value, (name, share) in enumerate(SIZES.items(), start=1)
            ]
            cases.append(ToyCase(f"toy_{split}_{i:03d}", *_draw(rng, size, discs), test=split == "test"))
        splits[split] = cases
    return ToyData(splits)


TRANSITION_REGIMES: Sequence[tuple[str, str, dict[str, Any]]] = (
    ("small", "a quarter of the area (radius ×½)", {"radius_scale": 0.5}),
    ("large", "four times the area (radius ×2)", {"radius_scale": 2.0}),
    ("empty-1in6", "one training image in six of type B", {"unlabelled_every": 6}),
    ("empty-1in2", "one training image in two of type B", {"unlabelled_every": 2}),
    ("3d", "spheres in 32³ volumes", {"dimensions": 3, "image": 32}),
    ("among-others", "two other structures labelled in every image", {"others": True}),
    ("medium", "twice the area (radius ×√2)", {"radius_scale": 2**0.5}),
    (
        "large-1in2",
        "four times the area, one training image in two of type B",
        {"radius_scale": 2.0, "unlabelled_every": 2},
    ),
)
"""``transition-<name>`` scenarios: the demo's data with one thing changed, ``large-1in2`` two
(:func:`lesion_regime`)."""

ORGAN_LABELS = {"background": 0, **{organ.name: value for value, organ in enumerate(ORGANS, start=1)}}


def organs_3d(rng: np.random.Generator, train_cases: int, test_cases: int, *, size: int = ORGAN_IMAGE) -> ToyData:
    """Every ``size``³ volume holds the five :data:`~nnunet_dicephi.synthetic.ORGANS`, fully labelled.

    Ellipsoid (+1.0), torus (+3.0), tube (−2.2, banded), sphere (+1.6, brighter core) and box (−1.0,
    checkered) over zero-mean noise, each of its own shape, size within ±10 % and place, at least
    two voxels apart (:func:`~nnunet_dicephi.synthetic.organ_case`): volumes of about 1600, 470, 200,
    520 and 470 voxels in 40³, 5 % of the volume in all.
    """
    splits: dict[str, list[ToyCase]] = {}
    for split, count in (("train", train_cases), ("test", test_cases)):
        splits[split] = [
            ToyCase(f"toy_{split}_{i:03d}", *organ_case(rng, size), test=split == "test") for i in range(count)
        ]
    return ToyData(splits)


SCENARIOS: Mapping[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "missing-vs-empty",
            "the demo's lesions: type B's training labels are empty maps (MICCAI 2022, BRATS)",
            "ToyMissingVsEmpty",
            {"background": 0, "lesion": 1},
            missing_vs_empty,
            _DEMO_SIZE.train_cases,
            _DEMO_SIZE.test_cases,
        ),
        Scenario(
            "rare-class",
            f"a common class in every image, a small rare class in {RARE_SHARE:.0%} (Kervadec & de Bruijne, WMH)",
            "ToyRareClass",
            {"background": 0, "common": 1, "rare": 2},
            rare_class,
            50,
            20,
        ),
        Scenario(
            "imbalanced",
            "three classes of radius S/4, S/10 and S/25 in every image (Eelbode et al.)",
            "ToyImbalanced",
            {"background": 0, **{name: value for value, name in enumerate(SIZES, start=1)}},
            imbalanced,
            40,
            20,
        ),
        *(
            Scenario(
                f"transition-{name}",
                f"the demo's lesions with {what}: the transition model's check (type B's training labels empty)",
                f"ToyTransition{name.title().replace('-', '')}",
                {"background": 0, "lesion": 1, **({"dark": 2, "bright": 3} if options.get("others") else {})},
                functools.partial(lesion_regime, **options),
                _DEMO_SIZE.train_cases,
                _DEMO_SIZE.test_cases,
                dimensions=options.get("dimensions", 2),
            )
            for name, what, options in TRANSITION_REGIMES
        ),
        Scenario(
            "organs-3d",
            "five structures of distinct shapes and textures in every 40³ volume, fully labelled",
            "ToyOrgans3d",
            ORGAN_LABELS,
            organs_3d,
            24,
            10,
            dimensions=3,
        ),
        Scenario(
            "organs-3d-merged",
            "organs-3d-sources merged into one dataset by label name: training volumes that each annotate "
            "their source's structures (the manifest), the reference's fully labelled volumes as its test set",
            "ToyOrgans3dMerged",
            {"background": 0, "ellipsoid": 1, "sphere": 2, "torus": 3, "box": 4, "tube": 5},
            None,
            42,
            10,
            dimensions=3,
            merges="organs-3d-sources",
        ),
    )
}


# --- several source datasets ----------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One source dataset of a multi-source scenario: its name, what it annotates, its size."""

    suffix: str
    """Appended to the dataset name (``ToyOrgans3d`` + ``A``); lower-cased in its case ids (``toy_a_train_000``)."""
    annotates: tuple[str, ...]
    """The structures labelled in its cases; the others are in its images, labelled background."""
    train_cases: int


REFERENCE = "Reference"
"""Suffix of the last dataset of a multi-source scenario: every structure labelled, the test set."""


@dataclass(frozen=True)
class SourcesScenario:
    """Toy datasets that each annotate part of the same structures, and a fully labelled reference."""

    name: str
    summary: str
    dataset_name: str
    """The ``<Name>`` that each dataset's suffix is appended to, unless one is given."""
    structures: Mapping[str, int]
    """Every structure and its value in the drawn label maps (the reference's labels)."""
    draw: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]
    """``draw(rng)``: one image and its label map with every structure labelled."""
    sources: tuple[Source, ...]
    reference_train_cases: int
    """Fully labelled training cases of the reference (0: it brings the test set only)."""
    test_cases: int
    dimensions: int = 3


@dataclass(frozen=True)
class SourceData:
    """One dataset of a multi-source scenario as drawn: its labels, its cases as written and as drawn."""

    suffix: str
    role: str
    """``source`` or ``reference``."""
    annotates: tuple[str, ...]
    labels: Mapping[str, int]
    """Its dataset.json's labels: background and the structures it annotates, numbered 1, 2, … in order."""
    written: ToyData
    drawn: ToyData
    """The same images with every structure labelled: what the images hold."""


def _source_counts(spec: SourcesScenario, train_cases: Sequence[int] | None) -> list[int]:
    """Each source's training cases: ``train_cases`` checked, one positive count per source, or the defaults."""
    if train_cases is None:
        return [source.train_cases for source in spec.sources]
    if isinstance(train_cases, (str, bytes)) or len(train_cases) != len(spec.sources):
        raise ValueError(
            f"{spec.name} has {len(spec.sources)} sources, so it takes {len(spec.sources)} training counts "
            f"(e.g. {','.join(str(s.train_cases) for s in spec.sources)}); got {train_cases!r}"
        )
    for source, count in zip(spec.sources, train_cases):
        _check_count(f"the training cases of source {source.suffix}", count)
    return [int(count) for count in train_cases]


def draw_sources(
    spec: SourcesScenario,
    seed: int,
    train_cases: Sequence[int] | None = None,
    reference_train_cases: int | None = None,
    test_cases: int | None = None,
) -> list[SourceData]:
    """The datasets of ``spec``, sources first, the reference last; nothing is written.

    Each dataset draws from its own stream of ``seed`` (``SeedSequence(seed).spawn``), so a source's
    cases do not depend on how many cases the others hold: the reference's test set is the same
    whatever the sources' sizes. Only the sources' training cases and the reference's training and
    test cases exist; sources have no test set.
    """
    counts = _source_counts(spec, train_cases)
    foreground = [name for name, value in spec.structures.items() if value]
    plan = [(s.suffix, "source", s.annotates, {"train": n}) for s, n in zip(spec.sources, counts)]
    reference = {
        "train": spec.reference_train_cases if reference_train_cases is None else reference_train_cases,
        "test": test_cases or spec.test_cases,
    }
    plan.append((REFERENCE, "reference", tuple(foreground), reference))
    streams = np.random.SeedSequence(int(seed)).spawn(len(plan))
    datasets = []
    for (suffix, role, annotates, split_counts), stream in zip(plan, streams):
        rng = np.random.default_rng(stream)
        annotated = tuple(name for name in foreground if name in annotates)
        labels = {"background": 0, **{name: value for value, name in enumerate(annotated, start=1)}}
        relabel = np.zeros(max(spec.structures.values()) + 1, dtype=np.uint8)  # drawn value → written value
        for name, value in labels.items():
            relabel[spec.structures[name]] = value
        written: dict[str, list[ToyCase]] = {}
        drawn: dict[str, list[ToyCase]] = {}
        for split, count in split_counts.items():
            written[split], drawn[split] = [], []
            for i in range(count):
                image, label = spec.draw(rng)
                case_id, test = f"toy_{suffix.lower()}_{split}_{i:03d}", split == "test"
                drawn[split].append(ToyCase(case_id, image, label, test))
                written[split].append(ToyCase(case_id, image, relabel[label], test))
        datasets.append(SourceData(suffix, role, annotated, labels, ToyData(written), ToyData(drawn)))
    return datasets


SOURCE_SCENARIOS: Mapping[str, SourcesScenario] = {
    s.name: s
    for s in (
        SourcesScenario(
            "organs-3d-sources",
            "organs-3d's structures in three sources of 24, 12 and 6 volumes, each annotating its own subset "
            "(ellipsoid and sphere; torus and box; tube and sphere), and a fully labelled reference with the test set",
            "ToyOrgans3d",
            ORGAN_LABELS,
            organ_case,
            (
                Source("A", ("ellipsoid", "sphere"), 24),
                Source("B", ("torus", "box"), 12),
                Source("C", ("tube", "sphere"), 6),
            ),
            0,
            10,
        ),
    )
}


MERGED_SCENARIOS: Mapping[str, Scenario] = {name: s for name, s in SCENARIOS.items() if s.merges is not None}
"""The scenarios that write a multi-source scenario's datasets merged into one (:func:`write_merged_toy`)."""


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(str(name), [*SCENARIOS, *SOURCE_SCENARIOS], n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(
        f"unknown toy scenario {name!r}{hint}; known: {', '.join(SCENARIOS)}; "
        f"writing several datasets: {', '.join(SOURCE_SCENARIOS)}"
    )


def scenario_named(name: str) -> Scenario:
    """The registered one-dataset scenario ``name``; a ``ValueError`` naming the known ones otherwise.

    A multi-source scenario is refused with what to do instead: it writes several datasets, which one
    dataset id (a spec's ``toy``, :func:`write_toy`) cannot name.
    """
    if name in SCENARIOS:
        return SCENARIOS[name]
    if name in SOURCE_SCENARIOS:
        count = len(SOURCE_SCENARIOS[name].sources) + 1
        raise ValueError(
            f"toy scenario {name!r} writes {count} datasets (ids ID to ID+{count - 1}), not one: write them with "
            f"'nnunet-dicephi toy {name} -d ID' (write_toy_sources) and name them by id"
        )
    raise _unknown(name)


def sources_scenario_named(name: str) -> SourcesScenario:
    """The registered multi-source scenario ``name``; a ``ValueError`` otherwise."""
    if name in SOURCE_SCENARIOS:
        return SOURCE_SCENARIOS[name]
    if name in SCENARIOS:
        raise ValueError(f"toy scenario {name!r} writes one dataset: use write_toy")
    raise _unknown(name)


# --- measuring and writing --------------------------------------------------------------------


def measure(
    splits: Mapping[str, Sequence[ToyCase]], labels: Mapping[str, int], dimensions: int = 2
) -> dict[str, dict[str, dict]]:
    """Per foreground class and split: images, images where present, their share, mean area where present.

    Measured on the labels given, so in ``missing-vs-empty`` the lesion counts as absent where its
    label was emptied: the view a loss gets. In 3D (``dimensions=3``) the size is ``mean_volume``.
    """
    size_key = "mean_area" if dimensions == 2 else "mean_volume"
    measured: dict[str, dict[str, dict]] = {}
    for name, value in labels.items():
        if value == 0:
            continue
        measured[name] = {}
        for split, cases in splits.items():
            areas = [int(np.count_nonzero(case.label == value)) for case in cases]
            present = [area for area in areas if area]
            measured[name][split] = {
                "cases": len(areas),
                "present": len(present),
                "share": round(len(present) / len(areas), 4) if areas else None,
                size_key: round(float(np.mean(present)), 2) if present else None,
            }
    return measured


def _check_count(what: str, value: int | None, least: int = 1) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least):
        kind = "a positive integer" if least == 1 else f"an integer of at least {least}"
        raise ValueError(f"{what} must be {kind}; got {value!r}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")


def _toy_target(dataset_id: int, name: str, force: bool) -> Path:
    """:func:`prepare_target`'s folder, refusing to let ``force`` replace anything but a toy."""
    target = prepare_target(dataset_id, name, force)
    if target.exists() and not (target / RECORD_FILE).is_file():
        raise ValueError(
            f"{target} holds no {RECORD_FILE}, so it is not a toy dataset; --force only replaces those: "
            "pick another id or name"
        )
    return target


def _record(
    spec: Scenario | SourcesScenario, seed: int, data: ToyData, labels: Mapping[str, int], **identity: Any
) -> dict:
    """``dicephi_toy.json``: what was asked for (``identity`` after the version), then what was drawn."""
    from nnunet_dicephi import __version__

    first = next(case for cases in data.splits.values() for case in cases)
    return {
        "scenario": spec.name,
        "summary": spec.summary,
        "seed": int(seed),
        "version": __version__,
        **identity,
        "image_shape": list(first.image.shape),
        "counts": {split: len(cases) for split, cases in data.splits.items()},
        "classes": measure(data.splits, labels, spec.dimensions),
    }


def _write(target: Path, data: ToyData, labels: Mapping[str, int], record: dict, description: str, force: bool) -> Path:
    return write_raw_dataset(
        target,
        [case for cases in data.splits.values() for case in cases],
        labels=labels,
        spacing=(1.0, 1.0, 1.0),
        description=description,
        extra_files={**data.extra_files, RECORD_FILE: json.dumps(record, indent=2)},
        replace=force,
    )


def write_toy(
    scenario: str,
    dataset_id: int,
    name: str | None = None,
    *,
    seed: int = 0,
    train_cases: int | None = None,
    test_cases: int | None = None,
    force: bool = False,
) -> Path:
    """Write the toy dataset ``scenario`` as ``$nnUNet_raw/Dataset<ID>_<Name>``; returns its folder.

    Args:
        scenario: a key of :data:`SCENARIOS`.
        dataset_id: nnU-Net's dataset id, 1–999, not used by another dataset in nnU-Net's folders.
        name: the ``<Name>`` (default: the scenario's).
        seed: every image, label and choice follows from it.
        train_cases: training images (default: the scenario's); ``missing-vs-empty`` adds the demo's
            validation images to imagesTr.
        test_cases: test images (default: the scenario's).
        force: replace an existing folder, but only an earlier toy dataset (one holding
            ``dicephi_toy.json``), never a converted one given by mistake.

    Raises:
        ValueError: an unknown scenario, bad counts or seed, or a target that
            :func:`~nnunet_dicephi.conversion._target.prepare_target` refuses (``nnUNet_raw`` unset, a
            bad id or name, an id taken in nnU-Net's folders, an existing folder without ``force``).
    """
    spec = scenario_named(scenario)
    if spec.merges is not None:
        return write_merged_toy(
            scenario, dataset_id, name, seed=seed, train_cases=train_cases, test_cases=test_cases, force=force
        )
    _check_count("train_cases", train_cases)
    _check_count("test_cases", test_cases)
    _check_seed(seed)
    target = _toy_target(dataset_id, spec.dataset_name if name is None else name, force)
    data = spec.generate(np.random.default_rng(seed), train_cases or spec.train_cases, test_cases or spec.test_cases)
    record = _record(spec, seed, data, spec.labels)
    description = f"nnunet-dicephi toy {spec.name} (seed {seed}): {spec.summary}"
    return _write(target, data, spec.labels, record, description, force)


def write_toy_sources(
    scenario: str,
    dataset_id: int,
    name: str | None = None,
    *,
    seed: int = 0,
    train_cases: Sequence[int] | None = None,
    reference_train_cases: int | None = None,
    test_cases: int | None = None,
    force: bool = False,
) -> list[Path]:
    """Write the multi-source scenario ``scenario`` as the datasets ``dataset_id``, ``dataset_id + 1``, and so on.

    The sources come first, in the scenario's order, as ``Dataset<ID+k>_<Name><suffix>``; the
    fully labelled reference (``<Name>Reference``) last. Every target is checked, and every case
    drawn, before the first is written; each dataset appears atomically, and should writing one fail,
    those this call wrote are removed again. Returns the folders in that order.

    Args:
        scenario: a key of :data:`SOURCE_SCENARIOS`.
        dataset_id: the first dataset id; the last, ``dataset_id + len(sources)``, is at most 999.
        name: the ``<Name>`` that the suffixes are appended to (default: the scenario's).
        seed: every image, label and choice follows from it; each dataset draws from its own stream.
        train_cases: each source's training cases, one count per source (default: the scenario's).
        reference_train_cases: the reference's fully labelled training cases, 0 or more (default: the
            scenario's, 0).
        test_cases: the reference's test cases (default: the scenario's).
        force: replace earlier toy datasets of the same ids and names, never another dataset.

    Raises:
        ValueError: as :func:`write_toy`, for any of the datasets; also a wrong number of counts.
    """
    spec = sources_scenario_named(scenario)
    _source_counts(spec, train_cases)
    _check_count("reference_train_cases", reference_train_cases, least=0)
    _check_count("test_cases", test_cases)
    _check_seed(seed)
    base = spec.dataset_name if name is None else name
    suffixes = [*(s.suffix for s in spec.sources), REFERENCE]
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, (int, np.integer)) or not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be an integer from 1 to 999 (nnU-Net's three digits); got {dataset_id!r}")
    ids = list(range(int(dataset_id), int(dataset_id) + len(suffixes)))
    if ids[-1] > 999:
        raise ValueError(
            f"{spec.name} writes {len(ids)} datasets, ids {ids[0]} to {ids[-1]}: the last must be at most 999; "
            f"pick a first id of at most {1000 - len(ids)}"
        )
    targets = [_toy_target(i, base + suffix, force) for i, suffix in zip(ids, suffixes)]
    datasets = draw_sources(spec, seed, train_cases, reference_train_cases, test_cases)
    roster = [
        {
            "dataset_id": int(i),
            "dataset": target.name,
            "role": data.role,
            "annotates": list(data.annotates),
            "counts": {split: len(cases) for split, cases in data.written.splits.items()},
        }
        for i, target, data in zip(ids, targets, datasets)
    ]
    written: list[Path] = []
    try:
        for target, data in zip(targets, datasets):
            record = _record(spec, seed, data.written, data.labels, role=data.role, annotates=list(data.annotates))
            record["structures"] = measure(data.drawn.splits, spec.structures, spec.dimensions)
            record["datasets"] = roster
            if data.role == "reference":
                what = "every structure labelled, the test set"
            else:
                others = [n for n in spec.structures if spec.structures[n] and n not in data.annotates]
                what = f"annotates {', '.join(data.annotates)}; {', '.join(others)} in its images, labelled background"
            description = f"nnunet-dicephi toy {spec.name} (seed {seed}), {data.role} {data.suffix}: {what}"
            written.append(_write(target, data.written, data.labels, record, description, force))
    except BaseException:
        for folder in written:  # not half a collection: the datasets go together
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return written


def write_merged_toy(
    scenario: str,
    dataset_id: int,
    name: str | None = None,
    *,
    seed: int = 0,
    train_cases: int | Sequence[int] | None = None,
    test_cases: int | None = None,
    force: bool = False,
) -> Path:
    """Write the merged scenario ``scenario`` as ``$nnUNet_raw/Dataset<ID>_<Name>``; returns its folder.

    Its multi-source scenario's datasets are drawn as :func:`write_toy_sources` draws them (same seed,
    same volumes), written into a hidden folder beside the target, merged there by
    :func:`~nnunet_dicephi.merge.plan_merge` and :func:`~nnunet_dicephi.merge.write_merge`, and the
    result renamed into place; the sources are not kept. They take the ids 1, 2, … in the scenario's
    order (the reference last), so the cases are ``d001_…``, ``d002_…`` whatever ``dataset_id`` is.

    Args:
        scenario: a key of :data:`MERGED_SCENARIOS`.
        dataset_id: the merged dataset's id, as :func:`write_toy`'s.
        name: the ``<Name>`` (default: the scenario's).
        seed: every image, label and choice follows from it, as in :func:`write_toy_sources`.
        train_cases: each source's training cases (one count per source), or one total shared out in
            the scenario's proportions (at least one each), or None for the scenario's sizes.
        test_cases: the reference's volumes, the merged test set.
        force: replace an earlier toy dataset of the same id and name.

    Raises:
        ValueError: as :func:`write_toy`; nothing is left in ``nnUNet_raw``.
    """
    from nnunet_dicephi import merge
    from nnunet_dicephi._files import staging_folder
    from nnunet_dicephi._problems import InputError, Problems
    from nnunet_dicephi.conversion._target import move_into_place

    spec = scenario_named(scenario)
    sources = sources_scenario_named(spec.merges)
    if train_cases is not None and not isinstance(train_cases, (int, np.integer)):
        counts = _source_counts(sources, train_cases)
    else:
        _check_count("train_cases", train_cases)
        defaults = [source.train_cases for source in sources.sources]
        total = sum(defaults) if train_cases is None else int(train_cases)
        counts = [max(1, round(n * total / sum(defaults))) for n in defaults]
    _check_count("test_cases", test_cases)
    _check_seed(seed)
    target = _toy_target(dataset_id, spec.dataset_name if name is None else name, force)
    datasets = draw_sources(sources, seed, counts, 0, test_cases)
    target.parent.mkdir(parents=True, exist_ok=True)
    workspace = staging_folder(target)
    try:
        folders = []
        for number, data in enumerate(datasets, start=1):
            folder = workspace / f"Dataset{number:03d}_{sources.dataset_name}{data.suffix}"
            record = _record(sources, seed, data.written, data.labels, role=data.role, annotates=list(data.annotates))
            description = f"nnunet-dicephi toy {sources.name} (seed {seed}), {data.role} {data.suffix}"
            folders.append(_write(folder, data.written, data.labels, record, description, force=False))
        problems = Problems(f"cannot merge the sources of {scenario}", InputError)
        read = [merge.read_source(folder, problems) for folder in folders]
        problems.raise_if_any()
        merged = workspace / target.name
        merge.write_merge(merge.plan_merge(read), merged, progress=False)
        dataset_json = json.loads((merged / "dataset.json").read_text(encoding="utf-8"))
        for entry in dataset_json[merge.RECORD_KEY]["sources"]:
            entry["folder"] = None  # drawn for the merge and not kept: dicephi_toy.json says what they were
        sizes = ", ".join(map(str, counts))
        dataset_json["description"] = (
            f"nnunet-dicephi toy {spec.name} (seed {seed}, sources of {sizes}): {spec.summary}"
        )
        (merged / "dataset.json").write_text(json.dumps(dataset_json, indent=4) + "\n", encoding="utf-8")
        drawn = {"train": [], "test": []}
        for data in datasets:
            for split, cases in data.drawn.splits.items():
                drawn[split] += cases
        record = {
            "scenario": spec.name,
            "summary": spec.summary,
            "seed": int(seed),
            "version": _version(),
            "merges": sources.name,
            "image_shape": list(drawn["test"][0].image.shape),
            "counts": {split: len(cases) for split, cases in drawn.items()},
            "sources": [
                {
                    "source": number,
                    "prefix": merge.case_prefix(number),
                    "dataset": folder.name,
                    "role": data.role,
                    "annotates": list(data.annotates),
                    "counts": {split: len(cases) for split, cases in data.written.splits.items()},
                }
                for number, (folder, data) in enumerate(zip(folders, datasets), start=1)
            ],
            "structures": measure(drawn, sources.structures, sources.dimensions),
        }
        (merged / RECORD_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        move_into_place(merged, target, force)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return target


def _version() -> str:
    from nnunet_dicephi import __version__

    return __version__


# --- command line -----------------------------------------------------------------------------


def run_toy(args: argparse.Namespace) -> int:
    """Write a seeded toy dataset for a study into nnUNet_raw.

    Scenarios: missing-vs-empty (the demo's data: empty training labels for one lesion type),
    rare-class (a small class present in a fixed share of the images, as WMH's other pathologies),
    imbalanced (three classes of very different sizes in every image) and organs-3d (five structures
    of distinct shapes in 40-voxel cubes, for nnU-Net's 3d_fullres). Writes Dataset<ID>_<Name> with
    imagesTr/labelsTr, a test set in imagesTs/labelsTs and dicephi_toy.json, which records the seed
    and each class's measured share and size. organs-3d-sources writes organs-3d's structures as
    several datasets, ID, ID+1, ...: sources that each annotate their own subset (--cases, their
    sizes) and a fully labelled reference, the last, with the test set. Exit status 2 when the
    dataset cannot be written.
    """
    try:
        if args.scenario in SOURCE_SCENARIOS:
            return _run_sources(args)
        merged = args.scenario in MERGED_SCENARIOS
        if args.reference_cases is not None or (args.cases is not None and not merged):
            raise ValueError(
                f"--cases is for {', '.join([*SOURCE_SCENARIOS, *MERGED_SCENARIOS])} only, --reference-cases for "
                f"{', '.join(SOURCE_SCENARIOS)}"
            )
        if merged and args.cases is not None and args.train_cases is not None:
            raise ValueError("give --cases (each source's training cases) or --train-cases (their total), not both")
        folder = write_toy(
            args.scenario,
            args.dataset_id,
            args.name,
            seed=args.seed,
            train_cases=args.cases if merged and args.cases is not None else args.train_cases,
            test_cases=args.test_cases,
            force=args.force,
        )
    except (ValueError, OSError) as error:
        return refuse("toy", error)
    counts = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))["counts"]
    training = {split: n for split, n in counts.items() if split != "test"}
    in_training = ", ".join(f"{split} {n}" for split, n in training.items())
    print(f"wrote {folder}: {sum(training.values())} cases in imagesTr ({in_training}), {counts['test']} in imagesTs")
    configuration = " -c 3d_fullres" if SCENARIOS[args.scenario].dimensions == 3 else ""
    print(f"next: nnUNetv2_plan_and_preprocess -d {args.dataset_id}{configuration} --verify_dataset_integrity")
    return 0


def _run_sources(args: argparse.Namespace) -> int:
    if args.train_cases is not None:
        raise ValueError(
            f"{args.scenario} takes --cases N,N,... (each source's training cases) and --reference-cases N (the "
            "reference's), not --train-cases"
        )
    folders = write_toy_sources(
        args.scenario,
        args.dataset_id,
        args.name,
        seed=args.seed,
        train_cases=args.cases,
        reference_train_cases=args.reference_cases,
        test_cases=args.test_cases,
        force=args.force,
    )
    for folder in folders:
        record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
        counts = record["counts"]
        tests = f", {counts['test']} in imagesTs" if "test" in counts else ""
        annotated = ", ".join(record["annotates"])
        print(f"wrote {folder}: {counts['train']} cases in imagesTr{tests}; {record['role']} of {annotated}")
    ids = " ".join(str(args.dataset_id + i) for i in range(len(folders)))
    print(f"next: merge them by label name (nnunet-dicephi merge {ids} -d NEW_ID), or plan one source alone:")
    print(f"      nnUNetv2_plan_and_preprocess -d {args.dataset_id} -c 3d_fullres --verify_dataset_integrity")
    return 0


def _counts(text: str) -> list[int]:
    """``24,12,6`` → ``[24, 12, 6]``, each a positive integer."""
    parts = [part.strip() for part in text.split(",")]
    try:
        counts = [positive_int(part) for part in parts]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, e.g. 24,12,6; got {text!r}"
        ) from None
    return counts


_counts.__name__ = "comma-separated counts"


def add_parser(verbs: Any) -> None:
    """Add the ``toy`` verb to the subparsers object of the ``nnunet-dicephi`` command."""
    parser = add_verb(verbs, "toy", run_toy)
    names = [*SCENARIOS, *SOURCE_SCENARIOS]
    parser.add_argument("scenario", choices=names, metavar="SCENARIO", help=", ".join(names))
    parser.add_argument(
        "-d",
        "--dataset-id",
        type=int,
        required=True,
        help="nnU-Net dataset id (1-999); the first of several for *-sources",
    )
    parser.add_argument(
        "--name", help="dataset name (default: the scenario's, e.g. ToyRareClass; for *-sources, the suffixes' prefix)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the data (default: 0)")
    parser.add_argument(
        "--train-cases", type=positive_int, metavar="N", help="training images (default: the scenario's)"
    )
    parser.add_argument(
        "--test-cases",
        type=positive_int,
        metavar="N",
        help="test images (default: the scenario's; for *-sources, the reference's)",
    )
    parser.add_argument(
        "--cases",
        type=_counts,
        metavar="N,N,...",
        help="*-sources, *-merged: each source's training cases, in order (default for organs-3d: 24,12,6)",
    )
    parser.add_argument(
        "--reference-cases",
        type=non_negative_int,
        metavar="N",
        help="*-sources: the reference's fully labelled training cases (default: 0, the test set only)",
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier toy dataset of the same id and name")
