"""ACDC → nnU-Net, with the MICCAI 2022 paper's "myocardium removed in ES" and a patient-grouped split.

The download (the ``database`` folder, or its ``training/`` folder) holds one folder per patient::

    training/patient001/Info.cfg                      ED: 1, ES: 12, Group: DCM, Height, NbFrame, Weight
    training/patient001/patient001_4d.nii.gz          the whole cine sequence (not used)
    training/patient001/patient001_frame01.nii.gz     the ED frame (3-D), and its labels:
    training/patient001/patient001_frame01_gt.nii.gz  0 background, 1 RV, 2 MYO, 3 LV
    training/patient001/patient001_frame12.nii.gz     the ES frame, and
    training/patient001/patient001_frame12_gt.nii.gz  its labels

``testing/`` (patients 101–150) has the same layout; with ``include_test`` it becomes ``imagesTs``
and ``labelsTs`` (never partially labelled: it is the fully labelled test set). The frame numbers
come from ``Info.cfg``; every case is one 3-D frame, ``patient001_ED`` and ``patient001_ES``.

Because ED and ES of one patient are two views of the same heart, the converter writes a
``splits_final.json`` that keeps both frames of a patient in one fold (see
:mod:`nnunet_dicephi.conversion.splits`; install it with ``nnunet-dicephi convert install-splits``).

Scheme ``es-myo-empty`` (Sect. 3 of the paper): the myocardium label is removed (set to background)
in every ES frame; RV and LV stay. The paper also sampled ED:ES at 3:1 for the heuristic ε run;
that is a sampling choice of the trainer, not of the data, and is not modelled here.
"""

from __future__ import annotations

import re
from pathlib import Path

from nnunet_dicephi.conversion._dataset import write_dataset
from nnunet_dicephi.conversion._layout import layout_problems, require_dir, require_file, visible_dirs
from nnunet_dicephi.conversion._model import ConversionError, ConversionResult, DatasetSpec, Scheme, SourceCase, View
from nnunet_dicephi.conversion.splits import DEFAULT_SEED, grouped_splits

SCHEMES = ("es-myo-empty",)
PHASES = ("ED", "ES")
_PATIENT = re.compile(r"patient\d{3}")

SPEC = DatasetSpec(
    title="ACDC",
    channel_names={0: "cineMRI"},
    labels={"background": 0, "RV": 1, "MYO": 2, "LV": 3},
    value_map={0: 0, 1: 1, 2: 2, 3: 3},
    reference="https://www.creatis.insa-lyon.fr/Challenge/acdc/",
    licence="ACDC terms of use; cite Bernard et al., IEEE TMI 37(11), 2018",
    description="ACDC cine MRI, end-diastolic (ED) and end-systolic (ES) frames as separate 3-D cases; labels RV, "
    "MYO (left ventricular myocardium), LV (left ventricular cavity).",
)


def es_myo_empty() -> Scheme:
    """The paper's scheme: myocardium labels removed in every ES frame."""
    myo = SPEC.labels["MYO"]
    return Scheme(
        "es-myo-empty",
        "myocardium (MYO) label removed in every end-systolic (ES) frame, RV and LV kept, as in Sect. 3 of "
        "Tilborghs, Bertels et al., MICCAI 2022",
        lambda case: (myo,) if case.subset == "ES" else (),
    )


def read_info(path: Path) -> tuple[dict[str, int], list[str]]:
    """The ED and ES frame numbers of an ``Info.cfg``, and what is wrong with it (every problem)."""
    problems = []
    fields: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            problems.append(f"{path} line {number}: {line.strip()!r} is not 'Key: value'")
            continue
        fields[key.strip()] = value.strip()
    frames: dict[str, int] = {}
    for phase in PHASES:
        if phase not in fields:
            problems.append(f"{path}: no '{phase}: <frame number>' line")
        elif not re.fullmatch(r"\d+", fields[phase]) or int(fields[phase]) < 1:
            problems.append(f"{path}: {phase} is {fields[phase]!r}, expected a frame number (1, 2, ...)")
        else:
            frames[phase] = int(fields[phase])
    count = fields.get("NbFrame")
    if count is not None:
        if not re.fullmatch(r"\d+", count):
            problems.append(f"{path}: NbFrame is {count!r}, expected a number of frames")
        else:
            for phase, frame in frames.items():
                if frame > int(count):
                    problems.append(f"{path}: {phase} frame {frame} is beyond NbFrame {count}")
    if len(frames) == 2 and frames["ED"] == frames["ES"]:
        problems.append(f"{path}: ED and ES are the same frame ({frames['ED']})")
    return frames, problems


