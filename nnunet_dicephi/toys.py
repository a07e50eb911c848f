"""``nnunet-dicephi toy``: seeded toy datasets for studies, each the setting of one paper in miniature.

Every scenario writes a small 2D dataset in nnU-Net's raw format — one channel, ``(1, S, S)``
float32 images, uint8 labels, training cases in imagesTr/labelsTr and a test set in
imagesTs/labelsTs — through :func:`~nnunet_dicephi.synthetic.write_raw_dataset`, so the folder
appears only once complete. Small enough that nnU-Net's 2d planning and preprocessing take seconds
on a laptop CPU:

* ``missing-vs-empty`` — the demo's data (the MICCAI 2022 paper's BRATS setting): one lesion per
  image, type B's training labels are empty maps (:func:`~nnunet_dicephi.synthetic.lesion_cases`);
* ``rare-class`` — Kervadec & de Bruijne's WMH setting, whose "other pathologies" class is rare and
  often absent: a common class in every image, a small rare class in a fixed share of the images
  and correctly empty elsewhere;
* ``imbalanced`` — Eelbode et al.'s setting of structures of very different sizes: three classes in
  every image, their radii about S/4, S/10 and S/25.

Beside dataset.json, ``dicephi_toy.json`` records the scenario, the seed, the package version, the
counts per split and what each class measures in the labels written (the share of images where it is
present, its mean area), so that a study quotes its data rather than the recipe.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_dicephi._cli import add_verb, non_negative_int, positive_int, refuse
from nnunet_dicephi.conversion._target import prepare_target
from nnunet_dicephi.demo import DemoSize
from nnunet_dicephi.synthetic import ToyCase, lesion_cases, write_raw_dataset

RECORD_FILE = "dicephi_toy.json"
"""What was generated and what it measures, beside dataset.json; also marks a folder ``--force`` may replace."""
IMAGE = 64
"""Side S of the ``rare-class`` and ``imbalanced`` images (``missing-vs-empty`` keeps the demo's)."""
NOISE = 0.35
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
    generate: Callable[[np.random.Generator, int, int], ToyData]
    """``generate(rng, train_cases, test_cases)``; every draw comes from ``rng``."""
    train_cases: int
    test_cases: int


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
    size = DemoSize()
    counts = {"train": train_cases, "val": size.validation_cases, "test": test_cases}
    cases, types = lesion_cases(rng, counts, size.image, size.unlabelled_every)
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


_DEMO = DemoSize()

SCENARIOS: Mapping[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "missing-vs-empty",
            "the demo's lesions: type B's training labels are empty maps (MICCAI 2022, BRATS)",
            "ToyMissingVsEmpty",
            {"background": 0, "lesion": 1},
            missing_vs_empty,
            _DEMO.train_cases,
            _DEMO.test_cases,
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
    )
}


def scenario_named(name: str) -> Scenario:
    """The registered scenario ``name``; a ``ValueError`` naming the known ones (and the closest) otherwise."""
    if name in SCENARIOS:
        return SCENARIOS[name]
    close = difflib.get_close_matches(str(name), list(SCENARIOS), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown toy scenario {name!r}{hint}; known: {', '.join(SCENARIOS)}")


# --- measuring and writing --------------------------------------------------------------------


def measure(splits: Mapping[str, Sequence[ToyCase]], labels: Mapping[str, int]) -> dict[str, dict[str, dict]]:
    """Per foreground class and split: images, images where present, their share, mean area where present.

    Measured on the labels as written, so in ``missing-vs-empty`` the lesion counts as absent where
    its label was emptied: the view a loss gets.
    """
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
                "mean_area": round(float(np.mean(present)), 2) if present else None,
            }
    return measured


def _check_count(what: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"{what} must be a positive integer; got {value!r}")


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
    from nnunet_dicephi import __version__

    spec = scenario_named(scenario)
    _check_count("train_cases", train_cases)
    _check_count("test_cases", test_cases)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    target = prepare_target(dataset_id, spec.dataset_name if name is None else name, force)
    if target.exists() and not (target / RECORD_FILE).is_file():
        raise ValueError(
            f"{target} holds no {RECORD_FILE}, so it is not a toy dataset; --force only replaces those: "
            "pick another id or name"
        )
    data = spec.generate(np.random.default_rng(seed), train_cases or spec.train_cases, test_cases or spec.test_cases)
    first = next(case for cases in data.splits.values() for case in cases)
    record = {
        "scenario": spec.name,
        "summary": spec.summary,
        "seed": int(seed),
        "version": __version__,
        "image_shape": list(first.image.shape),
        "counts": {split: len(cases) for split, cases in data.splits.items()},
        "classes": measure(data.splits, spec.labels),
    }
    return write_raw_dataset(
        target,
        [case for cases in data.splits.values() for case in cases],
        labels=spec.labels,
        spacing=(1.0, 1.0, 1.0),
        description=f"nnunet-dicephi toy {spec.name} (seed {seed}): {spec.summary}",
        extra_files={**data.extra_files, RECORD_FILE: json.dumps(record, indent=2)},
        replace=force,
    )


# --- command line -----------------------------------------------------------------------------


def run_toy(args: argparse.Namespace) -> int:
    """Write a seeded toy dataset for a study into nnUNet_raw.

    Scenarios: missing-vs-empty (the demo's data: empty training labels for one lesion type),
    rare-class (a small class present in a fixed share of the images, as WMH's other pathologies)
    and imbalanced (three classes of very different sizes in every image). Writes
    Dataset<ID>_<Name> with imagesTr/labelsTr, a test set in imagesTs/labelsTs and dicephi_toy.json,
    which records the seed and each class's measured share and area. Exit status 2 when the dataset
    cannot be written.
    """
    try:
        folder = write_toy(
            args.scenario,
            args.dataset_id,
            args.name,
            seed=args.seed,
            train_cases=args.train_cases,
            test_cases=args.test_cases,
            force=args.force,
        )
    except (ValueError, OSError) as error:
        return refuse("toy", error)
    counts = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))["counts"]
    training = {split: n for split, n in counts.items() if split != "test"}
    in_training = ", ".join(f"{split} {n}" for split, n in training.items())
    print(f"wrote {folder}: {sum(training.values())} cases in imagesTr ({in_training}), {counts['test']} in imagesTs")
    print(f"next: nnUNetv2_plan_and_preprocess -d {args.dataset_id} --verify_dataset_integrity")
    return 0


def add_parser(verbs: Any) -> None:
    """Add the ``toy`` verb to the subparsers object of the ``nnunet-dicephi`` command."""
    parser = add_verb(verbs, "toy", run_toy)
    parser.add_argument("scenario", choices=list(SCENARIOS), metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset id (1-999)")
    parser.add_argument("--name", help="dataset name (default: the scenario's, e.g. ToyRareClass)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the data (default: 0)")
    parser.add_argument(
        "--train-cases", type=positive_int, metavar="N", help="training images (default: the scenario's)"
    )
    parser.add_argument("--test-cases", type=positive_int, metavar="N", help="test images (default: the scenario's)")
    parser.add_argument("--force", action="store_true", help="replace an earlier toy dataset of the same id and name")
