"""The measured transition between ignoring and learning empty maps, beside Eq. 4's prediction.

The MICCAI 2022 paper shows the two ends: Φ = I with ε ≈ 0 ignores an empty map, Φ = BI (B > 1) or
ε = E Σy learns it. When a report holds configurations that differ only in ε (same loss, Φ, plans
and training options, ε_nr = ε_dr), or only in the batch size B (plans variants
``<plans>_bs<B>``), they form a *sweep*. Per class, :func:`write_transition_figure` draws the mean
DSC and ΔV of each sweep against ε (log axis) or B, and on a second axis the push on an empty map
relative to the push off the label of a non-empty map that Eq. 4 predicts
(:attr:`~nnunet_dicephi.analysis.eq4.StepGradients.empty_to_background`: ≈ 0 ignored, 1 learned).

Eq. 4 needs the training maps: the share f of empty maps of a class and the volume V of a labelled
one, read from the fold's training cases (``splits_final.json`` and ``gt_segmentations`` in
``$nnUNet_preprocessed``), the patch size N from the run's plans, and F = v̂ = (1 − f)·V voxels
predicted on an empty map (the gradient explorer's default). Where the training maps cannot be read
the prediction is left out, with a note. ε = ``H`` (the heuristic) is placed at the value the run
recorded for the class (``dicephi_loss.json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from nnunet_dicephi._nnunet_names import parse_results_folder_name
from nnunet_dicephi.loss_config import HEURISTIC, REGISTRY, LossConfig, TrainerNameError, parse_trainer_name

from .inputs import Configuration
from .metrics import SegmentationClass
from .sweeps import Scenario, _Eps

if TYPE_CHECKING:
    import pandas as pd

SWEEP_COLUMNS = ("sweep", "sweep_axis", "sweep_value", "eq4_empty_to_background", "heuristic_eps")
"""Columns the summary gains for configurations that belong to a sweep."""


class Member(NamedTuple):
    """One configuration of a sweep and where it sits on the sweep's axis."""

    configuration: str
    loss: LossConfig
    batch_size: int | None
    eps: float | str
    """ε in voxels, or ``"H"``."""
    eps_per_class: tuple[float, ...] | None
    """The ε the run recorded per output channel (the heuristic's values), when found."""


class Sweep(NamedTuple):
    """Configurations that differ in one setting only: ε (``axis="eps"``) or the batch size (``"batch"``)."""

    dataset: str
    label: str
    axis: str
    """``"eps"`` or ``"batch"``."""
    members: tuple[Member, ...]

    def value(self, member: Member, channel: int | None) -> float:
        """The member's place on the axis for a class (the heuristic ε is per class)."""
        if self.axis == "batch":
            return float(member.batch_size or math.nan)
        if member.eps == HEURISTIC:
            values = member.eps_per_class
            if values is None or channel is None or channel >= len(values):
                return math.nan
            return float(values[channel])
        return float(member.eps)


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _trainer_folder(configuration: Configuration) -> Path | None:
    if configuration.kind == "trainer":
        return configuration.folder
    results = os.environ.get("nnUNet_results")
    if results:
        folder = Path(results) / configuration.dataset / configuration.folder.name
        if folder.is_dir():
            return folder
    return None


def _folder_name(configuration: Configuration) -> tuple[str, str, str] | None:
    try:
        return parse_results_folder_name(configuration.folder.name)
    except ValueError:  # a folder of predictions named otherwise
        return None


def _member(configuration: Configuration) -> tuple[Member, str, str] | None:
    """The configuration as a sweep member, with its plans and nnU-Net configuration; None if not ours."""
    parsed = _folder_name(configuration)
    if parsed is None:
        return None
    trainer, plans, nnunet_configuration = parsed
    try:
        loss = parse_trainer_name(trainer)
    except TrainerNameError:
        return None
    plans_file = _json(configuration.folder / "plans.json") or {}
    batch = plans_file.get("configurations", {}).get(nnunet_configuration, {}).get("batch_size")
    record = None
    folder = _trainer_folder(configuration)
    if folder is not None:
        for fold in sorted(folder.glob("fold_*")):
            record = _json(fold / "dicephi_loss.json")
            if record is not None:
                break
    per_class = record.get("eps_per_class") if record else None
    member = Member(
        configuration.name,
        loss,
        int(batch) if isinstance(batch, int) else None,
        loss.eps_nr,
        tuple(float(v) for v in per_class) if isinstance(per_class, list) else None,
    )
    return member, plans, nnunet_configuration


