"""WMH Segmentation Challenge 2017 training data → nnU-Net, WMH and other pathologies as classes.

The training download holds one folder per site and one per subject::

    Utrecht/0/pre/FLAIR.nii.gz       preprocessed FLAIR (the reference space)
    Utrecht/0/pre/T1.nii.gz          T1 registered to the FLAIR
    Utrecht/0/wmh.nii.gz             0 background, 1 white matter hyperintensities, 2 other pathology
    Utrecht/0/orig/...               original scans (not used)

with sites ``Utrecht``, ``Singapore`` and ``GE3T``. The 2022 full release (doi:10.34894/AECRSD)
groups the Amsterdam scanners: ``Amsterdam/GE3T/100/...``; both layouts are accepted and give the
same case ids, ``<site>_<subject>`` (``GE3T_100``), so datasets converted from either compare.
Only the training data is converted (pass a site-level folder of the test release to convert it
as a training-style dataset of its own).

Labels follow Kervadec & de Bruijne (MIDL 2023): WMH (1) and other pathology (2) are two classes.
The challenge itself ignores label 2 in its evaluation; here it is learned, which is what makes the
dataset interesting for empty maps: most patches hold no "other pathology" at all.
"""

from __future__ import annotations

import re
from pathlib import Path

from nnunet_dicephi.conversion._dataset import write_dataset
from nnunet_dicephi.conversion._layout import layout_problems, require_dir, require_file, visible_dirs
from nnunet_dicephi.conversion._model import ConversionResult, DatasetSpec, SourceCase

TRAINING_SITES = ("Utrecht", "Singapore", "GE3T")
GROUPING_FOLDERS = ("Amsterdam",)
"""Folders of the 2022 release that hold one folder per scanner (site) rather than per subject."""
SPEC = DatasetSpec(
    title="WMH 2017",
    channel_names={0: "FLAIR", 1: "T1"},
    labels={"background": 0, "WMH": 1, "other_pathology": 2},
    value_map={0: 0, 1: 1, 2: 2},
    reference="https://wmh.isi.uu.nl/ (data: https://doi.org/10.34894/AECRSD)",
    licence="WMH Segmentation Challenge data terms of use; cite Kuijf et al., IEEE TMI 38(11), 2019",
    description="WMH Segmentation Challenge 2017 training data: preprocessed FLAIR and T1 (pre/), labels WMH and "
    "other pathology as two classes (Kervadec & de Bruijne, MIDL 2023).",
)


def _site_tag(name: str) -> str:
    # scanner folders of the 2022 release contain spaces and dots ("Philips_VU .PETMR_01.")
    return re.sub(r"[^A-Za-z0-9]+", "", name) or "site"


def find_cases(source: str | Path) -> list[SourceCase]:
    """Every subject of every site; raises naming every missing site, folder or file at once."""
    source = Path(source)
    problems = layout_problems(f"{source} is not WMH 2017 training data as downloaded")
    if not require_dir(source, problems.items, "source folder"):
        problems.raise_if_any()
    sites: dict[str, Path] = {}
    for folder in visible_dirs(source):
        for site in visible_dirs(folder) if folder.name in GROUPING_FOLDERS else [folder]:
            if site.name in sites:
                problems.items.append(f"site {site.name} twice: {sites[site.name]} and {site}; keep one")
            sites[site.name] = site
    for site in TRAINING_SITES:
        if site not in sites:
            problems.items.append(f"missing site folder {source / site} (or {source / 'Amsterdam' / site})")
    cases = []
    for site, folder in sorted(sites.items()):
        subjects = visible_dirs(folder)
        if not subjects:
            problems.items.append(f"{folder} holds no subject folders")
        for subject in subjects:
            if not require_dir(subject / "pre", problems.items):
                require_file(subject / "wmh.nii.gz", problems.items)
                continue
            images = (subject / "pre" / "FLAIR.nii.gz", subject / "pre" / "T1.nii.gz")
            label = subject / "wmh.nii.gz"
            if all([require_file(p, problems.items) for p in (*images, label)]):
                group = f"{_site_tag(site)}_{subject.name}"
                cases.append(SourceCase(group, images, label, group, site))
    problems.raise_if_any()
    return cases


def convert_wmh2017(
    source: str | Path,
    dataset_id: int,
    name: str | None = None,
    *,
    force: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert the WMH 2017 training data into ``$nnUNet_raw/Dataset<ID>_<Name>``.

    Args:
        source: the training folder holding the site folders (``Utrecht``, ``Singapore``,
            ``GE3T`` or ``Amsterdam/GE3T``).
        dataset_id: nnU-Net dataset id (1–999).
        name: dataset name (default ``WMH2017``).
        force: replace an existing dataset folder of the same name.
        workers: processes converting subjects (default: min(4, CPUs)).
        progress: show a progress bar.

    Returns the :class:`ConversionResult`; raises :class:`ConversionError` naming every offender
    (layout, geometry, label values, target folder).
    """
    cases = find_cases(source)
    return write_dataset(
        SPEC,
        cases,
        source=Path(source),
        converter="wmh2017",
        dataset_id=dataset_id,
        name="WMH2017" if name is None else name,
        force=force,
        workers=workers,
        progress=progress,
    )
