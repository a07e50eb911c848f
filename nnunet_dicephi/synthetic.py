"""Tiny synthetic datasets in nnU-Net's raw format, for tests and demonstrations.

Each case is a small 3D volume with one image channel holding up to two kinds of blobs: type 1 is
bright, type 2 is dark. Labels: 0 background, 1 and 2 the blob types. Written atomically: the
dataset folder appears only once complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from nnunet_dicephi._files import staging_folder


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
    import SimpleITK as sitk  # heavy, only needed here
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    raw_root = Path(raw_root)
    target = raw_root / f"Dataset{dataset_id:03d}_{name}"
    if target.exists():
        raise FileExistsError(f"{target} exists; remove it or pick another dataset id")
    raw_root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    staging = staging_folder(target)
    try:
        (staging / "imagesTr").mkdir()
        (staging / "labelsTr").mkdir()
        names = {"bright": 1, "dark": 2}
        manifest = {}
        for index in range(cases):
            image, labels = make_case(shape, rng, (1, 2), blob_radius)
            case = f"case_{index:03d}"
            missing = (unannotated or {}).get(index, ())
            if missing:
                for label in missing:
                    labels[labels == names[label]] = 0
                manifest[case] = [label for label in names if label not in missing]
            for array, path in ((image, f"imagesTr/{case}_0000.nii.gz"), (labels, f"labelsTr/{case}.nii.gz")):
                itk = sitk.GetImageFromArray(array)
                itk.SetSpacing((1.0, 1.0, 2.0))
                sitk.WriteImage(itk, str(staging / path))
        generate_dataset_json(
            str(staging),
            channel_names={0: "synthetic"},
            labels={"background": 0, "bright": 1, "dark": 2},
            num_training_cases=cases,
            file_ending=".nii.gz",
            dataset_name=target.name,
            **({"dicephi_partial_labels": {"complete": False, "cases": manifest}} if manifest else {}),
            **(extra_json or {}),
        )
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