def find_sweeps(configurations: Sequence[Configuration]) -> list[Sweep]:
    """Groups of configurations that differ only in ε, or only in the batch size (two or more each)."""
    by_eps: dict[tuple, list[Member]] = {}
    by_batch: dict[tuple, list[Member]] = {}
    for configuration in configurations:
        found = _member(configuration)
        if found is None:
            continue
        member, plans, nnunet_configuration = found
        loss = member.loss
        if loss.eps_nr == loss.eps_dr and REGISTRY[loss.loss].takes_eps:  # the cross-entropies have no ε
            without_eps = dataclasses.replace(loss, eps_nr=0.0, eps_dr=0.0)
            key = (configuration.dataset, nnunet_configuration, plans, without_eps)
            by_eps.setdefault(key, []).append(member)
        base = plans.rsplit("_bs", 1)[0]  # the batch-size variants of one plans go together
        by_batch.setdefault((configuration.dataset, nnunet_configuration, base, loss), []).append(member)
    sweeps = []
    for (dataset, nnunet_configuration, _plans, loss), members in by_eps.items():
        if len({m.eps for m in members}) >= 2:
            phi = f", Φ = {loss.phi}" if loss.phi else ""
            batch = members[0].batch_size
            label = f"{loss.loss}{phi}, B = {batch}, {nnunet_configuration}: ε"
            ordered = sorted(members, key=lambda m: -1.0 if m.eps == HEURISTIC else float(m.eps))
            sweeps.append(Sweep(dataset, label, "eps", tuple(ordered)))
    for (dataset, nnunet_configuration, _, loss), members in by_batch.items():
        if len({m.batch_size for m in members}) >= 2 and all(m.batch_size for m in members):
            phi = f", Φ = {loss.phi}" if loss.phi else ""
            label = f"{loss.loss}{phi}, ε = {loss.eps_nr}, {nnunet_configuration}: B"
            sweeps.append(Sweep(dataset, label, "batch", tuple(sorted(members, key=lambda m: m.batch_size or 0))))
    return sweeps


# --- Eq. 4 from the training maps ---------------------------------------------------------------


@dataclass(frozen=True)
class TrainingMaps:
    """Per class: the share of empty training maps, and the mean volume of a labelled one."""

    empty_fraction: float
    volume: float
    patch_voxels: int


def training_maps(configuration: Configuration, classes: Sequence[SegmentationClass]) -> dict[str, TrainingMaps]:
    """From the fold's training cases in ``$nnUNet_preprocessed`` (empty when they cannot be read)."""
    folder = _trainer_folder(configuration)
    preprocessed = os.environ.get("nnUNet_preprocessed")
    parsed = _folder_name(configuration)
    if folder is None or not preprocessed or parsed is None:
        return {}
    dataset_folder = Path(preprocessed) / configuration.dataset
    splits = _json(dataset_folder / "splits_final.json")
    folds = sorted(int(p.name[5:]) for p in folder.glob("fold_[0-9]"))
    plans = _json(configuration.folder / "plans.json") or _json(folder / "plans.json") or {}
    patch = plans.get("configurations", {}).get(parsed[2], {}).get("patch_size")
    if not isinstance(splits, list) or not folds or folds[0] >= len(splits) or not patch:
        return {}
    cases = splits[folds[0]].get("train", [])
    reader = configuration.reader()
    counts: dict[str, list[int]] = {c.name: [] for c in classes}
    for case in cases:
        path = dataset_folder / "gt_segmentations" / f"{case}{configuration.file_ending}"
        if not path.is_file():
            return {}
        labels, _ = reader.read_seg(str(path))
        for segmentation_class in classes:
            counts[segmentation_class.name].append(int(np.isin(labels, segmentation_class.values).sum()))
    out = {}
    for name, values in counts.items():
        array = np.asarray(values, dtype=np.float64)
        labelled = array[array > 0]
        if len(array) and len(labelled):
            out[name] = TrainingMaps(float(np.mean(array == 0)), float(labelled.mean()), int(np.prod(patch)))
    return out


def predicted_push(maps: TrainingMaps, sweep: Sweep, member: Member, x: float) -> float:
    """Eq. 4's push on an empty map relative to background, for one member (ε = x voxels or B = x)."""
    f = min(max(maps.empty_fraction, 0.0), 1.0)
    volume = min(maps.volume, float(maps.patch_voxels))
    scenario = Scenario("class", volume, (1.0 - f) * volume, maps.patch_voxels)
    loss = member.loss
    if loss.loss != "Dice" or loss.phi is None or not math.isfinite(x):
        return math.nan
    eps = _Eps(x, x) if sweep.axis == "eps" else _Eps(float(loss.eps_nr), float(loss.eps_dr))
    batch = int(x) if sweep.axis == "batch" else (member.batch_size or 2)
    g = scenario.gradients(scenario.v_hat, eps, phi=loss.phi, batch_size=batch, empty_fraction=f)
    return float(g.empty_to_background)


# --- the table and the figure ----------------------------------------------------------------------


