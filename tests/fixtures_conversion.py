"""Tiny synthetic downloads laid out exactly like BraTS 2018, ACDC and WMH 2017, written on the fly.

Folder and file names, ``Info.cfg`` contents and label values follow the real downloads; volumes
are a few voxels wide, with a non-trivial spacing, origin and (rotated) direction per case so that
lost geometry shows. Arrays are ``(z, y, x)`` as SimpleITK's ``GetArrayFromImage`` returns them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SPACING = (0.9, 1.1, 2.5)
ORIGIN = (-10.5, 20.25, 3.0)
_ANGLE = math.radians(30)
DIRECTION = (
    math.cos(_ANGLE),
    -math.sin(_ANGLE),
    0.0,
    math.sin(_ANGLE),
    math.cos(_ANGLE),
    0.0,
    0.0,
    0.0,
    1.0,
)


def write_volume(path: Path, array: np.ndarray, spacing=SPACING, origin=ORIGIN, direction=DIRECTION) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    if array.ndim == 3:
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def read_volume(path: Path):
    """``(array, spacing, origin, direction)`` of a file."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _ball(shape: tuple[int, int, int], rng: np.random.Generator, radius: float) -> np.ndarray:
    z, y, x = np.indices(shape)
    centre = [s / 2 + rng.uniform(-0.5, 0.5) for s in shape]
    scale = [max(radius * s / max(shape), 0.8) for s in shape]
    return sum(((g - c) / r) ** 2 for g, c, r in zip((z, y, x), centre, scale)) <= 1.0


def _origin(index: int) -> tuple[float, float, float]:
    return (ORIGIN[0] + index, ORIGIN[1] - 0.5 * index, ORIGIN[2] + 0.25 * index)


# --- BraTS 2018 --------------------------------------------------------------------------------


