r"""The Eq. 4 gradient explorer: how hard the Dice loss pushes an empty map toward empty.

The derivative of the general Dice loss (MICCAI 2022, Eq. 3) with respect to one predicted
probability takes two values per subset φ of Φ (Eq. 4):

.. math::

    \frac{\partial \mathrm{DL}}{\partial \tilde y_\omega}
        = -\frac{1}{|\Phi|}\left(\frac{2 y_\omega}{U_\phi + \epsilon_{dr}}
          - \frac{2 I_\phi + \epsilon_{nr}}{(U_\phi + \epsilon_{dr})^2}\right),
    \qquad I_\phi = \sum_{\phi} y\,\tilde y, \quad U_\phi = \sum_{\phi} (y + \tilde y).

Both values depend on the prediction only through the subset sums, so one training step is fully
described by a few numbers per map. The model used here (one output channel, as the paper's BRATS
runs) is a batch of B maps of N voxels each:

* an *empty* map (no labelled voxel) on which the network predicts a false-positive volume
  :math:`F = \sum_i \tilde y_i`;
* a *non-empty* map with V labelled voxels, of which the network covers ``overlap``·V
  (:math:`I = aV`), plus ``outside``·V predicted volume off the label
  (:math:`U = V + aV + oV`). The defaults a = o = ½ are the paper's Eq. 5 assumptions
  (Σỹ ≈ Σy, 50 % overlap).

A share ``empty_fraction`` of the batch is empty (at least one map, and at least one non-empty map
when B ≥ 2). For B = 1 a batch holds one map, so the empty and the non-empty map are two
different steps; this is why Φ = I and Φ = BI coincide at B = 1.

For Φ = I the subset of an empty map holds no label, :math:`I_\phi = 0`, :math:`U_\phi = F`, and

.. math::

    \frac{\partial \mathrm{DL}}{\partial \tilde y_\omega}
        = \frac{1}{B}\,\frac{\epsilon_{nr}}{(F + \epsilon_{dr})^2}
        \approx \frac{\epsilon_{nr}}{B F^2} \quad (F \gg \epsilon_{dr}),

negligible for ε = 1e-7: the map is ignored, which is what makes Φ = I handle *missing* labels.
For ε_nr = ε_dr = ε this push is largest at ε = F, and the heuristic ε = v̂ (Sect. 2.3, the
expected labelled volume of one map) puts that maximum where an unlearned empty map predicts a
typical volume. For Φ = BI the empty map shares its subset with the labelled maps of the batch,
so it receives exactly the background gradient of those maps: empty maps are *learned*.

For ε → ∞ every gradient tends to ±1/(|Φ|·ε) on every map alike: the Dice loss becomes the
L1 loss Σ|y − ỹ|/ε, with no class balancing and a vanishing scale. The transition between the two
regimes is what :func:`transition` computes and the sweep recipe (:func:`sweep_names`) trains.

Φ = CI and Φ = BCI: with one output channel in the loss a batch element's classes are that one
channel, so CI gives the values of I and BCI those of BI (the core :func:`eq4_gradients` handles
any number of channels). Deep supervision is not modelled: the values are those of the
full-resolution output. Only numpy is imported at module level.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from nnunet_dicephi.loss_config import DEFAULT_EPS, PHIS

__all__ = [
    "PHIS",
    "BRATS_PATCH_VOXELS",
    "BRATS_VOLUME",
    "Eq4Gradients",
    "StepGradients",
    "Scenario",
    "SweepEntry",
    "eq4_gradients",
    "maps_per_subset",
    "step_sums",
    "step_gradients",
    "empty_maps_in_batch",
    "batch_gradients",
    "transition",
    "heuristic_eps",
    "sweep_eps",
    "sweep_names",
    "sweep_recipe",
    "scenarios_from_statistics",
    "add_parser",
]

BRATS_PATCH_VOXELS = 80 * 80 * 48
"""The paper's BRATS output segment, 80×80×48 voxels."""
BRATS_VOLUME = 12412.0
"""The paper's ε for fully labelled BRATS (mean tumour voxels of a patch), used as V of a non-empty map.

With a quarter of the maps empty this gives v̂ ≈ 9300, close to the paper's 8789 for its partially
labelled BRATS (75 of 285 cases empty)."""
TINY_EPS = DEFAULT_EPS
REPORT_COMMAND = "nnunet-dicephi report {folders} --folds {folds} -o eps_sweep_report"
"""How the sweep's runs are compared: ``nnunet-dicephi report`` over the trainers' results folders."""


def _results_folder(dataset: str) -> str:
    """The dataset's folder under ``$nnUNet_results`` as a shell word (a glob when given by id)."""
    name = f"Dataset{int(dataset):03d}_*" if dataset.isdigit() else dataset
    return f'"$nnUNet_results"/{name}'


# --- Eq. 4 on per-map sums ----------------------------------------------------------------------


class Eq4Gradients(NamedTuple):
    """The two values of Eq. 4 for every ``(b, c)`` map: on its y = 0 and on its y = 1 voxels."""

    background: np.ndarray
    """∂DL/∂ỹ on a voxel with y = 0 (positive: descent lowers ỹ)."""
    label: np.ndarray
    """∂DL/∂ỹ on a voxel with y = 1 (negative, so descent raises ỹ, unless ε_nr ≫ ε_dr)."""


_SUBSET_AXES = {"I": (), "CI": (1,), "BI": (0,), "BCI": (0, 1)}


def _check_phi(phi: str) -> str:
    if phi not in _SUBSET_AXES:
        raise ValueError(f"phi must be one of {', '.join(PHIS)}; got {phi!r}")
    return phi


def maps_per_subset(phi: str, batch_size: int, classes: int = 1) -> int:
    """Number of ``(b, c)`` maps in one subset of Φ.

    The trainers' heuristic ε (``H``) is added once per map (``eps_per="map"``), so its
    per-subset value is ε times this.
    """
    sizes = (batch_size, classes)
    return math.prod(sizes[a] for a in _SUBSET_AXES[_check_phi(phi)])