def _patients(folder: Path, problems: list[str]) -> list[Path]:
    if not require_dir(folder, problems):
        return []
    patients = [p for p in visible_dirs(folder) if _PATIENT.fullmatch(p.name)]
    if not patients:
        problems.append(f"{folder} holds no patientXXX folders")
    return patients


def find_cases(source: str | Path, include_test: bool = False) -> list[SourceCase]:
    """Every ED and ES frame of ``training/`` (and ``testing/``); raises naming every offender at once.

    ``source`` is the ``database`` folder (holding ``training/`` and ``testing/``) or its
    ``training/`` folder (``testing/`` is then its sibling).
    """
    source = Path(source)
    problems = layout_problems(f"{source} is not the ACDC data as downloaded")
    if not require_dir(source, problems.items, "source folder"):
        problems.raise_if_any()
    if (source / "training").is_dir():
        roots = {"training": source / "training", "testing": source / "testing"}
    elif any(_PATIENT.fullmatch(p.name) for p in visible_dirs(source)):
        roots = {"training": source, "testing": source.parent / "testing"}
    else:
        problems.items.append(f"missing folder {source / 'training'} (or patientXXX folders in {source})")
        problems.raise_if_any()
    cases = []
    for split in ("training", "testing") if include_test else ("training",):
        for patient in _patients(roots[split], problems.items):
            info = patient / "Info.cfg"
            if not require_file(info, problems.items):
                continue
            frames, info_problems = read_info(info)
            if info_problems:  # frame numbers from a broken Info.cfg would only add misleading file names
                problems.items.extend(info_problems)
                continue
            for phase, frame in frames.items():
                image = patient / f"{patient.name}_frame{frame:02d}.nii.gz"
                label = patient / f"{patient.name}_frame{frame:02d}_gt.nii.gz"
                if all([require_file(image, problems.items), require_file(label, problems.items)]):
                    cases.append(
                        SourceCase(f"{patient.name}_{phase}", (image,), label, patient.name, phase, split == "testing")
                    )
    problems.raise_if_any()
    return cases


def default_name(scheme: str | None = None, view: View = "missing") -> str:
    """``ACDC``, ``ACDCMyoESMissing`` or ``ACDCMyoESEmpty``."""
    return "ACDC" + (("MyoESMissing" if view == "missing" else "MyoESEmpty") if scheme else "")


def convert_acdc(
    source: str | Path,
    dataset_id: int,
    name: str | None = None,
    *,
    scheme: str | None = None,
    view: View = "missing",
    include_test: bool = False,
    folds: int = 5,
    seed: int = DEFAULT_SEED,
    force: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert ACDC into ``$nnUNet_raw/Dataset<ID>_<Name>`` with a patient-grouped ``splits_final.json``.

    Args:
        source: the ``database`` folder, or its ``training/`` folder.
        dataset_id: nnU-Net dataset id (1–999).
        name: dataset name; default from scheme and view (:func:`default_name`).
        scheme: ``"es-myo-empty"`` or None (fully labelled).
        view: with a scheme, ``"missing"`` embeds the manifest in dataset.json (trainers mask MYO out
            in ES), ``"empty"`` does not (MYO is learned as absent in ES; the paper's Table 1 setting).
        include_test: also convert ``testing/`` into imagesTs/labelsTs.
        folds: folds of the grouped split.
        seed: seed of the grouped split.
        force: replace an existing dataset folder of the same name.
        workers: processes converting frames (default: min(4, CPUs)).
        progress: show a progress bar.

    Returns the :class:`ConversionResult` (``splits_file`` is the grouped split beside dataset.json);
    raises :class:`ConversionError` naming every offender (layout, Info.cfg, geometry, label values,
    target folder).
    """
    if scheme is not None and scheme not in SCHEMES:
        raise ConversionError(f"scheme must be one of {', '.join(SCHEMES)} or None; got {scheme!r}")
    cases = find_cases(source, include_test)
    splits = grouped_splits({c.case_id: c.group for c in cases if not c.test}, folds, seed)
    return write_dataset(
        SPEC,
        cases,
        source=Path(source),
        converter="acdc",
        dataset_id=dataset_id,
        name=default_name(scheme, view) if name is None else name,
        scheme=es_myo_empty() if scheme else None,
        view=view,
        splits=splits,
        force=force,
        workers=workers,
        progress=progress,
    )
