"""Tiny synthetic datasets in nnU-Net's raw format, for tests, demonstrations and studies.

:func:`write_raw_dataset` writes any list of :class:`ToyCase` atomically (the dataset folder
appears only once complete). Three generators feed it: :func:`write_dataset`, small 3D volumes with
one image channel holding up to two kinds of blobs (type 1 bright, type 2 dark; labels 0
background, 1 and 2 the blob types), used by the tests; :func:`lesion_case`, the demo's 2D
images with one round lesion of type A (uniform) or B (striped); and :func:`organ_case`, cubic 3D
volumes holding one each of the :data:`ORGANS`, five structures of distinct shapes and textures.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
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
        # an nnU-Net raw dataset always has imagesTr, even one that only brings a test set
        for folder in ("imagesTr", "labelsTr"):
            (staging / folder).mkdir()
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


def lesion_case(
    rng: np.random.Generator, kind: str, size: int, *, radius_scale: float = 1.0, dimensions: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(1, size, size)`` image (a ``size``³ volume with ``dimensions=3``), one round lesion of type A or B.

    B's stripes (every other pair of columns) are 1.05 darker. How much B looks like A decides two
    behaviours at once: the more alike, the better a network that learned A alone segments B when
    Φ=I ignores B's empty maps, and the slower Φ=BI and the heuristic ε learn to leave B out.
    Measured (docs/demo.md): stripes 1.2 darker, Φ=I reached DSC B 0.86–0.93 only; 0.9 darker,
    Φ=BI learned the empty maps only in the last of 20 epochs (test DSC B 0.07); one column in three
    1.2 darker, or stripes brighter than A, and Φ=BI was still at DSC B 0.56 or 0.87 at the end.
    The radius is drawn in [S/10, S/6] and multiplied by ``radius_scale`` (the transition's regimes:
    ½ and 2 give a quarter and four times the area); the defaults draw the demo's images.
    """
    image = rng.normal(0.0, 0.35, (1, size, size) if dimensions == 2 else (size,) * 3).astype(np.float32)
    grid = np.indices(image.shape)[-dimensions:]
    radius = rng.uniform(size / 10, size / 6) * radius_scale
    centre = rng.uniform(radius + 2, size - radius - 2, dimensions)
    lesion = sum((axis - c) ** 2 for axis, c in zip(grid, centre)) <= radius**2
    image[lesion] += 1.6
    if kind == "B":
        stripe(image, lesion)
    return image, lesion.astype(np.uint8)


