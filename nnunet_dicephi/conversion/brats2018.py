"""BraTS 2018 training data → nnU-Net, with the MICCAI 2022 paper's "LGG labels replaced by empty maps".

The download (``MICCAI_BraTS_2018_Data_Training``) holds ``HGG/`` (210 glioblastomas) and ``LGG/``
(75 lower grade gliomas), one folder per subject with four co-registered modalities and the
segmentation::

    HGG/Brats18_2013_10_1/Brats18_2013_10_1_{flair,t1,t1ce,t2,seg}.nii.gz

Segmentation values: 0 background, 1 necrotic and non-enhancing tumour core, 2 peritumoral
edema, 4 enhancing tumour. Case ids are ``<grade>_<subject>`` (``LGG_Brats18_2013_0_1``), so the
grade of every case is visible in nnU-Net's folders and in ``nnunet-dicephi report``'s tables.
Channels, as nnU-Net's own BraTS converters: 0 T1, 1 T1ce, 2 T2, 3 FLAIR.

Targets (``--target``):

* ``whole-tumour`` (default, the paper's task): one label, whole tumour = every value > 0;
* ``classes``: plain labels 1 edema, 2 non-enhancing/necrotic core, 3 enhancing tumour — softmax
  training, and partial-label manifests work;
* ``regions``: the same values with nnU-Net's region-based training (whole tumour, tumour core,
  enhancing tumour; ``regions_class_order`` (1, 2, 3)), as nnU-Net's BraTS converters. A manifest
  is undefined on regions, so the LGG scheme with regions is only possible in the empty-label view.

Scheme ``lgg-empty`` (Sect. 3 of the paper): every LGG training label becomes an empty map, HGG
labels are kept. See :mod:`nnunet_dicephi.conversion` for the missing- and empty-label views.
"""

from __future__ import annotations

from pathlib import Path

from nnunet_dicephi.conversion._dataset import write_dataset
from nnunet_dicephi.conversion._layout import layout_problems, require_dir, require_file, visible_dirs
from nnunet_dicephi.conversion._model import ConversionError, ConversionResult, DatasetSpec, Scheme, SourceCase, View

GRADES = ("HGG", "LGG")
MODALITIES = ("t1", "t1ce", "t2", "flair")
"""File suffixes in channel order."""
SOURCE_VALUES = (0, 1, 2, 4)
TARGETS = ("whole-tumour", "classes", "regions")
SCHEMES = ("lgg-empty",)
_REFERENCE = "https://www.med.upenn.edu/sbia/brats2018/data.html"
_CHANNELS = {0: "T1", 1: "T1ce", 2: "T2", 3: "FLAIR"}
# BraTS 1/2/4 → consecutive values ordered edema ⊂ … as nnU-Net's BraTS converters: the regions are then
# whole tumour (1, 2, 3) ⊃ tumour core (2, 3) ⊃ enhancing (3)
_CLASS_VALUES = {0: 0, 2: 1, 1: 2, 4: 3}


def spec(target: str = "whole-tumour") -> DatasetSpec:
    """Channels and labels for one of :data:`TARGETS`."""
    common = dict(
        title="BraTS 2018",
        channel_names=_CHANNELS,
        reference=_REFERENCE,
        licence="BraTS 2018 data terms of use; cite Menze et al. TMI 2015 and Bakas et al. 2017/2018",
    )
    if target == "whole-tumour":
        return DatasetSpec(
            **common,
            labels={"background": 0, "whole_tumour": 1},
            value_map={0: 0, 1: 1, 2: 1, 4: 1},
            description="BraTS 2018 training data, whole tumour (every BraTS label > 0) as one label.",
        )
    if target == "classes":
        return DatasetSpec(
            **common,
            labels={"background": 0, "edema": 1, "non_enhancing": 2, "enhancing": 3},
            value_map=_CLASS_VALUES,
            description="BraTS 2018 training data; BraTS labels 2, 1, 4 written as 1 edema, 2 necrotic/non-enhancing "
            "tumour core, 3 enhancing tumour.",
        )
    if target == "regions":
        return DatasetSpec(
            **common,
            labels={
                "background": 0,
                "whole_tumour": (1, 2, 3),
                "tumour_core": (2, 3),
                "enhancing_tumour": (3,),
            },
            value_map=_CLASS_VALUES,
            regions_class_order=(1, 2, 3),
            description="BraTS 2018 training data for nnU-Net's region-based training (whole tumour, tumour core, "
            "enhancing tumour); label values 1 edema, 2 necrotic/non-enhancing core, 3 enhancing tumour.",
        )
    raise ConversionError(f"target must be one of {', '.join(TARGETS)}; got {target!r}")