def eq4_gradients(
    inter: np.ndarray,
    pred: np.ndarray,
    target: np.ndarray,
    *,
    phi: str,
    eps_nr: float | np.ndarray,
    eps_dr: float | np.ndarray,
) -> Eq4Gradients:
    r"""Eq. 4 from the per-map sums, for every map of a batch and every point of a grid.

    .. math::

        g_0 = \frac{1}{|\Phi|}\,\frac{2 I_\phi + \epsilon_{nr}}{(U_\phi + \epsilon_{dr})^2},
        \qquad g_1 = g_0 - \frac{1}{|\Phi|}\,\frac{2}{U_\phi + \epsilon_{dr}}

    with :math:`I_\phi, U_\phi` the sums of ``inter`` and ``pred + target`` over the maps of the
    subset holding the map. A subset with :math:`U_\phi + \epsilon_{dr} = 0` passes no gradient,
    as in ``soft_dice_loss``.

    Args:
        inter: ``(B, C, *grid)`` Σ_i y·ỹ of each map.
        pred: ``(B, C, *grid)`` Σ_i ỹ of each map.
        target: ``(B, C, *grid)`` Σ_i y of each map.
        phi: ``"I"``, ``"CI"``, ``"BI"`` or ``"BCI"``.
        eps_nr: ε of the numerator, added once per subset; a number or an array broadcasting
            against ``grid``.
        eps_dr: ε of the denominator, same forms.

    Returns:
        :class:`Eq4Gradients` with arrays of the broadcast shape ``(B, C, *grid)``, float64.
    """
    axes = _SUBSET_AXES[_check_phi(phi)]
    inter, pred, target = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (inter, pred, target)))
    if inter.ndim < 2:
        raise ValueError(f"the sums need shape (B, C, *grid); got {inter.shape}")
    batch, classes = inter.shape[:2]
    eps_nr, eps_dr = np.asarray(eps_nr, dtype=np.float64), np.asarray(eps_dr, dtype=np.float64)
    # the grid may come from ε alone (a transition curve): give the sums its dimensions
    grid = np.broadcast_shapes(inter.shape[2:], eps_nr.shape, eps_dr.shape)
    lead = (batch, classes) + (1,) * (len(grid) - (inter.ndim - 2))
    inter, pred, target = (x.reshape(lead + x.shape[2:]) for x in (inter, pred, target))
    subsets = batch * classes // maps_per_subset(phi, batch, classes)
    # keepdims: each subset's sums broadcast straight back onto its maps
    i_phi = inter.sum(axis=axes, keepdims=True)
    u_phi = (pred + target).sum(axis=axes, keepdims=True)
    den = u_phi + eps_dr
    safe = den > 0
    den = np.where(safe, den, 1.0)
    background = np.where(safe, (2.0 * i_phi + eps_nr) / den**2, 0.0) / subsets
    label = background - np.where(safe, 2.0 / den, 0.0) / subsets
    shape = np.broadcast_shapes(inter.shape, background.shape)
    return Eq4Gradients(np.broadcast_to(background, shape).copy(), np.broadcast_to(label, shape).copy())


# --- the model of one training step -------------------------------------------------------------


class StepGradients(NamedTuple):
    """Per-voxel Eq. 4 values in one step: on an empty map, and on the two kinds of voxel of a non-empty one."""

    empty: np.ndarray
    """∂DL/∂ỹ on a voxel of an empty map (the push toward empty)."""
    background: np.ndarray
    """∂DL/∂ỹ on a y = 0 voxel of a non-empty map."""
    label: np.ndarray
    """∂DL/∂ỹ on a y = 1 voxel of a non-empty map."""

    @property
    def empty_to_background(self) -> np.ndarray:
        """Push toward empty on an empty map over the push toward 0 off the label of a non-empty map.

        The like-for-like comparison of the paper's Eq. 5: 1 for Φ = BI (one subset), ≈ 0 for
        Φ = I with a tiny ε (the empty map is ignored).
        """
        return _ratio(self.empty, self.background)

    @property
    def empty_to_label(self) -> np.ndarray:
        """Push toward empty on an empty map over the push toward the label on a non-empty map.

        The tug of war when empty and non-empty maps look alike (LGG vs HGG): whether the network
        learns to leave a map empty depends on this ratio.
        """
        return _ratio(self.empty, np.abs(self.label))


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, np.asarray(a) / np.where(b != 0, b, 1.0), np.nan)


