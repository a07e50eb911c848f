"""Tiny synthetic datasets in nnU-Net's raw format, for tests, demonstrations and studies.

:func:`write_raw_dataset` writes any list of :class:`ToyCase` atomically (the dataset folder
appears only once complete). Two generators feed it: :func:`write_dataset`, small 3D volumes with
one image channel holding up to two kinds of blobs (type 1 bright, type 2 dark; labels 0
background, 1 and 2 the blob types), used by the tests; and :func:`lesion_case`, the demo's 2D
images with one round lesion of type A (uniform) or B (striped).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_dicephi._files import replace_folder, staging_folder


@dataclass(frozen=True)
class ToyCase:
    """One case of a synthetic dataset: a one-channel image and its label map, both ``(z, y, x)``."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    test: bool = False
    """Written to imagesTs/labelsTs instead of imagesTr/labelsTr."""


def write_raw_dataset(
    target: Path,
    cases: Iterable[ToyCase],
    *,
    labels: Mapping[str, int],
    spacing: tuple[float, float, float],
    num_training: int | None = None,
    channel: str = "synthetic",
    description: str | None = None,
    extra_json: Mapping | None = None,
    extra_files: Mapping[str, str] | None = None,
    replace: bool = False,
) -> Path:
    """Write ``cases`` as the nnU-Net raw dataset ``target``, atomically; returns ``target``.

    Args:
        target: ``$nnUNet_raw/Dataset<ID>_<Name>``.
        cases: the cases, training and test.
        labels: nnU-Net's ``labels`` of dataset.json (``{"background": 0, ...}``).
        spacing: voxel spacing in SimpleITK's (x, y, z) order.
        num_training: dataset.json's ``numTraining`` (default: the training cases written).
        channel: the image channel's name.
        description: dataset.json's description.
        extra_json: further dataset.json keys (e.g. a partial-label manifest).
        extra_files: file name → text, written beside dataset.json.
        replace: replace an existing ``target`` (only once the new one is complete); otherwise an
            existing folder is a ``FileExistsError``.
    """
    import SimpleITK as sitk  # heavy, only needed here
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    target = Path(target)
    if target.exists() and not replace:
        raise FileExistsError(f"{target} exists; remove it or pick another dataset id")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(target)
    try:
        training = 0
        for case in cases:
            split = "Ts" if case.test else "Tr"
            training += not case.test
            for folder in (f"images{split}", f"labels{split}"):
                (staging / folder).mkdir(exist_ok=True)
            for array, path in (
                (case.image, f"images{split}/{case.case_id}_0000.nii.gz"),
                (case.label, f"labels{split}/{case.case_id}.nii.gz"),
            ):
                itk = sitk.GetImageFromArray(array)
                itk.SetSpacing(tuple(float(s) for s in spacing))
                sitk.WriteImage(itk, str(staging / path))
        generate_dataset_json(
            str(staging),
            channel_names={0: channel},
            labels=dict(labels),
            num_training_cases=training if num_training is None else num_training,
            file_ending=".nii.gz",
            dataset_name=target.name,
            **({"description": description} if description else {}),
            **dict(extra_json or {}),
        )
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        if replace:
            replace_folder(staging, target)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# --- blobs: the tests' datasets -------------------------------------------------------------------


def _blob(shape: tuple[int, ...], rng: np.random.Generator, radius: float) -> np.ndarray:
    grid = np.indices(shape).astype(np.float32)
    centre = [rng.uniform(radius, s - radius) if s > 2 * radius else s / 2 for s in shape]
    dist2 = sum(((g - c) / (radius if s > 2 * radius else max(s, 1))) ** 2 for g, c, s in zip(grid, centre, shape))
    return dist2 <= 1.0