def lgg_empty(target: str = "whole-tumour") -> Scheme:
    """The paper's scheme: LGG training labels replaced by empty maps."""
    removed = tuple(sorted(set(spec(target).value_map.values()) - {0}))
    return Scheme(
        "lgg-empty",
        "every LGG label replaced by an empty map (HGG labels kept), as in Sect. 3 of Tilborghs, Bertels et al., "
        "MICCAI 2022",
        lambda case: removed if case.subset == "LGG" else (),
    )


def find_cases(source: str | Path) -> list[SourceCase]:
    """Every subject of ``HGG/`` and ``LGG/``; raises naming every missing folder or file at once."""
    source = Path(source)
    problems = layout_problems(f"{source} is not BraTS 2018 training data as downloaded")
    if not require_dir(source, problems.items, "source folder"):
        problems.raise_if_any()
    cases = []
    for grade in GRADES:
        folder = source / grade
        if not require_dir(folder, problems.items):
            continue
        subjects = visible_dirs(folder)
        if not subjects:
            problems.items.append(f"{folder} holds no subject folders")
        for subject in subjects:
            files = [subject / f"{subject.name}_{m}.nii.gz" for m in (*MODALITIES, "seg")]
            if all([require_file(f, problems.items) for f in files]):
                cases.append(SourceCase(f"{grade}_{subject.name}", tuple(files[:-1]), files[-1], subject.name, grade))
    problems.raise_if_any()
    return cases


def default_name(target: str = "whole-tumour", scheme: str | None = None, view: View = "missing") -> str:
    """``BraTS2018`` with the target and scheme spelled out: ``BraTS2018ClassesLGGMissing``, ..."""
    name = "BraTS2018" + {"whole-tumour": "", "classes": "Classes", "regions": "Regions"}.get(target, "")
    if scheme:
        name += "LGG" + ("Missing" if view == "missing" else "Empty")
    return name


def convert_brats2018(
    source: str | Path,
    dataset_id: int,
    name: str | None = None,
    *,
    target: str = "whole-tumour",
    scheme: str | None = None,
    view: View = "missing",
    force: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert the BraTS 2018 training data into ``$nnUNet_raw/Dataset<ID>_<Name>``.

    Args:
        source: the ``MICCAI_BraTS_2018_Data_Training`` folder (holding ``HGG/`` and ``LGG/``).
        dataset_id: nnU-Net dataset id (1–999).
        name: dataset name; default from target, scheme and view (:func:`default_name`).
        target: ``"whole-tumour"`` (the paper), ``"classes"`` or ``"regions"``.
        scheme: ``"lgg-empty"`` or None (fully labelled).
        view: with a scheme, ``"missing"`` embeds the manifest in dataset.json (trainers mask the
            LGG labels out), ``"empty"`` does not (the empty maps are learned as such; the paper's
            Table 1 setting). Both write ``partial_labels.json`` and ``labelsTr_full/``.
        force: replace an existing dataset folder of the same name.
        workers: processes converting subjects (default: min(4, CPUs)).
        progress: show a progress bar.

    Returns the :class:`ConversionResult`; raises :class:`ConversionError` naming every offender
    (layout, geometry, label values, target folder).
    """
    if scheme is not None and scheme not in SCHEMES:
        raise ConversionError(f"scheme must be one of {', '.join(SCHEMES)} or None; got {scheme!r}")
    dataset = spec(target)
    cases = find_cases(source)
    return write_dataset(
        dataset,
        cases,
        source=Path(source),
        converter="brats2018",
        dataset_id=dataset_id,
        name=default_name(target, scheme, view) if name is None else name,
        scheme=lgg_empty(target) if scheme else None,
        view=view,
        force=force,
        workers=workers,
        progress=progress,
    )