def step_sums(
    volume: float | np.ndarray,
    fp: float | np.ndarray,
    *,
    batch_size: int,
    empty_maps: int,
    overlap: float = 0.5,
    outside: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Per-map sums ``(inter, pred, target)``, each ``(B, 1, *grid)``, of the step model.

    The first ``empty_maps`` maps are empty (:math:`I = 0`, :math:`\sum\tilde y = F`,
    :math:`\sum y = 0`); the others hold V labelled voxels (:math:`I = aV`,
    :math:`\sum\tilde y = (a + o)V`, :math:`\sum y = V`). ``volume`` and ``fp`` broadcast to ``grid``.
    """
    if batch_size < 1 or not 0 <= empty_maps <= batch_size:
        raise ValueError(f"need B >= 1 and 0 <= empty maps <= B; got B={batch_size}, empty maps={empty_maps}")
    volume, fp = np.broadcast_arrays(np.asarray(volume, dtype=np.float64), np.asarray(fp, dtype=np.float64))
    empty = (np.arange(batch_size) < empty_maps).reshape((batch_size, 1) + (1,) * volume.ndim)
    inter = np.where(empty, 0.0, overlap * volume)
    pred = np.where(empty, fp, (overlap + outside) * volume)
    target = np.where(empty, 0.0, volume)
    return inter, pred, target


def step_gradients(
    volume: float | np.ndarray,
    fp: float | np.ndarray,
    *,
    phi: str,
    batch_size: int,
    empty_maps: int,
    eps_nr: float | np.ndarray,
    eps_dr: float | np.ndarray,
    overlap: float = 0.5,
    outside: float = 0.5,
) -> StepGradients:
    """Eq. 4 values of one step of the model (see :func:`step_sums`); NaN for a kind of map the batch lacks.

    ε is per subset (see :func:`maps_per_subset` for a per-map ε). Every argument that is an
    array broadcasts to one grid, so a whole curve is one call.
    """
    sums = step_sums(volume, fp, batch_size=batch_size, empty_maps=empty_maps, overlap=overlap, outside=outside)
    g = eq4_gradients(*sums, phi=phi, eps_nr=eps_nr, eps_dr=eps_dr)
    nan = np.full(g.background.shape[2:], np.nan)
    has_empty, has_labelled = empty_maps > 0, empty_maps < batch_size
    return StepGradients(
        empty=g.background[0, 0] if has_empty else nan,
        background=g.background[-1, 0] if has_labelled else nan,
        label=g.label[-1, 0] if has_labelled else nan,
    )


def empty_maps_in_batch(batch_size: int, empty_fraction: float) -> int:
    """Empty maps in a batch of B ≥ 2: ⌊f·B + ½⌋, kept in [1, B − 1] so both kinds of map are present."""
    if batch_size < 2:
        raise ValueError("a batch of one map holds either an empty or a non-empty map; see batch_gradients")
    return int(min(max(math.floor(empty_fraction * batch_size + 0.5), 1), batch_size - 1))


def batch_gradients(
    volume: float | np.ndarray,
    fp: float | np.ndarray,
    *,
    phi: str,
    batch_size: int,
    empty_fraction: float,
    eps_nr: float | np.ndarray,
    eps_dr: float | np.ndarray,
    overlap: float = 0.5,
    outside: float = 0.5,
) -> StepGradients:
    """Empty- and non-empty-map gradients for a batch of B maps with a share of empty maps.

    For B ≥ 2 both come from one step with :func:`empty_maps_in_batch` empty maps. For B = 1 the
    empty map and the non-empty map are two steps of one map each.
    """
    common = {"phi": phi, "batch_size": batch_size, "eps_nr": eps_nr, "eps_dr": eps_dr}
    common |= {"overlap": overlap, "outside": outside}
    if batch_size >= 2:
        return step_gradients(volume, fp, empty_maps=empty_maps_in_batch(batch_size, empty_fraction), **common)
    empty = step_gradients(volume, fp, empty_maps=1, **common).empty
    labelled = step_gradients(volume, fp, empty_maps=0, **common)
    empty, background, label = np.broadcast_arrays(empty, labelled.background, labelled.label)
    return StepGradients(empty, background, label)


def transition(
    eps: np.ndarray | Sequence[float],
    *,
    volume: float,
    fp: float,
    phi: str = "I",
    batch_size: int = 2,
    empty_fraction: float = 0.25,
    overlap: float = 0.5,
    outside: float = 0.5,
) -> StepGradients:
    r"""The gradients as ε_nr = ε_dr = ε runs over ``eps``: from ignoring empty maps to learning them.

    For Φ = I, with :math:`U = (1 + a + o)V` and :math:`I = aV` on the non-empty map,

    .. math::

        \frac{g_\text{empty}}{g_\text{background}}
            = \frac{\epsilon\,(U + \epsilon)^2}{(F + \epsilon)^2\,(2I + \epsilon)}

    grows like ε for small ε and tends to 1 for ε → ∞, where the loss becomes an L1 loss; on
    the way it may overshoot 1. Under Φ = I the ratios do not depend on B (|Φ| = B cancels).

    Returns:
        :class:`StepGradients` over ``eps`` (use its ratio properties for the transition curves).
    """
    eps = np.asarray(eps, dtype=np.float64)
    return batch_gradients(
        volume,
        fp,
        phi=phi,
        batch_size=batch_size,
        empty_fraction=empty_fraction,
        eps_nr=eps,
        eps_dr=eps,
        overlap=overlap,
        outside=outside,
    )


def heuristic_eps(volumes: Sequence[float], empty_fraction: float) -> float:
    r"""v̂ = E[Σ_φ y] over maps of which a share f is empty: :math:`(1 - f)\,\overline{V}` (Sect. 2.3)."""
    return float((1.0 - empty_fraction) * np.mean(np.asarray(volumes, dtype=np.float64)))


# --- the sweep recipe ---------------------------------------------------------------------------


class SweepEntry(NamedTuple):
    """One run of the ε sweep."""

    eps: float | str
    """ε_nr = ε_dr in voxels, or ``"H"`` for the heuristic."""
    trainer: str
    """Its canonical trainer name."""


def _one_digit(x: float) -> float:
    """Round to one significant digit, so that the trainer name stays short (3e3, not 2983)."""
    return float(f"{x:.0e}")


_DECADE_STEPS = {1: (1.0,), 2: (1.0, 3.0), 3: (1.0, 2.0, 5.0)}


def sweep_eps(v_hat: float, *, per_decade: int = 1, low: float = TINY_EPS, high_factor: float = 10.0) -> list[float]:
    """Log-spaced ε from ``low`` (the paper's 1e-7), then 1 voxel … through v̂ … to ``high_factor``·v̂.

    Between ``low`` and one voxel the push on an empty map stays ≈ ε/F², negligible for any
    predicted volume F of a voxel or more, so the decades below one voxel are skipped. Values have
    one significant digit (steps 1, 3 for two per decade; 1, 2, 5 for three).
    """
    if not v_hat > 0:
        raise ValueError(f"the heuristic ε must be > 0 to place a sweep; got {v_hat}")
    if per_decade < 1:
        raise ValueError(f"per_decade must be >= 1; got {per_decade}")
    steps = _DECADE_STEPS.get(per_decade) or tuple(
        sorted({_one_digit(10 ** (k / per_decade)) for k in range(per_decade)})
    )
    high = high_factor * v_hat
    values = [low]
    decade = 0
    while True:
        for step in steps:
            value = _one_digit(step * 10.0**decade)
            if value > low and value not in values:
                values.append(value)
            if value >= high:
                return values
        decade += 1


def sweep_names(
    v_hat: float,
    *,
    per_decade: int = 1,
    epochs: int | None = None,
    high_factor: float = 10.0,
) -> list[SweepEntry]:
    """Trainer names of the Φ = I ε sweep, the heuristic (``TrainerDiceIEps``) placed at v̂.

    Every name is checked to parse back to its configuration with the project's name grammar and
    to be safe for nnU-Net (no ``.``, no ``__``). Imports the trainer package (and with it nnU-Net).
    """
    from nnunet_dicephi.loss_config import HEURISTIC, LossConfig, parse_trainer_name, trainer_name

    numbers = sweep_eps(v_hat, per_decade=per_decade, high_factor=high_factor)
    ordered: list[tuple[float, float | str]] = [(e, e) for e in numbers] + [(v_hat, HEURISTIC)]
    ordered.sort(key=lambda pair: (pair[0], isinstance(pair[1], str)))
    entries = []
    for _, eps in ordered:
        config = LossConfig(loss="Dice", phi="I", eps_nr=eps, eps_dr=eps, epochs=epochs)
        name = trainer_name(config)
        if parse_trainer_name(name) != config or "." in name or "__" in name:
            raise AssertionError(f"sweep name {name!r} does not round-trip")  # a bug in the grammar
        entries.append(SweepEntry(eps, name))
    return entries


def sweep_recipe(
    entries: Sequence[SweepEntry],
    *,
    v_hat: dict[str, float],
    dataset: str = "DATASET",
    configuration: str = "CONFIGURATION",
    folds: Sequence[str] = ("0", "1", "2", "3", "4"),
    plans: str = "nnUNetPlans",
    reference: Sequence[str] = ("TrainerDiceBI",),
) -> str:
    """The sweep as text: ε and trainer names, the ``nnUNetv2_train`` command lines, the report command."""
    plans_option = "" if plans == "nnUNetPlans" else f" -p {plans}"
    width = max(len(e.trainer) for e in entries)
    lines = [
        "# ε sweep for Φ = I, from ignoring empty maps (ε = 1e-7) to learning them (ε ≳ v̂)",
        "# v̂ (heuristic ε, voxels): " + ", ".join(f"{k} = {v:.6g}" for k, v in v_hat.items()),
        "#",
        f"# {'trainer':<{width}}  ε_nr = ε_dr",
    ]
    for entry in entries:
        eps = "H (v̂ of each class)" if isinstance(entry.eps, str) else f"{entry.eps:g}"
        lines.append(f"# {entry.trainer:<{width}}  {eps}")
    for name in reference:
        lines.append(f"# {name:<{width}}  reference: Φ = BI learns empty maps with B > 1")
    trainers = [e.trainer for e in entries] + list(reference)
    lines.append("")
    for name in trainers:
        for fold in folds:
            lines.append(f"nnUNetv2_train {dataset} {configuration} {fold} -tr {name}{plans_option}")
    lines += [
        "",
        REPORT_COMMAND.format(
            folders=" \\\n    ".join(f"{_results_folder(dataset)}/{t}__{plans}__{configuration}" for t in trainers),
            folds=" ".join(folds),
        ),
        "",
    ]
    return "\n".join(lines)


# --- scenarios: given volumes or a dataset fold -------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One class (or one given volume): what the model needs beyond Φ, B and ε."""

    name: str
    volume: float
    """V: labelled voxels of a non-empty map."""
    v_hat: float
    """The heuristic ε, E[Σ y] over all maps including empty ones."""
    patch_voxels: int
    """N: voxels of one map."""

    @property
    def slug(self) -> str:
        """The name as a file-name part."""
        text = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in self.name.replace("=", ""))
        return "_".join(part for part in text.split("_") if part) or "class"


def scenarios_from_statistics(
    channels: Sequence[str],
    expected_volume: Sequence[float],
    patch_voxels: int,
    *,
    has_background: bool,
    empty_fraction: float,
) -> list[Scenario]:
    """One scenario per foreground channel of the project's dataset statistics.

    v̂ is the statistics' expected patch volume; V = v̂/(1 − f) keeps E[Σ y] = v̂ when a share f of
    the maps is empty (capped at the patch). Channel 0 is dropped when it is the background.
    """
    pairs = list(zip(channels, expected_volume))[1 if has_background else 0 :]
    return [
        Scenario(f"class {name}", min(v / (1.0 - empty_fraction), float(patch_voxels)), float(v), int(patch_voxels))
        for name, v in pairs
        if v > 0
    ]


def _load_dataset(args: argparse.Namespace) -> tuple[list[Scenario], int]:
    """Scenarios and nnU-Net's batch size from a dataset fold, via the trainer's statistics pass."""
    import torch

    from nnunet_dicephi.trainers import trainer_class

    trainer_class(args.trainer)  # validates the name before nnU-Net's lookup prints its own message
    from nnunetv2.run.run_training import get_trainer_from_args

    fold = args.fold if args.fold == "all" else int(args.fold)
    # nnU-Net reports on stdout; keep stdout for the table
    with contextlib.redirect_stdout(sys.stderr):
        trainer = get_trainer_from_args(
            str(args.dataset), args.configuration, fold, args.trainer, args.plans, device=torch.device("cpu")
        )
        stats = trainer.dataset_statistics()
    scenarios = scenarios_from_statistics(
        stats.channels,
        stats.expected_volume,
        stats.patch_voxels,
        has_background=not trainer.label_manager.has_regions,
        empty_fraction=args.empty_fraction,
    )
    return scenarios, int(trainer.configuration_manager.batch_size)


# --- the table ----------------------------------------------------------------------------------


class _InputError(ValueError):
    """Bad command-line input: reported in one line, exit status 2."""


@dataclass(frozen=True)
class _Eps:
    nr: float | str
    dr: float | str

    def label(self) -> str:
        return _eps_text(self.nr) if self.nr == self.dr else f"{_eps_text(self.nr)}:{_eps_text(self.dr)}"


def _eps_text(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def _parse_eps(token: str) -> _Eps:
    parts = token.split(":")
    if len(parts) > 2:
        raise _InputError(f"--eps {token!r}: use EPS or EPS_NR:EPS_DR")
    values: list[float | str] = []
    for part in parts:
        if part.upper() == "H":
            values.append("H")
            continue
        try:
            value = float(part)
        except ValueError:
            raise _InputError(f"--eps {token!r}: {part!r} is neither a number of voxels nor H") from None
        if not (value >= 0 and math.isfinite(value)):
            raise _InputError(f"--eps {token!r}: ε must be a finite number of voxels >= 0")
        values.append(value)
    return _Eps(values[0], values[-1])


def _default_eps(v_hat: float) -> list[_Eps]:
    """1e-7 (ignore), v̂/100 (small), H = v̂ (the heuristic), 10·v̂ (large)."""
    return [_Eps(TINY_EPS, TINY_EPS), _Eps(_one_digit(v_hat / 100), _one_digit(v_hat / 100)), _Eps("H", "H")] + [
        _Eps(_one_digit(10 * v_hat), _one_digit(10 * v_hat))
    ]


def _subset_eps(value: float | str, v_hat: float, phi: str, batch_size: int) -> float:
    # the heuristic is a per-class ε in the trainers: added once per map of a subset
    return v_hat * maps_per_subset(phi, batch_size) if value == "H" else float(value)


COLUMNS = (
    "scenario",
    "phi",
    "batch_size",
    "empty_maps",
    "eps_nr",
    "eps_dr",
    "eps_nr_subset",
    "eps_dr_subset",
    "volume",
    "fp",
    "v_hat",
    "patch_voxels",
    "grad_empty",
    "grad_background",
    "grad_label",
    "empty_to_background",
    "empty_to_label",
)


def _rows(
    scenarios: Sequence[Scenario],
    phis: Sequence[str],
    batch_sizes: Sequence[int],
    eps_list: Sequence[_Eps] | None,
    *,
    fp: float | None,
    empty_fraction: float,
    overlap: float,
    outside: float,
) -> list[dict]:
    rows = []
    for scenario in scenarios:
        f_value = scenario.v_hat if fp is None else fp
        for phi in phis:
            for batch in batch_sizes:
                for eps in eps_list or _default_eps(scenario.v_hat):
                    nr = _subset_eps(eps.nr, scenario.v_hat, phi, batch)
                    dr = _subset_eps(eps.dr, scenario.v_hat, phi, batch)
                    g = batch_gradients(
                        scenario.volume,
                        f_value,
                        phi=phi,
                        batch_size=batch,
                        empty_fraction=empty_fraction,
                        eps_nr=nr,
                        eps_dr=dr,
                        overlap=overlap,
                        outside=outside,
                    )
                    rows.append(
                        {
                            "scenario": scenario.name,
                            "phi": phi,
                            "batch_size": batch,
                            "empty_maps": 1 if batch == 1 else empty_maps_in_batch(batch, empty_fraction),
                            "eps_nr": _eps_text(eps.nr),
                            "eps_dr": _eps_text(eps.dr),
                            "eps_nr_subset": nr,
                            "eps_dr_subset": dr,
                            "volume": scenario.volume,
                            "fp": f_value,
                            "v_hat": scenario.v_hat,
                            "patch_voxels": scenario.patch_voxels,
                            "grad_empty": float(g.empty),
                            "grad_background": float(g.background),
                            "grad_label": float(g.label),
                            "empty_to_background": float(g.empty_to_background),
                            "empty_to_label": float(g.empty_to_label),
                        }
                    )
    return rows


def _csv_text(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def _table_text(rows: Sequence[dict]) -> str:
    header = (
        "scenario",
        "Φ",
        "B",
        "empty",
        "ε_nr",
        "ε_dr",
        "V",
        "F",
        "g empty",
        "g bg",
        "g label",
        "emp/bg",
        "emp/lab",
    )
    body = [
        (
            r["scenario"],
            r["phi"],
            str(r["batch_size"]),
            f"{r['empty_maps']}/{r['batch_size']}",
            r["eps_nr"],
            r["eps_dr"],
            f"{r['volume']:.6g}",
            f"{r['fp']:.6g}",
            f"{r['grad_empty']:.3e}",
            f"{r['grad_background']:.3e}",
            f"{r['grad_label']:.3e}",
            f"{r['empty_to_background']:.3g}",
            f"{r['empty_to_label']:.3g}",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(header)]
    left = {0, 1, 4, 5}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [line(header), "  ".join("-" * w for w in widths), *(line(b) for b in body)]
    lines += [
        "",
        "g = ∂DL/∂ỹ per voxel (Eq. 4): on an empty map (push toward empty), on y=0 and y=1 voxels of a",
        "non-empty map. emp/bg = g empty / g bg (1: the empty map is pushed like the background of a",
        "labelled map; ≈0: it is ignored). emp/lab = g empty / |g label|. H = v̂ per map (×B under BI).",
        "B = 1: the empty and the non-empty map are two steps.",
    ]
    return "\n".join(lines)


# --- plots --------------------------------------------------------------------------------------


def _figure(**kwargs):
    # a bare Figure renders with Agg and leaves pyplot's global backend alone
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _prefix(scenario: Scenario) -> str:
    return "" if scenario.name.startswith("V=") else f"{scenario.name}: "


def plot_gradient_vs_fp(
    scenario: Scenario,
    phis: Sequence[str],
    batch_sizes: Sequence[int],
    eps_list: Sequence[_Eps],
    path: str,
    *,
    empty_fraction: float,
    overlap: float,
    outside: float,
) -> None:
    """Gradient on an empty-map voxel (solid) and on a y = 0 voxel of a non-empty map (dashed) vs F."""
    fp = np.logspace(-2, math.log10(scenario.patch_voxels), 241)
    fig = _figure(figsize=(3.6 * len(batch_sizes) + 0.6, 3.0 * len(phis) + 0.6), layout="constrained")
    axes = fig.subplots(len(phis), len(batch_sizes), squeeze=False, sharex=True)
    colors = [f"C{i}" for i in range(len(eps_list))]
    for row, phi in enumerate(phis):
        for col, batch in enumerate(batch_sizes):
            ax = axes[row, col]
            for color, eps in zip(colors, eps_list):
                nr = _subset_eps(eps.nr, scenario.v_hat, phi, batch)
                dr = _subset_eps(eps.dr, scenario.v_hat, phi, batch)
                g = batch_gradients(
                    scenario.volume,
                    fp,
                    phi=phi,
                    batch_size=batch,
                    empty_fraction=empty_fraction,
                    eps_nr=nr,
                    eps_dr=dr,
                    overlap=overlap,
                    outside=outside,
                )
                ax.loglog(fp, np.where(g.empty > 0, g.empty, np.nan), color=color, label=f"ε = {eps.label()}")
                ax.loglog(fp, np.where(g.background > 0, g.background, np.nan), color=color, ls="--", lw=0.9)
            ax.axvline(scenario.v_hat, color="grey", lw=0.7, ls=":")
            empty = 1 if batch == 1 else empty_maps_in_batch(batch, empty_fraction)
            ax.set_title(f"Φ = {phi}, B = {batch} ({empty} empty)", fontsize=9)
            if row == len(phis) - 1:
                ax.set_xlabel("F = Σỹ predicted on the empty map (voxels)")
            if col == 0:
                ax.set_ylabel("∂DL/∂ỹ per voxel")
    fig.legend(
        *axes[0, 0].get_legend_handles_labels(),
        loc="outside lower center",
        ncols=min(len(eps_list), 4),
        fontsize=8,
        title="solid: voxel of an empty map\ndashed: y=0 voxel of a non-empty map (equal under BI)",
        title_fontsize=8,
    )
    fig.suptitle(
        f"{_prefix(scenario)}V = {scenario.volume:.6g}, v̂ = {scenario.v_hat:.6g} (dotted), N = {scenario.patch_voxels}",
        fontsize=10,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_transition(
    scenario: Scenario,
    path: str,
    *,
    fp: float,
    batch_sizes: Sequence[int],
    empty_fraction: float,
    overlap: float,
    outside: float,
    sweep: Sequence[float] = (),
) -> None:
    """Φ = I as ε runs from 1e-7 to 100·v̂: ratios to the non-empty map (top), magnitudes (bottom)."""
    eps = np.logspace(-7, math.log10(100 * max(scenario.v_hat, fp, 1.0)), 401)
    fig = _figure(figsize=(7.0, 6.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    common = {"volume": scenario.volume, "empty_fraction": empty_fraction, "overlap": overlap, "outside": outside}
    g = transition(eps, fp=fp, batch_size=2, **common)
    top.loglog(eps, g.empty_to_background, color="C0", label="Φ = I: empty / y=0 of non-empty map")
    top.loglog(eps, g.empty_to_label, color="C1", label="Φ = I: empty / |y=1 of non-empty map|")
    top.axhline(1.0, color="C0", ls="--", lw=0.8, label="Φ = BI (B > 1): empty / y=0 = 1")
    for style, batch in zip(("--", "-.", ":"), sorted({b for b in batch_sizes if b >= 2})):
        ref = batch_gradients(fp=fp, phi="BI", batch_size=batch, eps_nr=TINY_EPS, eps_dr=TINY_EPS, **common)
        top.axhline(
            float(ref.empty_to_label), color="C1", ls=style, lw=0.8, label=f"Φ = BI, B = {batch}: empty / |y=1|"
        )
    top.set_ylabel("push on the empty map,\nrelative to the non-empty map")
    top.set_ylim(max(1e-16, float(np.nanmin(g.empty_to_background)) / 3), 10)
    for factor, style in ((0.1, ":"), (1.0, "-"), (10.0, "--")):
        f_value = min(fp * factor, float(scenario.patch_voxels))
        gf = transition(eps, fp=f_value, batch_size=1, **common)
        bottom.loglog(eps, gf.empty, color="C0", ls=style, label=f"empty map, F = {f_value:.3g}")
    g1 = transition(eps, fp=fp, batch_size=1, **common)
    bottom.loglog(eps, g1.background, color="C2", label="y=0 of non-empty map")
    bottom.loglog(eps, np.abs(g1.label), color="C1", label="|y=1| of non-empty map")
    bottom.set_ylabel("B · ∂DL/∂ỹ per voxel (Φ = I)")
    bottom.set_xlabel("ε = ε_nr = ε_dr (voxels)")
    for ax in (top, bottom):
        ax.axvline(scenario.v_hat, color="k", lw=0.8, ls=":", label=f"v̂ = {scenario.v_hat:.6g} (heuristic ε)")
        for value in sweep:  # the runs of the sweep recipe
            ax.axvline(value, color="grey", lw=0.4, alpha=0.6)
    top.legend(fontsize=7, loc="lower right")
    bottom.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        f"{_prefix(scenario)}from ignoring to learning empty maps (Φ = I; V = {scenario.volume:.6g}, F = {fp:.6g})",
        fontsize=10,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")


# --- the command line ---------------------------------------------------------------------------


def add_parser(verbs) -> None:
    """Add the ``gradients`` verb to the ``nnunet-dicephi`` subparsers ``verbs``."""
    p = verbs.add_parser(
        "gradients",
        help="Eq. 4 gradients on empty vs non-empty maps for (Phi, epsilon, B), and an epsilon sweep recipe",
        description="Models one training step (B maps of N voxels, some empty, some with V labelled voxels) and "
        "prints, writes as CSV and plots the Dice loss gradient (Eq. 4 of the MICCAI 2022 paper) on a voxel of an "
        "empty map against that on a non-empty map, for each Phi, epsilon and batch size: whether empty maps are "
        "learned (Phi=BI, large epsilon) or ignored (Phi=I, tiny epsilon). --sweep adds trainer names and commands "
        "for the transition from small to large epsilon.",
    )
    source = p.add_argument_group("maps (given volumes, or a dataset fold)")
    source.add_argument(
        "--volumes",
        nargs="+",
        type=float,
        metavar="V",
        help=f"labelled voxels of non-empty maps, one scenario each (default: {BRATS_VOLUME:g}, BRATS-like)",
    )
    source.add_argument(
        "--patch-voxels",
        type=int,
        metavar="N",
        help=f"voxels of one map (default: {BRATS_PATCH_VOXELS} = 80x80x48)",
    )
    source.add_argument(
        "--v-hat", type=float, metavar="VOXELS", help="heuristic epsilon for --volumes (default: (1-f) * mean(V))"
    )
    source.add_argument("--dataset", help="dataset id or name: N and v-hat per class from the statistics pass")
    source.add_argument("--configuration", help="nnU-Net configuration, with --dataset")
    source.add_argument("--fold", help="fold number or 'all', with --dataset")
    source.add_argument("--plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    source.add_argument("--trainer", default="TrainerDiceIEps", help="trainer whose patch sampling to model")
    model = p.add_argument_group("the step model")
    model.add_argument(
        "--phi",
        nargs="+",
        default=["I", "BI"],
        help="reduction sets: I CI BI BCI (default: I BI); with one output channel CI = I and BCI = BI",
    )
    model.add_argument(
        "--batch-size",
        nargs="+",
        type=int,
        metavar="B",
        help="batch sizes (default: 2, or the plans' with --dataset)",
    )
    model.add_argument(
        "--eps",
        nargs="+",
        metavar="EPS",
        help="epsilon values: a number of voxels, H (heuristic v-hat, per map), or EPS_NR:EPS_DR "
        "(default: 1e-7, v-hat/100, H, 10*v-hat)",
    )
    model.add_argument(
        "--empty-fraction",
        type=float,
        default=0.25,
        metavar="F",
        help="share f of empty maps (default: 0.25; B>1 has 1..B-1)",
    )
    model.add_argument(
        "--overlap", type=float, default=0.5, metavar="A", help="covered share a of a label: I = aV (default 0.5)"
    )
    model.add_argument(
        "--outside", type=float, default=0.5, metavar="O", help="false positives on a non-empty map, in V (0.5)"
    )
    model.add_argument(
        "--fp", type=float, metavar="F", help="F, volume predicted on an empty map, for the table (default: v-hat)"
    )
    sweep = p.add_argument_group("sweep recipe")
    sweep.add_argument("--sweep", action="store_true", help="print and write the epsilon sweep (sweep.txt)")
    sweep.add_argument(
        "--per-decade", type=int, default=1, metavar="K", help="sweep values per decade: 1, 2 or 3 (default 1)"
    )
    sweep.add_argument(
        "--folds", nargs="+", metavar="FOLD", help="folds to train in the sweep (default: 0-4, or --fold)"
    )
    sweep.add_argument("--epochs", type=int, metavar="K", help="append _ep<K> to the sweep's trainer names")
    p.add_argument("-o", "--output", default="dicephi_gradients", help="output folder (default: ./dicephi_gradients)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty output folder")
    p.set_defaults(func=run_gradients)


@dataclass(frozen=True)
class _Settings:
    scenarios: tuple[Scenario, ...]
    phis: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    eps: tuple[_Eps, ...] | None
    fp: float | None
    empty_fraction: float
    overlap: float
    outside: float


def _check_number(name: str, value: float | None, low: float, high: float | None = None, *, open_high=False) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and value >= low and (high is None or (value < high if open_high else value <= high))
    if not ok:
        bound = f" and {'<' if open_high else '<='} {high:g}" if high is not None else ""
        raise _InputError(f"{name} must be >= {low:g}{bound}; got {value:g}")


def _validate_common(args: argparse.Namespace) -> None:
    bad = [phi for phi in args.phi if phi not in PHIS]
    if bad:
        raise _InputError(f"unknown Φ {', '.join(map(repr, bad))}; choose from {' '.join(PHIS)}")
    if args.batch_size is not None and any(b < 1 for b in args.batch_size):
        raise _InputError(f"--batch-size must be >= 1; got {' '.join(map(str, args.batch_size))}")
    _check_number("--empty-fraction", args.empty_fraction, 0.0, 1.0, open_high=True)
    _check_number("--overlap", args.overlap, 0.0, 1.0)
    _check_number("--outside", args.outside, 0.0)
    _check_number("--fp", args.fp, 0.0)
    if args.per_decade < 1:
        raise _InputError(f"--per-decade must be >= 1; got {args.per_decade}")
    if args.epochs is not None and args.epochs < 1:
        raise _InputError(f"--epochs must be >= 1; got {args.epochs}")


def _settings(args: argparse.Namespace) -> _Settings:
    _validate_common(args)
    eps = tuple(_parse_eps(t) for t in args.eps) if args.eps else None
    if args.dataset is not None:
        if args.volumes or args.patch_voxels or args.v_hat:
            raise _InputError("give either --dataset or --volumes/--patch-voxels/--v-hat, not both")
        if args.configuration is None or args.fold is None:
            raise _InputError("--dataset needs --configuration and --fold")
        if args.fold != "all" and not args.fold.isdigit():
            raise _InputError(f"--fold must be a fold number or 'all'; got {args.fold!r}")
        try:
            scenarios, plan_batch = _load_dataset(args)
        except Exception as error:  # nnU-Net's many failure types become one clear message
            raise _InputError(f"cannot read the statistics of dataset {args.dataset}: {error}") from None
        if not scenarios:
            raise _InputError(f"dataset {args.dataset}: no foreground class with labelled voxels in its patches")
        batch_sizes = tuple(args.batch_size or [plan_batch])
    else:
        volumes = args.volumes or [BRATS_VOLUME]
        patch = args.patch_voxels if args.patch_voxels is not None else BRATS_PATCH_VOXELS
        if patch < 1:
            raise _InputError(f"--patch-voxels must be >= 1; got {patch}")
        for v in volumes:
            if not (math.isfinite(v) and 0 < v <= patch):
                raise _InputError(f"--volumes: each V must be > 0 and at most --patch-voxels ({patch}); got {v:g}")
        _check_number("--v-hat", args.v_hat, 0.0)
        if args.v_hat == 0:
            raise _InputError("--v-hat must be > 0")
        v_hat = args.v_hat if args.v_hat is not None else heuristic_eps(volumes, args.empty_fraction)
        scenarios = [Scenario(f"V={v:g}", float(v), float(v_hat), int(patch)) for v in volumes]
        batch_sizes = tuple(args.batch_size or [2])
    for scenario in scenarios:
        if args.fp is not None and args.fp > scenario.patch_voxels:
            raise _InputError(f"--fp {args.fp:g} exceeds the map's {scenario.patch_voxels} voxels")
    if len({s.slug for s in scenarios}) < len(scenarios):
        raise _InputError("scenarios must differ (repeated --volumes?)")
    return _Settings(
        tuple(scenarios),
        tuple(dict.fromkeys(args.phi)),
        tuple(dict.fromkeys(batch_sizes)),
        eps,
        args.fp,
        args.empty_fraction,
        args.overlap,
        args.outside,
    )


def _prepare_output(path: str, force: bool) -> str:
    """Check the output folder and return the temporary sibling to write into."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise _InputError(f"output {path} exists and is not a folder")
    if os.path.isdir(path) and os.listdir(path) and not force:
        raise _InputError(f"output folder {path} exists and is not empty; use --force to replace it")
    # --force replaces an earlier output of this command only, never a folder given by mistake
    if os.path.isdir(path) and os.listdir(path) and not os.path.isfile(os.path.join(path, "gradients.csv")):
        raise _InputError(
            f"output folder {path} holds no gradients.csv, so it is not an earlier output of this command; "
            "--force only replaces those: choose another -o/--output"
        )
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise _InputError(f"the parent folder of {path} does not exist")
    return os.path.join(parent, f".{os.path.basename(path)}.tmp{os.getpid()}")


def _publish(tmp: str, path: str) -> None:
    """Move the finished folder into place; an old one (with --force) goes only once the new one is there."""
    from nnunet_dicephi._files import replace_folder

    replace_folder(tmp, path)


def run_gradients(args: argparse.Namespace) -> int:
    """The ``gradients`` verb: table (stdout, CSV), plots, and with ``--sweep`` the sweep recipe."""
    from nnunet_dicephi._files import write_text_atomically

    try:
        settings = _settings(args)
        tmp = _prepare_output(args.output, args.force)
    except _InputError as error:
        print(f"nnunet-dicephi gradients: {error}", file=sys.stderr)
        return 2
    model = {"empty_fraction": settings.empty_fraction, "overlap": settings.overlap, "outside": settings.outside}
    rows = _rows(settings.scenarios, settings.phis, settings.batch_sizes, settings.eps, fp=settings.fp, **model)
    table = _table_text(rows)
    print(table)

    sweep_text, sweep_values = None, []
    if args.sweep:
        v_hats = {s.name: s.v_hat for s in settings.scenarios}
        # the sweep's lower end (1e-7, then one voxel) is the same for every class; its upper end
        # follows the largest class
        entries = sweep_names(max(v_hats.values()), per_decade=args.per_decade, epochs=args.epochs)
        folds = args.folds or ([args.fold] if args.dataset is not None else ["0", "1", "2", "3", "4"])
        sweep_text = sweep_recipe(
            entries,
            v_hat=v_hats,
            dataset=str(args.dataset) if args.dataset is not None else "DATASET",
            configuration=args.configuration or "CONFIGURATION",
            folds=folds,
            plans=args.plans,
        )
        sweep_values = [e.eps for e in entries if not isinstance(e.eps, str)]
        print()
        print(sweep_text)

    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        write_text_atomically(os.path.join(tmp, "gradients.csv"), _csv_text(rows))
        write_text_atomically(os.path.join(tmp, "table.txt"), table + "\n")
        record = {
            "scenarios": [asdict(s) for s in settings.scenarios],
            "phi": list(settings.phis),
            "batch_size": list(settings.batch_sizes),
            "eps": None if settings.eps is None else [e.label() for e in settings.eps],
            "fp": settings.fp,
            **model,
        }
        write_text_atomically(os.path.join(tmp, "settings.json"), json.dumps(record, indent=2) + "\n")
        if sweep_text is not None:
            write_text_atomically(os.path.join(tmp, "sweep.txt"), sweep_text)
        for scenario in settings.scenarios:
            plot_gradient_vs_fp(
                scenario,
                settings.phis,
                settings.batch_sizes,
                settings.eps or _default_eps(scenario.v_hat),
                os.path.join(tmp, f"gradient_vs_fp_{scenario.slug}.png"),
                **model,
            )
            plot_transition(
                scenario,
                os.path.join(tmp, f"transition_{scenario.slug}.png"),
                fp=scenario.v_hat if settings.fp is None else settings.fp,
                batch_sizes=settings.batch_sizes,
                sweep=sweep_values,
                **model,
            )
        _publish(tmp, args.output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"\nwrote {os.path.abspath(args.output)}", file=sys.stderr)
    return 0