def make_case(
    shape: tuple[int, ...], rng: np.random.Generator, kinds: tuple[int, ...], radius: float | None = None
) -> tuple:
    """One image and its label map with one blob of each kind in ``kinds`` (radius in voxels)."""
    image = rng.normal(0.0, 0.3, shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    for kind in kinds:
        mask = _blob(shape, rng, radius=radius or min(shape[1:]) / 5) & (labels == 0)
        labels[mask] = kind
        image[mask] += 2.0 if kind == 1 else -2.0
    return image, labels


def write_dataset(
    raw_root: str | os.PathLike,
    dataset_id: int,
    name: str,
    *,
    cases: int = 6,
    shape: tuple[int, int, int] = (4, 40, 40),
    seed: int = 0,
    unannotated: dict[int, tuple[str, ...]] | None = None,
    blob_radius: float | None = None,
    extra_json: dict | None = None,
) -> Path:
    """Write ``Dataset{id:03d}_{name}`` into ``raw_root``; returns its folder.

    Every case holds both blob types. ``unannotated`` maps case indices to label names whose
    annotations are removed (set to background) in that case; a partial-label manifest saying so is
    written into dataset.json. Refuses to overwrite an existing dataset folder.
    """
    rng = np.random.default_rng(seed)
    names = {"bright": 1, "dark": 2}
    manifest, cases_written = {}, []
    for index in range(cases):
        image, labels = make_case(shape, rng, (1, 2), blob_radius)
        case = f"case_{index:03d}"
        missing = (unannotated or {}).get(index, ())
        if missing:
            for label in missing:
                labels[labels == names[label]] = 0
            manifest[case] = [label for label in names if label not in missing]
        cases_written.append(ToyCase(case, image, labels))
    return write_raw_dataset(
        Path(raw_root) / f"Dataset{dataset_id:03d}_{name}",
        cases_written,
        labels={"background": 0, **names},
        spacing=(1.0, 1.0, 2.0),
        extra_json={
            **({"dicephi_partial_labels": {"complete": False, "cases": manifest}} if manifest else {}),
            **(extra_json or {}),
        },
    )


# --- lesions: the demo's images -------------------------------------------------------------------


def lesion_case(rng: np.random.Generator, kind: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``(1, size, size)`` image with one round lesion of type A (uniform) or B (striped).

    B's stripes (every other pair of columns) are 1.05 darker. How much B looks like A decides two
    behaviours at once: the more alike, the better a network that learned A alone segments B when
    Φ=I ignores B's empty maps, and the slower Φ=BI and the heuristic ε learn to leave B out.
    Measured (docs/demo.md): stripes 1.2 darker, Φ=I reached DSC B 0.86–0.93 only; 0.9 darker,
    Φ=BI learned the empty maps only in the last of 20 epochs (test DSC B 0.07); one column in three
    1.2 darker, or stripes brighter than A, and Φ=BI was still at DSC B 0.56 or 0.87 at the end.
    """
    image = rng.normal(0.0, 0.35, (1, size, size)).astype(np.float32)
    _, y, x = np.indices(image.shape)
    radius = rng.uniform(size / 10, size / 6)
    cy, cx = rng.uniform(radius + 2, size - radius - 2, 2)
    lesion = (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
    image[lesion] += 1.6
    if kind == "B":
        image[lesion & ((x // 2) % 2 == 0)] -= 1.05  # stripes: every other pair of columns darker
    return image, lesion.astype(np.uint8)


def lesion_cases(
    rng: np.random.Generator, counts: Mapping[str, int], image: int, unlabelled_every: int
) -> tuple[list[ToyCase], dict[str, dict[str, str]]]:
    """The demo's dataset: ``counts`` images per split (``train``, ``val``, ``test``), one lesion each.

    In training every ``unlabelled_every``-th image holds type B and its label is an empty map (the
    lesion is there, unlabelled); validation (``toy_val_*``, written to imagesTr) and test images
    alternate A and B and are fully labelled. Returns the cases and the lesion type of every case
    per split.
    """
    types: dict[str, dict[str, str]] = {split: {} for split in counts}
    cases = []
    for split, count in counts.items():
        for i in range(count):
            every = unlabelled_every if split == "train" else 2  # validation and test are balanced
            kind = "B" if i % every == every - 1 else "A"
            picture, label = lesion_case(rng, kind, image)
            if split == "train" and kind == "B":
                label[:] = 0  # the lesion is there, its label is an empty map
            case = f"toy_{split}_{i:03d}"
            types[split][case] = kind
            cases.append(ToyCase(case, picture, label, test=split == "test"))
    return cases, types