def brats_seg(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Edema (2) around necrotic core (1) around enhancing tumour (4), the BraTS 2018 values."""
    seg = np.zeros(shape, np.uint8)
    seg[_ball(shape, rng, 4.0)] = 2
    seg[_ball(shape, rng, 2.6)] = 1
    seg[_ball(shape, rng, 1.4)] = 4
    return seg


def make_brats2018(
    root: Path, hgg: int = 3, lgg: int = 2, shape: tuple[int, int, int] = (8, 10, 12), seed: int = 0
) -> Path:
    """``root/MICCAI_BraTS_2018_Data_Training/{HGG,LGG}/<subject>/<subject>_{flair,t1,t1ce,t2,seg}.nii.gz``."""
    rng = np.random.default_rng(seed)
    source = Path(root) / "MICCAI_BraTS_2018_Data_Training"
    source.mkdir(parents=True)
    (source / "survival_data.csv").write_text("BraTS18ID,Age,Survival,ResectionStatus\n")
    index = 0
    for grade, count, institution in (("HGG", hgg, "2013"), ("LGG", lgg, "TCIA10")):
        for i in range(count):
            subject = f"Brats18_{institution}_{100 + i}_1"
            folder = source / grade / subject
            seg = brats_seg(shape, rng)
            origin = _origin(index)
            for j, modality in enumerate(("flair", "t1", "t1ce", "t2")):
                image = (rng.normal(100, 10, shape) + 50 * (seg > 0) * (j + 1)).astype(np.int16)
                write_volume(folder / f"{subject}_{modality}.nii.gz", image, origin=origin)
            write_volume(folder / f"{subject}_seg.nii.gz", seg, origin=origin)
            index += 1
    return source


# --- ACDC --------------------------------------------------------------------------------------


def acdc_gt(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """RV (1) beside a myocardium ring (2) around the LV cavity (3), the ACDC values."""
    gt = np.zeros(shape, np.uint8)
    _, y, x = np.indices(shape)
    cy, cx = shape[1] / 2 + rng.uniform(-0.5, 0.5), shape[2] * 0.6
    r = np.hypot(y - cy, x - cx)
    gt[r <= shape[1] * 0.35] = 2
    gt[r <= shape[1] * 0.2] = 3
    gt[(np.hypot(y - cy, x - cx + shape[2] * 0.45) <= shape[1] * 0.25) & (gt == 0)] = 1
    return gt


INFO_CFG = "ED: {ed}\nES: {es}\nGroup: {group}\nHeight: 184.0\nNbFrame: {frames}\nWeight: 95.0\n"


def make_acdc(
    root: Path,
    patients: int = 5,
    shape: tuple[int, int, int] = (6, 10, 8),
    test_patients: int = 0,
    frames: int = 12,
    seed: int = 0,
) -> Path:
    """``root/database/{training,testing}/patientXXX/`` with Info.cfg, the 4d file and ED/ES frames + _gt."""
    rng = np.random.default_rng(seed)
    source = Path(root) / "database"
    groups = ("DCM", "HCM", "MINF", "NOR", "RV")
    for split, first, count in (("training", 1, patients), ("testing", 101, test_patients)):
        (source / split).mkdir(parents=True, exist_ok=True)
        for number in range(first, first + count):
            patient = f"patient{number:03d}"
            folder = source / split / patient
            folder.mkdir()
            ed, es = 1, 5 + number % 6
            (folder / "Info.cfg").write_text(
                INFO_CFG.format(ed=ed, es=es, group=groups[number % 5], frames=frames), encoding="utf-8"
            )
            origin = _origin(number)
            cine = rng.normal(50, 5, (frames, *shape)).astype(np.float32)
            write_volume(folder / f"{patient}_4d.nii.gz", cine)
            for frame in (ed, es):
                gt = acdc_gt(shape, rng)
                image = (cine[frame - 1] + 40 * gt).astype(np.float32)
                write_volume(folder / f"{patient}_frame{frame:02d}.nii.gz", image, origin=origin)
                write_volume(folder / f"{patient}_frame{frame:02d}_gt.nii.gz", gt, origin=origin)
    return source


# --- WMH 2017 ----------------------------------------------------------------------------------

WMH_SUBJECTS = {"Utrecht": (0, 2, 4), "Singapore": (50, 51, 52), "GE3T": (100, 101, 102)}


def wmh_labels(shape: tuple[int, int, int], rng: np.random.Generator, other: bool) -> np.ndarray:
    """WMH (1) and, in some subjects, a dilated "other pathology" (2): the challenge's values."""
    labels = np.zeros(shape, np.uint8)
    labels[_ball(shape, rng, 2.0)] = 1
    if other:
        labels[:, :2, :3] = 2
    return labels


def make_wmh2017(
    root: Path,
    subjects: int = 2,
    shape: tuple[int, int, int] = (6, 10, 8),
    layout: str = "2017",
    seed: int = 0,
) -> Path:
    """``root/training/<site>/<subject>/{pre/FLAIR,pre/T1,wmh,orig/FLAIR}.nii.gz``.

    ``layout="2022"`` puts GE3T under ``Amsterdam/`` as the full release does.
    """
    rng = np.random.default_rng(seed)
    source = Path(root) / "training"
    index = 0
    for site, ids in WMH_SUBJECTS.items():
        site_folder = source / ("Amsterdam" if layout == "2022" and site == "GE3T" else "") / site
        for subject in ids[:subjects]:
            folder = site_folder / str(subject)
            labels = wmh_labels(shape, rng, other=index % 2 == 0)
            origin = _origin(index)
            flair = (rng.normal(100, 10, shape) + 60 * (labels == 1)).astype(np.float32)
            t1 = rng.normal(80, 10, shape).astype(np.float32)
            write_volume(folder / "pre" / "FLAIR.nii.gz", flair, origin=origin)
            write_volume(folder / "pre" / "T1.nii.gz", t1, origin=origin)
            write_volume(folder / "wmh.nii.gz", labels, origin=origin)
            # the original scans live in another space; a converter must not use them
            write_volume(folder / "orig" / "FLAIR.nii.gz", flair[:, ::-1], spacing=(1.0, 1.0, 3.0))
            index += 1
    return source