def stripe(image: np.ndarray, lesion: np.ndarray) -> None:
    """Type B's look, in place: every other pair of columns (last axis) of ``lesion`` 1.05 darker."""
    columns = np.indices(lesion.shape)[-1]
    image[lesion & ((columns // 2) % 2 == 0)] -= 1.05


def lesion_cases(
    rng: np.random.Generator,
    counts: Mapping[str, int],
    image: int,
    unlabelled_every: int,
    draw: Callable[[np.random.Generator, str, int], tuple[np.ndarray, np.ndarray]] = lesion_case,
) -> tuple[list[ToyCase], dict[str, dict[str, str]]]:
    """The demo's dataset: ``counts`` images per split (``train``, ``val``, ``test``), one lesion each.

    In training every ``unlabelled_every``-th image holds type B and its label is an empty map (the
    lesion is there, unlabelled); validation (``toy_val_*``, written to imagesTr) and test images
    alternate A and B and are fully labelled. Returns the cases and the lesion type of every case
    per split. ``draw(rng, kind, image)`` draws one case (label 1 the lesion; others may label more).
    """
    types: dict[str, dict[str, str]] = {split: {} for split in counts}
    cases = []
    for split, count in counts.items():
        for i in range(count):
            every = unlabelled_every if split == "train" else 2  # validation and test are balanced
            kind = "B" if i % every == every - 1 else "A"
            picture, label = draw(rng, kind, image)
            if split == "train" and kind == "B":
                label[label == 1] = 0  # the lesion is there, its label is an empty map
            case = f"toy_{split}_{i:03d}"
            types[split][case] = kind
            cases.append(ToyCase(case, picture, label, test=split == "test"))
    return cases, types


# --- organs: 3D structures of distinct shapes and textures ------------------------------------------

ORGAN_IMAGE = 40
"""Side of the organs' cubic volumes in voxels: nnU-Net's 3d_fullres plans a 40³ patch for them."""
ORGAN_NOISE = 0.35
ORGAN_GAP = 2.0
"""Least distance in voxels between two structures, so that no two voxels of different ones are neighbours."""
PLACEMENT_TRIES = 200
"""Draws of a structure's place before placing it is given up as impossible."""


@dataclass(frozen=True)
class Organ:
    """One structure of :func:`organ_case`: its shape (named by ``name``), nominal size and appearance."""

    name: str
    """``ellipsoid``, ``torus``, ``tube``, ``sphere`` or ``box``: the shape too."""
    size: tuple[float, ...]
    """In voxels. Ellipsoid: semi-axes; torus: ring radius and tube radius; tube: radius and half-length;
    sphere: radius; box: half-sides. Each drawn within ±10 %; ellipsoid and box axes in random order,
    the torus's and tube's axis along a random one of the three."""
    intensity: float
    """Added to the background's zero-mean noise."""
    texture: str
    """``uniform``; ``shaded`` (+1 at the centre, falling linearly to +0 at the surface); ``checkered``
    (2-voxel cubes ±0.5); ``rings`` (2-voxel bands across the axis, ±0.5)."""


ORGANS = (
    Organ("ellipsoid", (9.0, 7.0, 6.0), 1.0, "uniform"),
    Organ("torus", (6.0, 2.0), 3.0, "uniform"),
    Organ("tube", (2.0, 8.0), -2.2, "rings"),
    Organ("sphere", (5.0,), 1.6, "shaded"),
    Organ("box", (5.0, 4.0, 3.0), -1.0, "checkered"),
)
"""The structures in label order (1–5), largest first, which is also the order they are placed in."""


@dataclass(frozen=True)
class _Placed:
    organ: Organ
    size: np.ndarray
    axis: int
    """The axis of a torus or tube (0, 1, 2 = z, y, x); unused by the others."""

    def half_extent(self) -> np.ndarray:
        """How far the structure reaches from its centre along z, y and x."""
        name, size = self.organ.name, self.size
        if name in ("ellipsoid", "sphere", "box"):
            return size
        ring, thickness = (size[0] + size[1], size[1]) if name == "torus" else (size[0], size[1])
        extent = np.full(3, ring)
        extent[self.axis] = thickness
        return extent

    def mask(self, offset: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Voxels inside, ``offset`` being ``(3, z, y, x)`` coordinates less the centre; grown by ``margin``.

        Growing every size by ``margin`` holds every point within ``margin`` of the shape (for the
        ellipsoid by Minkowski's inequality on its support function), so a grown mask that misses
        another structure keeps both at least ``margin`` apart.
        """
        name, size = self.organ.name, self.size + margin
        if name in ("ellipsoid", "sphere"):
            return sum((o / s) ** 2 for o, s in zip(offset, size)) <= 1.0
        if name == "box":
            return np.all(np.abs(offset) <= size[:, None, None, None], axis=0)
        along = offset[self.axis]
        across2 = sum(o**2 for i, o in enumerate(offset) if i != self.axis)
        if name == "torus":
            return (np.sqrt(across2) - self.size[0]) ** 2 + along**2 <= size[1] ** 2
        return (across2 <= size[0] ** 2) & (np.abs(along) <= size[1])  # tube

    def appearance(self, offset: np.ndarray) -> np.ndarray:
        """The intensity added at every voxel (used inside the mask only)."""
        organ = self.organ
        if organ.texture == "shaded":
            radial = np.sqrt(sum((o / s) ** 2 for o, s in zip(offset, self.size)))
            return organ.intensity + np.clip(1.0 - radial, 0.0, 1.0)
        if organ.texture == "checkered":
            cells = sum(np.floor(o / 2.0) for o in offset)
            return organ.intensity + np.where(cells % 2 == 0, 0.5, -0.5)
        if organ.texture == "rings":
            return organ.intensity + np.where(np.floor(offset[self.axis] / 2.0) % 2 == 0, 0.5, -0.5)
        return np.full(offset.shape[1:], organ.intensity)


def _drawn(organ: Organ, rng: np.random.Generator) -> _Placed:
    size = np.asarray(organ.size) * rng.uniform(0.9, 1.1, len(organ.size))
    if organ.name == "sphere":
        size = np.repeat(size, 3)
    elif organ.name in ("ellipsoid", "box"):
        size = rng.permutation(size)
    return _Placed(organ, size, int(rng.integers(3)))


def organ_case(
    rng: np.random.Generator, size: int = ORGAN_IMAGE, organs: tuple[Organ, ...] = ORGANS
) -> tuple[np.ndarray, np.ndarray]:
    """A ``(size, size, size)`` float32 volume and its uint8 labels holding one of each of ``organs``.

    Label ``k`` is ``organs[k - 1]``. Seeded rejection sampling in the given order: each structure
    gets :data:`PLACEMENT_TRIES` draws of its centre, inside the volume with a voxel of background to
    spare and, grown by :data:`ORGAN_GAP`, touching no structure placed before. One that finds no
    place is a ``ValueError`` rather than an endless loop or an overlapping label.
    """
    shape = (size,) * 3
    grid = np.indices(shape, dtype=np.float32)
    image = rng.normal(0.0, ORGAN_NOISE, shape).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    for value, organ in enumerate(organs, start=1):
        placed = _drawn(organ, rng)
        extent = placed.half_extent()
        if np.any(2 * extent + 2 >= size):
            raise ValueError(f"the {organ.name} of half-extent {np.round(extent, 1).tolist()} does not fit in {size}³")
        for _ in range(PLACEMENT_TRIES):
            centre = rng.uniform(extent + 1, size - extent - 1)
            offset = grid - centre[:, None, None, None].astype(np.float32)
            if not (placed.mask(offset, ORGAN_GAP) & (label > 0)).any():
                break
        else:
            raise ValueError(
                f"could not place the {organ.name} beside {value - 1} other structures in a {size}³ volume in "
                f"{PLACEMENT_TRIES} tries; use larger volumes or fewer structures"
            )
        inside = placed.mask(offset)
        label[inside] = value
        image[inside] += placed.appearance(offset)[inside].astype(np.float32)
    return image, label