def sweep_table(
    sweeps: Sequence[Sweep], summary: pd.DataFrame, maps: dict[tuple[str, str], TrainingMaps], channels: dict[str, int]
) -> pd.DataFrame:
    """``summary`` with :data:`SWEEP_COLUMNS` filled for every (class, member) of a sweep.

    A configuration in two sweeps (ε and B) gets one row per sweep.
    """
    import pandas as pd

    rows = []
    for sweep in sweeps:
        for member in sweep.members:
            part = summary[(summary["dataset"] == sweep.dataset) & (summary["configuration"] == member.configuration)]
            for row in part.to_dict("records"):
                x = sweep.value(member, channels.get(row["class"]))
                class_maps = maps.get((sweep.dataset, row["class"]))
                push = predicted_push(class_maps, sweep, member, x) if class_maps is not None else math.nan
                rows.append(
                    {
                        **row,
                        "sweep": sweep.label,
                        "sweep_axis": sweep.axis,
                        "sweep_value": x,
                        SWEEP_COLUMNS[3]: push,
                        "heuristic_eps": member.eps == HEURISTIC,
                    }
                )
    columns = [*summary.columns, *SWEEP_COLUMNS]
    return pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(columns=columns)


def write_transition_figure(table: pd.DataFrame, dataset: str, path: Path) -> bool:
    """Per class (rows) and sweep (columns): DSC and ΔV against the sweep's axis, Eq. 4 on a twin axis."""
    from matplotlib.figure import Figure

    data = table[table["dataset"] == dataset]
    if data.empty:
        return False
    classes = list(dict.fromkeys(data["class"]))
    sweeps = list(dict.fromkeys(data["sweep"]))
    figure = Figure(figsize=(4.6 * len(sweeps), 3.3 * 2 * len(classes)), layout="constrained")
    axes = figure.subplots(2 * len(classes), len(sweeps), squeeze=False)
    for row, name in enumerate(classes):
        for col, label in enumerate(sweeps):
            part = data[(data["class"] == name) & (data["sweep"] == label)].sort_values("sweep_value")
            log = (part["sweep_axis"] == "eps").all()
            values = part["sweep_value"].to_numpy(float)
            measured = np.isfinite(part["dsc_mean"].to_numpy(float))
            part = part[np.isfinite(values) & (values > 0 if log else True) & measured]
            top, bottom = axes[2 * row, col], axes[2 * row + 1, col]
            if part.empty:  # a class never labelled where it was measured, or without a heuristic ε to place
                for ax in (top, bottom):
                    ax.set_axis_off()
                top.set_title(f"{label}\n{name}: no point to plot", fontsize=9)
                continue
            x = part["sweep_value"].to_numpy(float)
            top.plot(x, part["dsc_mean"], "o-", color="C0", label="DSC (measured)")
            marked = part["heuristic_eps"].to_numpy(bool)
            for value, dsc in zip(x[marked], part["dsc_mean"].to_numpy(float)[marked]):
                top.annotate("H", (value, dsc), textcoords="offset points", xytext=(4, 4), fontsize=8)
            top.set_ylim(-0.05, 1.05)
            top.set_ylabel(f"{name}: DSC", color="C0")
            push = part[SWEEP_COLUMNS[3]].to_numpy(float)
            if np.isfinite(push).any():
                twin = top.twinx()
                twin.plot(x, push, "s--", color="C3", label="Eq. 4: empty / background push")
                twin.set_ylabel("Eq. 4: push on an empty map / background", color="C3", fontsize=8)
                twin.set_ylim(bottom=0)
                if log:
                    twin.set_xscale("log")
            bottom.plot(x, part["delta_ml_mean"], "o-", color="C2")
            bottom.axhline(0, color="grey", lw=0.7, ls="--")
            bottom.set_ylabel(f"{name}: ΔV [ml]", color="C2")
            for ax in (top, bottom):
                if log:
                    ax.set_xscale("log")
                ax.set_xlabel("ε (voxels)" if log else "batch size B")
            top.set_title(label, fontsize=9)
    figure.suptitle(f"{dataset}: the measured transition")
    figure.savefig(path, dpi=120)
    return True


def transition(
    configurations: Sequence[Configuration], summary: pd.DataFrame, folder: Path, notes: list[str]
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The sweeps of a report: their table (written as ``transition.csv``) and one figure per dataset."""
    sweeps = find_sweeps(configurations)
    if not sweeps:
        return sweep_table([], summary, {}, {}), []
    maps: dict[tuple[str, str], TrainingMaps] = {}
    channels: dict[str, int] = {}
    by_name = {c.name: c for c in configurations}
    for sweep in sweeps:
        configuration = by_name[sweep.members[0].configuration]
        for segmentation_class in configuration.classes:
            if segmentation_class.channel is not None:
                channels[segmentation_class.name] = segmentation_class.channel
        if not any(key[0] == sweep.dataset for key in maps):
            found = training_maps(configuration, configuration.classes)
            if not found:
                notes.append(
                    f"{sweep.dataset}: Eq. 4's prediction left out of the transition (the fold's training maps "
                    "were not found in $nnUNet_preprocessed)"
                )
            maps.update({(sweep.dataset, name): value for name, value in found.items()})
    table = sweep_table(sweeps, summary, maps, channels)
    figures = []
    for dataset in dict.fromkeys(s.dataset for s in sweeps):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in dataset)
        name = f"transition_{safe}.png"
        if write_transition_figure(table, dataset, folder / name):
            figures.append((dataset, name))
    return table, figures
