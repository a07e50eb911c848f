r"""Choose Φ and ε before training: where a class's empty maps go from ignored to learned.

This module is the ``nnunet-dicephi advise`` verb. The model is a pure function of a few numbers per
class, read from what nnU-Net's patch sampling gives that class (docs/advise.md has the derivation):

* the share of training cases that annotate the class (the manifest; unannotated maps leave every
  subset of Φ);
* per batch slot (nnU-Net fills the last ``B − round(B(1 − p))`` slots of a batch with
  foreground-forced patches, the others with random ones): the share ``e`` of annotated maps that are
  empty, the distribution of the labelled volume V of the others, and the share of empty maps whose
  patch holds another included class;
* the plans: batch size B, patch voxels N, output channels, deep-supervision outputs.

From Eq. 4 of the MICCAI 2022 paper, with the paper's Eq. 5 state (a labelled map covered by half,
as much predicted beside it, I = V/2, U = 2V; an empty map predicts v̂ = (1 − e)·V̄, the expected
labelled volume), the push on an empty-map voxel relative to the push on a background voxel of a
labelled map is, for Φ = I and ε per map,

.. math::

    \rho_I(\epsilon) = \frac{\epsilon / (\hat v + \epsilon)^2}
        {\sum_V w_V\, V\, \frac{V + \epsilon}{(2V + \epsilon)^2} \big/ \sum_V w_V\, V}

(the background push averaged over the background voxels of labelled maps, which reach shared
weights in proportion to V; for ε ≪ V it is that of the mean volume). An empty map that shares its
subset with a labelled one is pushed exactly like that map's background, so for every Φ

.. math::

    \rho_\Phi = g\,P_\text{mix} + (1 - P_\text{mix})\,\rho_I(\epsilon_\text{map}),

P_mix the probability that an empty map's subset holds a labelled map (0 for I; for BI the other
B − 1 slots, for CI the other classes of the patch, for BCI both), g = 1 by Eq. 4 and 1.36 as the
B sweeps measure it (:data:`MIXED_PUSH`), and ε_map the subset's ε per map
(Eq. 4 is unchanged when every sum and ε are scaled alike, so an all-empty subset of m maps behaves
like one map at ε/m). A structure hidden in the empty maps stays segmented in the share

.. math::

    R(\rho) = \frac{1}{1 + (\rho / \rho_{1/2})^k}, \qquad \rho_{1/2} = \tfrac12,\ k = 4,

calibrated on the demo's measured transition (docs/studies.md) at the reference training, 22 epochs ×
40 iterations at 1e-2; the window is R from 0.9 (segmented) to 0.1 (left out). A training with
``factor`` times the reference's learning-rate-weighted iterations has

.. math::

    \rho_{1/2}(f) = \rho_{1/2}\,\frac{1 - f_0}{f - f_0}

(the time law, :func:`rho_half_at`; f₀ the onset, :data:`ONSET`): the verb reads the trainer's
schedule. Every function here is a pure
function of numbers; :func:`read_class_maps` and the verb read them from a dataset fold, through the
trainers' own data and sampling model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from nnunet_dicephi._cli import add_verb, refuse
from nnunet_dicephi.loss_config import DEFAULT_EPS

__all__ = [
    "RHO_HALF",
    "ONSET",
    "MIXED_PUSH",
    "REFERENCE_SCHEDULE",
    "TIME_LAW_CHECKED",
    "STEEPNESS",
    "SEGMENTED",
    "LEFT_OUT",
    "SlotMaps",
    "ClassMaps",
    "Sampling",
    "Setting",
    "Verdict",
    "ClassPrediction",
    "forced_slots",
    "slot_counts",
    "empty_share",
    "labelled_volumes",
    "push_ratio_I",
    "lr_weighted_steps",
    "schedule_factor",
    "rho_half_at",
    "retained",
    "mixed_share",
    "push_ratio",
    "eps_window",
    "batch_window",
    "flood_ratio",
    "collapse_ratio",
    "predict_class",
    "evaluate",
    "advise",
    "read_class_maps",
    "add_parser",
]

RHO_HALF = 0.68
"""ρ at which half of a structure hidden in the empty maps stays segmented at the reference training
:data:`REFERENCE_SCHEDULE`; at another length :func:`rho_half_at` (the time law). Fitted with
:data:`ONSET` on the demo's data, its measured half-way ε at 22, 66 and 132 epochs
(examples/transition_regimes.toml, Dataset976; scripts/transition_regimes.py prints the fit)."""
ONSET = 0.40
"""f₀ of the time law, in reference trainings: the learning-rate-weighted training (about 200
iterations at 1e-2) after which the push on the empty maps starts to count toward where a training
ends. Fitted with :data:`RHO_HALF` on the demo's data: ρ½ · f, the push at the measured half-way ε,
fell from 0.68 at 22 epochs to 0.46 at 66 and 0.45 at 132, which 1/f alone (no onset) cannot give."""
REFERENCE_SCHEDULE = (22, 40, 1e-2)
"""Epochs, iterations per epoch and initial learning rate of the training on which :data:`RHO_HALF` was
read (examples/transition.toml, nnU-Net's poly schedule)."""
TIME_LAW_CHECKED = (1.0, 5.8)
"""The range of trainings, as multiples of the reference, on which the time law was checked
(docs/studies.md); outside it the window is an extrapolation, and ``advise`` says so."""
MIXED_PUSH = RHO_HALF / 0.5
"""The push on an empty map in a step whose subset also holds a labelled map (P_mix of the model), in
units of ρ: 1 by Eq. 4 at one step, 1.36 as the B sweeps measure it. Read at 22 epochs, Φ = BI left
type B out at B = 2 further than the average push predicts (docs/studies.md: a push in two steps of
three does more than two thirds of a push in every step); at 1.36, the ratio by which ρ½ was
re-read on Φ = I from 0.5, the Φ = BI, CI and BCI predictions stay where the B sweeps checked them,
upper bounds of the measured batch sizes."""
STEEPNESS = 4.0
"""k of R(ρ) = 1 / (1 + (ρ/ρ½)^k): the window (R from 0.9 to 0.1) spans ρ from 0.29 to 0.87."""
SEGMENTED = 0.9
"""R above which the empty maps count as ignored: the window's lower edge."""
LEFT_OUT = 0.1
"""R below which the empty maps count as learned: the window's upper edge."""
OVERLAP = 0.5
"""a of the Eq. 5 state: a labelled map's label covered by half, I = aV."""
OUTSIDE = 0.5
"""o of the Eq. 5 state: as much predicted beside the label, U = V + aV + oV."""
TINY_EPS = DEFAULT_EPS
"""The paper's (and the presets') negligible ε."""
MAX_BATCH = 512
"""Batch sizes searched for the Φ = BI window."""
FLOOD_EMPTY_SHARE = 0.5
"""A class whose maps are empty at least this often floods when nothing trains the background."""
BIN_STEPS = 4
"""Labelled-volume histogram bins per doubling (bin k holds V in [2^(k/4), 2^((k+1)/4)))."""
VERSION = 1
"""Of the cached per-slot statistics (bump when their computation changes)."""


# --- what nnU-Net's sampling gives a class ---------------------------------------------------------


@dataclass(frozen=True)
class SlotMaps:
    """One kind of batch slot (random or foreground-forced patch): what an annotated map of the class holds."""

    empty: float
    """P(the map is empty)."""
    empty_with_other: float
    """P(the map is empty and another foreground class is labelled in the same patch)."""
    volumes: tuple[float, ...] = ()
    """Labelled volume V (voxels) of each histogram bin (the bin's mean)."""
    weights: tuple[float, ...] = ()
    """P(the map is labelled with the bin's volume); they sum to 1 − ``empty``."""

    @property
    def mean_volume(self) -> float:
        """Mean V of a labelled map (NaN if never labelled)."""
        w = np.asarray(self.weights, dtype=np.float64)
        return float(np.dot(w, self.volumes) / w.sum()) if w.sum() > 0 else math.nan


@dataclass(frozen=True)
class ClassMaps:
    """What the sampling gives one output channel."""

    name: str
    channel: int
    annotated: float
    """Share of the training cases that annotate the class (1 without a manifest)."""
    random: SlotMaps
    forced: SlotMaps


@dataclass(frozen=True)
class Sampling:
    """The plans and sampling facts the model needs beyond the classes."""

    batch_size: int
    oversample_foreground_percent: float
    patch_voxels: int
    output_channels: int
    """Channels of the network's output (softmax: background included)."""
    has_regions: bool = False
    """Sigmoid outputs (nnU-Net region training): no background channel."""
    none_labelled: tuple[float, float] = (0.0, 0.0)
    """P(no foreground class labelled in the patch), random and forced slots: Φ = BCI."""
    level_scales: tuple[float, ...] = (1.0,)
    """Voxel-count ratio of each deep-supervision output to the patch."""


def forced_slots(batch_size: int, oversample_foreground_percent: float) -> int:
    """Foreground-forced patches of a batch, as nnU-Net draws them: the last ``B − round(B(1 − p))``."""
    return batch_size - round(batch_size * (1 - oversample_foreground_percent))


def slot_counts(sampling: Sampling, batch_size: int | None = None) -> tuple[int, int]:
    """Random and foreground-forced slots of a batch of ``batch_size`` (default: the plans')."""
    b = sampling.batch_size if batch_size is None else batch_size
    forced = forced_slots(b, sampling.oversample_foreground_percent)
    return b - forced, forced


def _kinds(maps: ClassMaps) -> tuple[SlotMaps, SlotMaps]:
    return maps.random, maps.forced


def empty_share(maps: ClassMaps, sampling: Sampling, batch_size: int | None = None) -> float:
    """e: the share of the class's annotated maps in a batch that are empty."""
    counts = slot_counts(sampling, batch_size)
    return float(sum(n * k.empty for n, k in zip(counts, _kinds(maps))) / sum(counts))


def labelled_volumes(
    maps: ClassMaps, sampling: Sampling, batch_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The labelled volumes of a batch's labelled maps and their probabilities (summing to 1)."""
    counts = slot_counts(sampling, batch_size)
    volumes = np.concatenate([np.asarray(k.volumes, dtype=np.float64) for k in _kinds(maps)])
    weights = np.concatenate([n * np.asarray(k.weights, dtype=np.float64) for n, k in zip(counts, _kinds(maps))])
    total = weights.sum()
    return volumes, (weights / total if total > 0 else weights)


# --- Eq. 4 at the paper's Eq. 5 state -----------------------------------------------------------------


def _background_push(volumes, eps, overlap: float, outside: float) -> np.ndarray:
    """Eq. 4 on a y = 0 voxel of a labelled map of volume V (the common 1/|Φ| left out)."""
    return (2 * overlap * volumes + eps) / ((1 + overlap + outside) * volumes + eps) ** 2


def push_ratio_I(
    eps: float | np.ndarray,
    *,
    v_hat: float,
    volumes: Sequence[float] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
    overlap: float = OVERLAP,
    outside: float = OUTSIDE,
    fp: float | None = None,
) -> np.ndarray:
    r"""ρ for Φ = I: the push on an empty-map voxel over the mean push on a labelled map's background voxel.

    .. math::

        \rho_I = \frac{\epsilon/(\hat v + \epsilon)^2}
                      {\sum_V w_V V\, g_0(V) / \sum_V w_V V},\qquad
        g_0(V) = \frac{2aV + \epsilon}{((1 + a + o)V + \epsilon)^2}

    The empty map predicts v̂ voxels (the paper's Eq. 5 assumption: before the network tells empty
    maps from labelled ones it predicts the expected volume everywhere). The background push is
    averaged over background voxels, of which a map of volume V has o·V predicted; for ε ≪ V the
    mean is g_0 of the mean volume. One volume with weight 1 gives
    :func:`~nnunet_dicephi.analysis.eq4.transition`'s ``empty_to_background`` at F = v̂. ``fp``
    replaces v̂ as the volume F predicted on an empty map (F = V̄: a hidden structure segmented like
    a labelled one; docs/advise.md says why v̂ is the default).
    """
    eps = np.asarray(eps, dtype=np.float64)
    volumes = np.asarray(volumes, dtype=np.float64)
    weights = np.ones_like(volumes) if weights is None else np.asarray(weights, dtype=np.float64)
    share = weights * volumes
    shape = eps.shape
    e = eps.reshape(-1, 1)
    background = (share * _background_push(volumes, e, overlap, outside)).sum(axis=1) / share.sum()
    predicted = v_hat if fp is None else fp
    empty = e[:, 0] / (predicted + e[:, 0]) ** 2
    return (empty / background).reshape(shape)


def lr_weighted_steps(epochs: int, iterations: int, initial_lr: float, elapsed: int | None = None) -> float:
    """Σ over a training's iterations of nnU-Net's learning rate, lr·(1 − epoch/epochs)^0.9 (poly).

    ``elapsed``: over its first ``elapsed`` epochs only (all of them by default).
    """
    done = epochs if elapsed is None else min(elapsed, epochs)
    return iterations * initial_lr * sum((1 - t / epochs) ** 0.9 for t in range(done))


def schedule_factor(epochs: int, iterations: int, initial_lr: float) -> float:
    """How many times the reference training (:data:`REFERENCE_SCHEDULE`) a schedule amounts to.

    In learning-rate-weighted iterations (:func:`lr_weighted_steps`); :func:`rho_half_at` turns it
    into the training's ρ½ (the time law).
    """
    return lr_weighted_steps(epochs, iterations, initial_lr) / lr_weighted_steps(*REFERENCE_SCHEDULE)


SHORTEST_SPAN = 0.05
"""The least training past the onset the law is evaluated at, in reference trainings: a training that
ends before the onset gets the ρ½ of one that ends just past it (its empty maps ignored)."""


def rho_half_at(factor: float, rho_half: float = RHO_HALF, onset: float = ONSET) -> float:
    """ρ½ after ``factor`` reference trainings (the time law): ``rho_half · (1 − onset) / (factor − onset)``.

    A hidden structure is half left out once ρ times the training past the onset reaches a fixed
    amount, so every threshold in ρ (ρ½ and the window's edges) scales as 1 / (factor − onset);
    ``rho_half`` is the value at the reference training (factor 1). docs/advise.md derives it.
    """
    return rho_half * (1 - onset) / max(factor - onset, SHORTEST_SPAN)


def retained(rho: float | np.ndarray, *, rho_half: float = RHO_HALF, steepness: float = STEEPNESS) -> np.ndarray:
    """R: the share of a structure hidden in the empty maps that stays segmented, 1 / (1 + (ρ/ρ½)^k)."""
    rho = np.asarray(rho, dtype=np.float64)
    return 1.0 / (1.0 + (np.maximum(rho, 0.0) / rho_half) ** steepness)


def _state(r: float) -> str:
    return "ignored" if r >= SEGMENTED else "learned" if r <= LEFT_OUT else "transition"


def mixed_share(
    phi: str,
    maps: ClassMaps,
    sampling: Sampling,
    batch_size: int | None = None,
    *,
    include_background: bool = False,
) -> float:
    """P_mix: the probability that the subset of an empty map of the class holds a labelled map.

    I: 0. BI: some other slot of the batch holds a labelled map of the class (an unannotated map
    leaves the subset). CI: another class is labelled in the same patch (always, when the background
    is in the loss: an empty map's patch is background somewhere). BCI: either. Each slot is drawn
    independently, as nnU-Net draws cases with replacement; random and forced slots differ.
    """
    if phi not in ("I", "CI", "BI", "BCI"):
        raise ValueError(f"phi must be one of I, CI, BI, BCI; got {phi!r}")
    if phi == "I":
        return 0.0
    counts = slot_counts(sampling, batch_size)
    kinds = _kinds(maps)
    empty = np.array([n * k.empty * maps.annotated for n, k in zip(counts, kinds)])
    if empty.sum() == 0:
        return 0.0
    unlabelled = np.array([1 - (1 - k.empty) * maps.annotated for k in kinds])
    if include_background:
        other, none = np.ones(2), np.zeros(2)
    else:
        other = np.array([k.empty_with_other / k.empty if k.empty > 0 else 0.0 for k in kinds])
        none = np.asarray(sampling.none_labelled, dtype=np.float64)
    mixed = np.zeros(2)
    for t in range(2):  # the empty map in a slot of kind t; the other slots: the counts less this one
        rest = np.array(counts) - np.eye(2, dtype=int)[t]
        if phi == "BI":
            mixed[t] = 1 - np.prod(unlabelled**rest)
        elif phi == "CI":
            mixed[t] = other[t]
        else:
            mixed[t] = 1 - (1 - other[t]) * np.prod(none**rest)
    return float(np.dot(empty, mixed) / empty.sum())


def _maps_per_subset(phi: str, maps: ClassMaps, batch_size: int, classes: int) -> float:
    """Expected annotated maps in one subset (≥ 1): an all-empty subset of m maps is one map at ε/m."""
    per_patch = {"I": 1.0, "BI": batch_size * maps.annotated, "CI": float(classes), "BCI": batch_size * classes}
    return max(per_patch[phi], 1.0)


def push_ratio(
    phi: str,
    eps: float | np.ndarray,
    maps: ClassMaps,
    sampling: Sampling,
    batch_size: int | None = None,
    *,
    eps_per_map: bool = False,
    include_background: bool = False,
    classes: int = 1,
) -> np.ndarray:
    r"""ρ_Φ = g·P_mix + (1 − P_mix)·ρ_I(ε_map) at the plans' batch size (or ``batch_size``); g: :data:`MIXED_PUSH`.

    ``eps`` is added once per subset (a named ε), or once per map (``eps_per_map``: the heuristic);
    ``classes`` is the number of channels in the loss (for CI and BCI).
    """
    b = sampling.batch_size if batch_size is None else batch_size
    volumes, weights = labelled_volumes(maps, sampling, b)
    e = empty_share(maps, sampling, b)
    v_hat = (1 - e) * float(np.dot(weights, volumes))
    mixed = mixed_share(phi, maps, sampling, b, include_background=include_background)
    eps = np.asarray(eps, dtype=np.float64)
    per_map = eps if eps_per_map else eps / _maps_per_subset(phi, maps, b, classes)
    alone = push_ratio_I(per_map, v_hat=v_hat, volumes=volumes, weights=weights)
    return MIXED_PUSH * mixed + (1 - mixed) * alone


# --- windows, and the two failures --------------------------------------------------------------------


def _crossing(f, low: float, high: float, level: float, points: int = 400) -> float | None:
    """The first x in [low, high] (log scale) where f(x) falls to ``level``; None if it never does."""
    xs = np.logspace(math.log10(low), math.log10(high), points)
    values = f(xs)
    below = np.flatnonzero(values <= level)
    if not len(below):
        return None
    i = int(below[0])
    if i == 0:
        return float(xs[0])
    a, b = math.log10(xs[i - 1]), math.log10(xs[i])
    for _ in range(60):  # bisection in log x: f is continuous and falls through the level here
        m = 0.5 * (a + b)
        if f(np.array([10**m]))[0] <= level:
            b = m
        else:
            a = m
    return float(10**b)


def eps_window(
    maps: ClassMaps, sampling: Sampling, *, rho_half: float = RHO_HALF, steepness: float = STEEPNESS
) -> tuple[float, float, float] | None:
    """Φ = I: (ε_low, ε½, ε_high), where R falls to 0.9, ½ and 0.1; None for a class never labelled.

    Under Φ = I the window does not depend on B (every term carries the same 1/|Φ|), except through
    the share of forced patches, taken at the plans' batch size.
    """
    volumes, weights = labelled_volumes(maps, sampling)
    if not len(volumes) or weights.sum() == 0:
        return None
    e = empty_share(maps, sampling)
    v_hat = (1 - e) * float(np.dot(weights, volumes))

    def curve(x):
        return retained(
            push_ratio_I(x, v_hat=v_hat, volumes=volumes, weights=weights), rho_half=rho_half, steepness=steepness
        )

    span = (max(v_hat, 1e-3) * 1e-8, max(float(volumes.max()), 1.0) * 1e4)
    edges = [_crossing(curve, *span, level) for level in (SEGMENTED, 0.5, LEFT_OUT)]
    return None if any(x is None for x in edges) else tuple(edges)  # type: ignore[return-value]


def batch_window(
    maps: ClassMaps,
    sampling: Sampling,
    *,
    eps: float = TINY_EPS,
    rho_half: float = RHO_HALF,
    steepness: float = STEEPNESS,
    max_batch: int = MAX_BATCH,
) -> tuple[int | None, int | None]:
    """Φ = BI at ``eps``: (the largest B that still ignores the empty maps, the smallest B that learns them).

    Either is None when no B up to ``max_batch`` qualifies (B = 1 ignores them whenever Φ = I at
    ``eps`` does).
    """
    ignoring = None
    for b in range(1, max_batch + 1):
        r = float(retained(push_ratio("BI", eps, maps, sampling, b), rho_half=rho_half, steepness=steepness))
        if r <= LEFT_OUT:
            return ignoring, b
        if r >= SEGMENTED:
            ignoring = b
    return ignoring, None


def flood_ratio(
    eps_map: float,
    *,
    volume: float,
    patch_voxels: int,
    start_prediction: float,
    mixed: float = 0.0,
) -> float:
    r"""ρ at the start of training: every voxel predicted ``start_prediction`` (1/K for K softmax channels).

    The empty map then predicts F₀ = pN, a labelled one I = pV and U = V + pN:

    .. math::

        \rho_0 = g\,P_\text{mix} + (1 - P_\text{mix})\,
            \frac{\epsilon/(pN + \epsilon)^2}{(2pV + \epsilon)/(V + pN + \epsilon)^2}.

    Small ρ₀: the empty maps give no push while the network still predicts the class everywhere.
    """
    f0 = start_prediction * patch_voxels
    empty = eps_map / (f0 + eps_map) ** 2
    background = (2 * start_prediction * volume + eps_map) / (volume + f0 + eps_map) ** 2
    return float(MIXED_PUSH * mixed + (1 - mixed) * empty / background)


def collapse_ratio(empty: float, learned_share: float, mixed: float = 0.0) -> float:
    r"""χ: the cost of segmenting look-alikes in the empty maps over the cost of leaving every structure out.

    Before the network tells structures in empty maps from labelled ones it can segment both or
    neither. Per map (Φ = I), both costs e·F/(F + ε) and neither (1 − e)·V/(V + ε); with F = V
    the ratio is e/(1 − e), the tie at e = ½ (docs/trainers.md). Only empty maps that are pushed
    count (``learned_share`` = 1 − R), and a subset that holds a labelled map never ties (leaving
    it out costs 1): χ = (1 − P_mix)(1 − R)·e/(1 − e). χ ≥ 1: leaving out the labelled structures
    too is no more costly.
    """
    if empty >= 1:
        return math.inf
    return float((1 - mixed) * learned_share * empty / (1 - empty))


# --- per class: the prediction ------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """A loss setting as the model sees it (from a trainer name, :meth:`from_trainer`)."""

    trainer: str
    phi: str
    eps: float | str
    """ε_nr = ε_dr in voxels (added once per subset), or ``"H"`` (the heuristic, per map)."""
    ce: bool = False
    background: bool = False
    leaf: bool = False
    """Leaf Dice: subsets whose labels sum to zero leave the loss."""

    @classmethod
    def from_trainer(cls, name: str) -> Setting | None:
        """The setting of a trainer name of this project; None for losses the model does not cover."""
        from nnunet_dicephi.loss_config import HEURISTIC, parse_trainer_name

        config = parse_trainer_name(name)
        if config.loss not in ("Dice", "LeafDice", "MarginalDice") or config.phi is None:
            return None
        if config.eps_nr != config.eps_dr:
            return None
        eps = HEURISTIC if config.eps_nr == HEURISTIC else float(config.eps_nr)
        return cls(name, config.phi, eps, config.ce, bool(config.include_background), config.loss == "LeafDice")


@dataclass(frozen=True)
class Verdict:
    """What one setting does to a class's empty maps."""

    trainer: str
    state: str
    """``ignored``, ``transition`` or ``learned``; ``learned (CE)`` when the cross-entropy learns them."""
    push_ratio: float
    retained: float
    margin: float | None
    """How far the setting clears the window (> 1), as a factor of ``margin_of``; < 1 inside it."""
    margin_of: str
    """``eps``, ``B`` or ``rho``."""
    flood: str
    """``high``, ``low`` or ``none``."""
    collapse: float
    """χ of :func:`collapse_ratio` (0 where a cross-entropy keeps the labelled structures)."""
    note: str = ""


@dataclass(frozen=True)
class ClassPrediction:
    """The model's prediction for one class at the plans' batch size (see docs/advise.md)."""

    name: str
    channel: int
    annotated: float
    empty: float
    empty_random: float
    empty_forced: float
    mean_volume: float
    volume_quantiles: tuple[float, float, float]
    """V at the 10th, 50th and 90th percentile of the labelled maps."""
    v_hat: float
    eps_window_I: tuple[float, float] | None
    eps_half_I: float | None
    min_batch_BI: int | None
    max_batch_ignoring_BI: int | None
    push_ratio_BI: float
    background_push: float
    """The push of the background's own Dice (``_bg``) on a hidden structure, relative: 2V̄/N."""
    curve_eps: tuple[float, ...] = ()
    curve_push_ratio_I: tuple[float, ...] = ()
    curve_retained_I: tuple[float, ...] = ()
    curve_batch: tuple[int, ...] = ()
    curve_retained_BI: tuple[float, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    intents: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    rho_half: float = RHO_HALF
    """The class's ρ½ at the trainer's training (the time law), times its speed when a pilot read one."""
    pilot_eps: float | None = None
    """The suggested pilot's ε for this class (:mod:`~nnunet_dicephi.analysis.pilot`)."""
    pilot: dict | None = None
    """What the (first) ``--pilot`` read for this class (:class:`~nnunet_dicephi.analysis.pilot.ClassReading`)."""
    pilots: list = field(default_factory=list)
    """What every ``--pilot`` read for this class, in the order given."""
    speed: float | None = None
    """The speed the class's ρ½ takes: the pilot's, or the geometric mean of several; None without."""
    speed_bound: bool = False
    """The speed is a lower bound (a pilot that had not left the class out yet)."""
    speed_span: tuple[float, float] | None = None
    """The slowest and the fastest of several pilots' speeds: the Φ = I window spans both."""

    def to_json(self) -> dict:
        out = asdict(self)
        out["eps_window_I"] = list(self.eps_window_I) if self.eps_window_I else None
        out["speed_span"] = list(self.speed_span) if self.speed_span else None
        out["labelled_volume_quantiles"] = dict(zip(("10", "50", "90"), self.volume_quantiles))
        del out["volume_quantiles"]
        out["curve"] = {
            "eps": list(self.curve_eps),
            "push_ratio_I": list(self.curve_push_ratio_I),
            "retained_I": list(self.curve_retained_I),
            "batch_size": list(self.curve_batch),
            "retained_BI": list(self.curve_retained_BI),
        }
        for key in ("curve_eps", "curve_push_ratio_I", "curve_retained_I", "curve_batch", "curve_retained_BI"):
            del out[key]
        return _finite(out)


def _finite(value):
    """JSON without NaN or infinity (null instead)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _quantiles(volumes: np.ndarray, weights: np.ndarray, qs=(0.1, 0.5, 0.9)) -> tuple[float, ...]:
    if not len(volumes) or weights.sum() == 0:
        return (math.nan,) * len(qs)
    order = np.argsort(volumes)
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return tuple(float(volumes[order][min(int(np.searchsorted(cumulative, q)), len(order) - 1)]) for q in qs)


def _eps_name(value: float) -> str:
    from nnunet_dicephi.loss_config import format_number

    return format_number(value)


def _round_up(x: float) -> float:
    """Round up to one significant digit (a short trainer name: 4e1, not 37.2)."""
    exponent = math.floor(math.log10(x))
    digit = math.ceil(x / 10**exponent - 1e-9)
    return float(digit * 10**exponent) if digit < 10 else float(10 ** (exponent + 1))


def evaluate(
    setting: Setting,
    maps: ClassMaps,
    sampling: Sampling,
    *,
    classes: int,
    window: tuple[float, float] | None,
    batch_edges: tuple[int | None, int | None],
    rho_half: float = RHO_HALF,
    steepness: float = STEEPNESS,
    rho_half_span: tuple[float, float] | None = None,
) -> Verdict:
    """What ``setting`` does to the class's empty maps at the plans' batch size.

    ``rho_half_span`` (see :func:`predict_class`) widens the window a margin in ρ is taken against.
    """
    b = sampling.batch_size
    e = empty_share(maps, sampling)
    volumes, weights = labelled_volumes(maps, sampling)
    mean_v = float(np.dot(weights, volumes)) if weights.sum() > 0 else math.nan
    v_hat = (1 - e) * mean_v
    per_map = setting.eps == "H"
    eps = v_hat if per_map else float(setting.eps)
    include_bg = setting.background and not sampling.has_regions
    loss_classes = classes + (1 if include_bg else 0)
    mixed = mixed_share(setting.phi, maps, sampling, include_background=include_bg)
    if setting.leaf:  # leaf Dice drops every subset without a label: an all-empty subset gives no push
        rho = MIXED_PUSH * mixed
    else:
        rho = float(
            push_ratio(
                setting.phi,
                eps,
                maps,
                sampling,
                eps_per_map=per_map,
                include_background=include_bg,
                classes=loss_classes,
            )
        )
    if include_bg:  # the background's own Dice claims a hidden structure's voxels: about 2V/N of the class's push
        rho += 2 * mean_v / sampling.patch_voxels
    r = float(retained(rho, rho_half=rho_half, steepness=steepness))
    state = _state(r)

    # margin: the factor by which the setting's knob clears the window's nearer edge
    eps_map = eps if per_map else eps / _maps_per_subset(setting.phi, maps, b, loss_classes)
    margin, of = None, "rho"
    # with the background in the loss its own term adds a push that no ε removes: the margin is in ρ
    if setting.phi == "I" and not setting.leaf and not include_bg and window is not None:
        of = "eps"
        if state == "learned":
            margin = eps_map / window[1]
        else:
            margin = window[0] / eps_map if eps_map > 0 else math.inf
    elif setting.phi == "BI" and not setting.leaf and eps_map < (window[0] if window else 0):
        ignoring, learned = batch_edges
        of = "B"
        if state == "learned" and learned:
            margin = b / learned
        elif state != "learned" and ignoring:
            margin = ignoring / b
    if margin is None and of == "rho":
        slowest, fastest = rho_half_span or (rho_half, rho_half)
        low, high = (slowest * 9 ** (-1 / steepness), fastest * 9 ** (1 / steepness))
        margin = rho / high if state == "learned" else (low / rho if rho > 0 else math.inf)

    # flood: Dice only, nothing trains the background, a class absent from most patches whose empty
    # maps are not pushed while the network still predicts it everywhere
    if setting.ce or include_bg:
        flood = "none"
    else:
        start = 0.5 if sampling.has_regions else 1.0 / sampling.output_channels
        rho0 = (
            MIXED_PUSH * mixed
            if setting.leaf
            else flood_ratio(
                eps_map, volume=mean_v, patch_voxels=sampling.patch_voxels, start_prediction=start, mixed=mixed
            )
        )
        # the flood sets in at the start of training: judged at the reference training's ρ½
        pushed = float(retained(rho0, rho_half=RHO_HALF, steepness=steepness)) < 0.5
        flood = "high" if e >= FLOOD_EMPTY_SHARE and not pushed else "low"
    collapse = 0.0 if setting.ce else collapse_ratio(e, 1 - r, 0.0 if setting.leaf else mixed)

    if setting.ce:
        # the cross-entropy trains every voxel: an empty map's voxels are background for it
        return Verdict(
            setting.trainer,
            "learned (CE)",
            rho,
            r,
            None,
            "ce",
            flood,
            collapse,
            "the cross-entropy trains every voxel of an empty map as background",
        )
    return Verdict(setting.trainer, state, rho, r, margin, of, flood, collapse)


def predict_class(
    maps: ClassMaps,
    sampling: Sampling,
    *,
    classes: int = 1,
    declared_missing: bool | None = None,
    extra: Sequence[str] = (),
    rho_half: float = RHO_HALF,
    steepness: float = STEEPNESS,
    rho_half_span: tuple[float, float] | None = None,
) -> ClassPrediction:
    """The prediction for one class: windows, curves, and the trainers for each intent.

    ``classes``: foreground channels in the loss (CI and BCI share a patch's subset among them).
    ``extra``: trainer names to evaluate besides the standard ones (``-tr``).
    ``rho_half_span``: the smallest and largest ρ½ the class may have (pilots that read different
    speeds): the Φ = I window runs from the lower edge at the smallest to the upper edge at the
    largest, and the margins are taken against it; ``rho_half`` (their mean) gives the half-way ε,
    the curves and R. None when the upper edge is out of reach.
    """
    b = sampling.batch_size
    volumes, weights = labelled_volumes(maps, sampling)
    e = empty_share(maps, sampling)
    mean_v = float(np.dot(weights, volumes)) if weights.sum() > 0 else math.nan
    v_hat = (1 - e) * mean_v if weights.sum() > 0 else 0.0
    declared = maps.annotated < 1 if declared_missing is None else declared_missing
    base = dict(
        name=maps.name,
        channel=maps.channel,
        annotated=maps.annotated,
        empty=e,
        empty_random=maps.random.empty,
        empty_forced=maps.forced.empty,
        mean_volume=mean_v,
        volume_quantiles=_quantiles(volumes, weights),
        v_hat=v_hat,
        background_push=2 * mean_v / sampling.patch_voxels if weights.sum() > 0 else math.nan,
    )
    if weights.sum() == 0:
        note = "never labelled in the fold's training patches: no Dice setting has anything to learn; it is left out"
        return ClassPrediction(
            **base,
            eps_window_I=None,
            eps_half_I=None,
            min_batch_BI=None,
            max_batch_ignoring_BI=None,
            push_ratio_BI=math.nan,
            notes=(note,),
        )

    from nnunet_dicephi.analysis.pilot import suggested_eps

    edges = eps_window(maps, sampling, rho_half=rho_half, steepness=steepness)
    window = (edges[0], edges[2]) if edges else None
    if rho_half_span is not None:
        slowest, fastest = (eps_window(maps, sampling, rho_half=r, steepness=steepness) for r in rho_half_span)
        window = (slowest[0], fastest[2]) if slowest and fastest else None
    ignoring, learned = batch_window(maps, sampling, rho_half=rho_half, steepness=steepness)
    low, high = window if window else (v_hat / 10, v_hat)
    grid = np.logspace(math.log10(low) - 2, math.log10(high) + 2, 81)
    rho = push_ratio_I(grid, v_hat=v_hat, volumes=volumes, weights=weights)
    pilot_eps = suggested_eps(
        lambda x: push_ratio_I(x, v_hat=v_hat, volumes=volumes, weights=weights), float(grid[0]), float(grid[-1])
    )
    batches = np.arange(1, max(2 * b, 2 * (learned or 1), 8) + 1)
    retained_bi = [
        float(retained(push_ratio("BI", TINY_EPS, maps, sampling, int(x)), rho_half=rho_half, steepness=steepness))
        for x in batches
    ]

    names = [
        "TrainerDiceI",
        "TrainerDiceIEps",
        "TrainerDiceBI",
        "TrainerLeafDice",
        "TrainerDiceI_bg",
        "TrainerDiceI_CE",
        "TrainerDiceBI_CE",
        "TrainerDiceIEps_CE",
    ]
    if window is not None:
        suggested = _round_up(2 * window[1])
        names.insert(2, f"TrainerDiceI_eps{_eps_name(suggested)}")
    if classes > 1:
        names += ["TrainerDiceCI", "TrainerDiceBCI"]
    names += [n for n in extra if n not in names]
    verdicts = []
    for name in names:
        setting = Setting.from_trainer(name)
        if setting is None:
            continue
        verdicts.append(
            evaluate(
                setting,
                maps,
                sampling,
                classes=classes,
                window=window,
                batch_edges=(ignoring, learned),
                rho_half=rho_half,
                steepness=steepness,
                rho_half_span=rho_half_span,
            )
        )

    notes = []
    if e == 0:
        notes.append(
            "no empty maps in the training patches: Φ and ε do not change what this class learns about empty maps"
        )
    scales = [s for s in sampling.level_scales if s > 0]
    if len(scales) > 1 and mean_v * min(scales) < 1:
        notes.append(
            f"at the coarsest deep-supervision output ({min(scales):.3g} of the patch's voxels) a labelled map "
            f"holds {mean_v * min(scales):.2g} voxels on average: there the structure barely exists"
        )
    intents = _intents(verdicts, declared=declared, learned_batch=learned, batch=b, e=e)
    return ClassPrediction(
        **base,
        eps_window_I=window,
        eps_half_I=edges[1] if edges else None,
        min_batch_BI=learned,
        max_batch_ignoring_BI=ignoring,
        push_ratio_BI=float(push_ratio("BI", TINY_EPS, maps, sampling)),
        curve_eps=tuple(float(x) for x in grid),
        curve_push_ratio_I=tuple(float(x) for x in rho),
        curve_retained_I=tuple(float(x) for x in retained(rho, rho_half=rho_half, steepness=steepness)),
        curve_batch=tuple(int(x) for x in batches),
        curve_retained_BI=tuple(retained_bi),
        verdicts=tuple(verdicts),
        intents=intents,
        notes=tuple(notes),
        rho_half=rho_half,
        pilot_eps=pilot_eps,
    )


def _intents(verdicts: Sequence[Verdict], *, declared: bool, learned_batch: int | None, batch: int, e: float) -> dict:
    """Per intent, the trainers that do it (best margin first), and what to do when none will."""
    by_name = {v.trainer: v for v in verdicts}
    missing = [v for v in verdicts if v.state == "ignored" and v.flood != "high"]
    flooding = [v for v in verdicts if v.state == "ignored" and v.flood == "high"]
    order = {v.trainer: i for i, v in enumerate(verdicts)}
    # the first setting (in the order the paper's presets come) that clears the window by a wide margin
    missing.sort(key=lambda v: ((v.margin or 0) < 3, order[v.trainer]))
    if missing:
        missing_advice = f"{missing[0].trainer} ignores the empty maps, so structures hidden in them stay segmented"
    elif flooding:
        missing_advice = (
            f"no Dice setting will do: {flooding[0].trainer} ignores the empty maps but floods (the class is "
            f"absent from {e:.0%} of the patches and nothing trains the background), and a background term or "
            "a cross-entropy teaches the hidden structures as background. Declare the missing labels in the manifest "
            "(docs/partial-labels.md) and train TrainerDiceI_CE: unannotated maps leave the loss and the marginal "
            "cross-entropy keeps the background trained"
        )
    else:
        missing_advice = (
            "no Dice setting ignores these empty maps at this batch size: declare the missing labels in the manifest "
            "(docs/partial-labels.md); unannotated maps leave every subset of every trainer"
        )
    if declared:
        missing_advice = (
            "the manifest declares the cases without this label: every trainer of this project leaves those maps out "
            "of the loss (TrainerDiceI_CE also keeps the background trained). For structures hidden in empty maps: "
            + missing_advice
        )

    learns = [v for v in verdicts if v.state.startswith("learned") and v.flood != "high" and v.collapse < 1]
    dice_only = [v for v in learns if v.state == "learned"]
    dice_only.sort(key=lambda v: (v.collapse >= 2 / 3, (v.margin or 0) < 2, order[v.trainer]))
    ce = [v for v in learns if v.state != "learned"]
    if dice_only:
        empty_advice = f"{dice_only[0].trainer} learns the empty maps"
        bi = by_name.get("TrainerDiceBI")
        if bi is not None and bi.state != "learned" and learned_batch:
            empty_advice += f"; Φ = BI would need B ≥ {learned_batch} (the plans give {batch})"
        if any(v.collapse >= 2 / 3 for v in verdicts if v.state == "learned"):
            empty_advice += "; the settings with χ ≥ 2/3 risk leaving the labelled structures out too"
    else:
        reasons = []
        bi = by_name.get("TrainerDiceBI")
        if learned_batch is None:
            reasons.append(f"Φ = BI learns them at no batch size up to {MAX_BATCH}")
        elif bi is not None and bi.state != "learned":
            reasons.append(
                f"Φ = BI needs B ≥ {learned_batch} (the plans give {batch}; a plans variant with a larger batch)"
            )
        collapsing = [v.trainer for v in verdicts if v.state == "learned" and v.collapse >= 1]
        if collapsing:
            reasons.append(f"{', '.join(collapsing)} risk leaving the labelled structures out too (χ ≥ 1)")
        flooded = [v.trainer for v in verdicts if v.state == "learned" and v.flood == "high"]
        if flooded:
            reasons.append(f"{', '.join(flooded)} may flood before the empty maps are pushed")
        empty_advice = "no Dice-only setting will do" + (f" ({'; '.join(reasons)})" if reasons else "")
        empty_advice += ": train a _CE form, whose cross-entropy learns every voxel of an empty map"
        if ce:
            empty_advice += f" ({', '.join(v.trainer for v in ce)})"
    return {
        "missing": {"trainers": [v.trainer for v in missing], "advice": missing_advice},
        "empty": {"trainers": [v.trainer for v in dice_only + ce], "advice": empty_advice},
    }


# --- reading a dataset fold -------------------------------------------------------------------------


def _bins(values: np.ndarray, weights: np.ndarray) -> dict[int, list[float]]:
    keep = (values > 0) & (weights > 0)
    values, weights = values[keep].astype(np.float64), weights[keep]
    keys = np.floor(BIN_STEPS * np.log2(values) + 1e-9).astype(np.int64)
    out: dict[int, list[float]] = {}
    for k in np.unique(keys):
        sel = keys == k
        out[int(k)] = [float(weights[sel].sum()), float((weights[sel] * values[sel]).sum())]
    return out


def _start_index(points: np.ndarray, lbs, initial, offset, low) -> np.ndarray:
    """Grid index (per axis) of the patch nnU-Net crops around each of ``points`` (``(dims, n)``)."""
    return np.maximum(points - (initial // 2)[:, None], lbs[:, None]) + offset[:, None] - low[:, None]


def _weights_at(indices: np.ndarray, grid: tuple[int, ...], weights: np.ndarray) -> np.ndarray:
    flat = np.ravel_multi_index(tuple(indices), grid)
    return np.bincount(flat, weights=weights, minlength=int(np.prod(grid)))


def _window_counts(labelled, patch: np.ndarray, low: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """Labelled voxels in the patch at every start ``low + index``, from the voxels' own box only.

    Separable box sums as :func:`~nnunet_dicephi.statistics.window_sums`, but a window's part outside
    the labelled box is clipped away instead of padded: the work follows the structure and the grid
    of starts, not the image.
    """
    out = labelled.dense.astype(np.int64)
    for axis, size in enumerate(patch):
        length = out.shape[axis]
        shape = list(out.shape)
        shape[axis] = 1
        cumulative = np.concatenate((np.zeros(shape, np.int64), np.cumsum(out, axis=axis)), axis=axis)
        first = low[axis] - labelled.origin[axis] + np.arange(grid[axis])
        begin, stop = np.clip(first, 0, length), np.clip(first + size, 0, length)
        out = np.take(cumulative, stop, axis=axis) - np.take(cumulative, begin, axis=axis)
    return out


def case_slot_maps(seg, class_locations, label_sets: Sequence[Sequence[int]], model) -> dict:
    """What one case gives each class in a random and in a foreground-forced patch.

    Per slot kind (``random``, ``forced``) and class: the empty share, the share empty beside another
    labelled class, and the labelled-volume histogram; and the share with no class labelled. Follows
    nnU-Net's ``get_bbox`` as :mod:`nnunet_dicephi.statistics` does: the labelled count of every
    patch start that nnU-Net draws (box sums), weighted by how often it starts a patch there.
    """
    from nnunet_dicephi import statistics as S

    array = S._read(seg)
    shape = np.array(array.shape)
    patch, initial, lbs, ubs, offset = S._crop_geometry(shape, model)
    top = np.maximum(ubs, np.maximum(shape - 1 - initial // 2, lbs))
    low = lbs + offset
    grid = tuple(int(h - lo + 1) for lo, h in zip(low, top + offset))
    channels = S._read_channels(array, [np.atleast_1d(np.asarray(labels)) for labels in label_sets])

    if model.ignore_label is None:
        random = np.zeros(grid)
        random[tuple(slice(0, int(u - lo + 1)) for u, lo in zip(ubs, lbs))] = 1.0
        random = random.reshape(-1)
    else:  # nnU-Net centres random patches on any annotated voxel
        voxels = np.array(np.nonzero(array != model.ignore_label))
        random = _weights_at(_start_index(voxels, lbs, initial, offset, low), grid, np.ones(voxels.shape[1]))
    if model.ignore_label is None and class_locations is not None:
        centres = [S._coordinates(v, len(shape)) for v in class_locations.values() if len(v)]
    else:
        centres = [c.coordinates() for c in channels if c is not None]
    if centres:
        forced = np.zeros(int(np.prod(grid)))
        for c in centres:
            share = np.full(c.shape[1], 1.0 / (c.shape[1] * len(centres)))
            forced += _weights_at(_start_index(c, lbs, initial, offset, low), grid, share)
    else:
        forced = random
    # only the starts nnU-Net draws: their bounding box in the grid
    drawn = np.nonzero(((random > 0) | (forced > 0)).reshape(grid))
    box = tuple(slice(int(d.min()), int(d.max()) + 1) for d in drawn)
    sub = tuple(b.stop - b.start for b in box)
    sub_low = low + np.array([b.start for b in box])
    random, forced = (w.reshape(grid)[box].reshape(-1) for w in (random, forced))
    tables = np.stack(
        [
            _window_counts(c, patch, sub_low, sub).reshape(-1) if c is not None else np.zeros(int(np.prod(sub)), int)
            for c in channels
        ]
    )
    out = {}
    for kind, w in (("random", random), ("forced", forced)):
        w = w / w.sum()
        used = np.flatnonzero(w)
        counts, w = tables[:, used], w[used]
        labelled = counts > 0
        classes = []
        for c in range(len(label_sets)):
            others = np.delete(labelled, c, axis=0).any(axis=0) if len(label_sets) > 1 else np.zeros_like(labelled[c])
            empty = ~labelled[c]
            classes.append(
                {
                    "empty": float(w[empty].sum()),
                    "empty_with_other": float(w[empty & others].sum()),
                    "bins": _bins(counts[c], w),
                }
            )
        out[kind] = {"classes": classes, "none_labelled": float(w[~labelled.any(axis=0)].sum())}
    return out


def combine_cases(per_case: Sequence[dict], annotated: np.ndarray) -> dict:
    """Mean over cases (drawn uniformly); per class over the cases that annotate it (``(cases, classes)`` bool)."""
    n_classes = annotated.shape[1]
    out: dict = {"annotated_cases": [int(x) for x in annotated.sum(axis=0)], "cases": len(per_case)}
    for kind in ("random", "forced"):
        classes = []
        for c in range(n_classes):
            rows = [case[kind]["classes"][c] for case, a in zip(per_case, annotated[:, c]) if a]
            n = len(rows)
            bins: dict[int, list[float]] = {}
            for row in rows:
                for k, (w, wv) in row["bins"].items():
                    entry = bins.setdefault(int(k), [0.0, 0.0])
                    entry[0] += w / n
                    entry[1] += wv / n
            classes.append(
                {
                    "empty": sum(r["empty"] for r in rows) / n if n else 1.0,
                    "empty_with_other": sum(r["empty_with_other"] for r in rows) / n if n else 0.0,
                    "bins": sorted([k, w, wv] for k, (w, wv) in bins.items()),
                }
            )
        none = float(np.mean([case[kind]["none_labelled"] for case in per_case]))
        out[kind] = {"classes": classes, "none_labelled": none}
    return out


def class_maps_from(combined: dict, names: Sequence[str], channels: Sequence[int]) -> list[ClassMaps]:
    """:class:`ClassMaps` from :func:`combine_cases`' result (the cache's content)."""
    out = []
    for c, (name, channel) in enumerate(zip(names, channels)):
        kinds = {}
        for kind in ("random", "forced"):
            row = combined[kind]["classes"][c]
            bins = [b for b in row["bins"] if b[1] > 0]
            kinds[kind] = SlotMaps(
                row["empty"], row["empty_with_other"], tuple(b[2] / b[1] for b in bins), tuple(b[1] for b in bins)
            )
        share = combined["annotated_cases"][c] / combined["cases"]
        out.append(ClassMaps(name, channel, share, kinds["random"], kinds["forced"]))
    return out


def _label_names(dataset_json: dict, label_sets: Sequence[Sequence[int]]) -> list[str]:
    """The ``dataset.json`` name of each channel's label or region (its values where none matches)."""
    by_value = {}
    for name, value in (dataset_json.get("labels") or {}).items():
        values = tuple(int(v) for v in np.atleast_1d(value))
        by_value.setdefault(values, name)
    return [by_value.get(tuple(int(v) for v in labels), "+".join(map(str, labels))) for labels in label_sets]


def read_class_maps(trainer, log=print) -> tuple[list[ClassMaps], Sampling, dict]:
    """The fold's per-class sampling facts, from a built trainer (``trainers.reading``); cached.

    The cache sits beside the trainers' statistics (``dicephi_statistics/``), keyed by the same data
    fingerprint and sampling model. Returns the classes (foreground channels), the sampling facts
    and a record (fingerprint, trainer's heuristic ε per channel, cache path).
    """
    from nnunet_dicephi import statistics as S
    from nnunet_dicephi._files import write_text_atomically

    model = trainer._sampling_model()
    names, label_sets, has_background = S.output_channels(trainer.label_manager)
    first = 1 if has_background else 0
    foreground, channels = label_sets[first:], list(range(first, len(label_sets)))
    fingerprint = trainer.data_fingerprint()["fingerprint"]
    key = {
        "advise_version": VERSION,
        "data": fingerprint,
        "model": model.__dict__,
        "channels": [list(s) for s in foreground],
    }
    folder = os.path.join(trainer.preprocessed_dataset_folder_base, S.CACHE_FOLDER)
    name = f"{trainer.plans_manager.plans_name}_{trainer.configuration_name}_fold{trainer.fold}_maps"
    path = S.cache_path(folder, name, key)
    combined = None
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as handle:
                stored = json.load(handle)
            if stored["key"] == json.loads(json.dumps(key, default=str)):
                combined = stored["maps"]
        except (OSError, ValueError, KeyError) as error:
            log(f"nnunet-dicephi: the cache {path} is unreadable ({error}); reading the cases again")
    if combined is None:
        train_keys, _ = trainer.do_split()
        dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, train_keys)
        keys = list(dataset.identifiers)
        per_case = []
        for case in keys:
            _, seg, _, properties = dataset.load_case(case)
            per_case.append(case_slot_maps(seg, properties.get("class_locations"), foreground, model))
        table = trainer._annotation_table()
        mask = np.ones((len(keys), len(names)), bool) if table is None else table.mask(keys)
        combined = combine_cases(per_case, mask[:, first:])
        os.makedirs(folder, exist_ok=True)
        write_text_atomically(path, json.dumps({"key": key, "maps": combined}, default=str))
    classes = class_maps_from(combined, _label_names(trainer.dataset_json, foreground), channels)
    sampling = Sampling(
        batch_size=int(model.batch_size),
        oversample_foreground_percent=float(model.oversample_foreground_percent),
        patch_voxels=int(np.prod(model.patch_size)),
        output_channels=len(names),
        has_regions=bool(trainer.label_manager.has_regions),
        none_labelled=(combined["random"]["none_labelled"], combined["forced"]["none_labelled"]),
        level_scales=tuple(float(s) for s in trainer._level_scales()),
    )
    stats = trainer.dataset_statistics()
    record = {"fingerprint": fingerprint, "heuristic_eps": list(stats.expected_volume), "cache": path}
    return classes, sampling, record


# --- the table, the figure, the verb ----------------------------------------------------------------


def _number(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"


def _margin_text(v: Verdict) -> str:
    if v.margin is None:
        return "CE" if v.margin_of == "ce" else "—"
    if not math.isfinite(v.margin):
        return "∞"
    unit = {"eps": "ε", "B": "B", "rho": "ρ"}[v.margin_of]
    return f"×{v.margin:.2g} in {unit}"


def table_text(header: dict, predictions: Sequence[ClassPrediction]) -> str:
    """The advice as text: per class the facts, the windows, each trainer's verdict, the two intents."""
    scales = ", ".join(f"{s:.3g}" for s in header["level_scales"])
    lines = [
        f"{header['dataset']} {header['configuration']} fold {header['fold']} ({header['plans']}): "
        f"B = {header['batch_size']} ({header['forced_slots']} foreground-forced), patch {header['patch_voxels']} "
        f"voxels, {header['training_cases']} training cases; deep-supervision outputs at {scales} of the voxels "
        "(ε scaled alike: ρ is the same at every output)",
        f"model: ρ½ = {header['model']['rho_half']:.3g}, k = {header['model']['steepness']:g}; window: R from "
        f"{SEGMENTED:g} (ignored) to {LEFT_OUT:g} (learned)",
    ]
    schedule = header.get("schedule")
    if schedule:
        epochs, iterations, lr = REFERENCE_SCHEDULE
        lines.append(
            f"training: {schedule['epochs']} epochs × {schedule['iterations']} iterations at "
            f"{schedule['initial_lr']:g} (-tr {header['trainer']}), {schedule['factor']:.3g} × the reference "
            f"({epochs} × {iterations} at {lr:g}): "
            f"ρ½ = {RHO_HALF:g} · {1 - ONSET:.2g} / "
            + (
                f"({schedule['factor']:.3g} − {ONSET:g})"
                if schedule["factor"] - ONSET >= SHORTEST_SPAN
                else f"{SHORTEST_SPAN:g} (a training that ends before the onset counts as one just past it)"
            )
            + " (the time law"
            + (
                ")"
                if schedule["checked"]
                else f", checked from ×{TIME_LAW_CHECKED[0]:g} to ×{TIME_LAW_CHECKED[1]:g}: here an extrapolation)"
            )
        )
    for p in predictions:
        q = p.volume_quantiles
        lines += [
            "",
            f"class {p.name} (channel {p.channel}): annotated in {p.annotated:.0%} of the cases; empty in "
            f"{p.empty:.0%} of its annotated maps (random patches {p.empty_random:.0%}, forced {p.empty_forced:.0%}); "
            f"labelled volume {_number(p.mean_volume)} voxels (10–50–90 %: {_number(q[0])}, {_number(q[1])}, "
            f"{_number(q[2])}); v̂ = {_number(p.v_hat, 4)}",
        ]
        if p.eps_window_I is not None:
            lines.append(
                f"  Φ = I: empty maps ignored below ε ≈ {_number(p.eps_window_I[0])}, learned above "
                f"ε ≈ {_number(p.eps_window_I[1])} (half at {_number(p.eps_half_I)}); Φ = BI, ε = 1e-7: "
                + (
                    f"learned from B = {p.min_batch_BI}"
                    if p.min_batch_BI
                    else f"not learned at any B up to {MAX_BATCH}"
                )
                + (f", ignored up to B = {p.max_batch_ignoring_BI}" if p.max_batch_ignoring_BI else "")
                + f" (ρ = {p.push_ratio_BI:.2f} at B = {header['batch_size']})"
            )
        elif p.eps_half_I is not None and p.speed_span:
            lines.append(
                f"  Φ = I: half left out at ε ≈ {_number(p.eps_half_I)}; at the fastest pilot's speed no ε leaves "
                "all of a hidden structure out at this training (the window is open above)"
            )
        lines += _speed_lines(p, header)
        for note in p.notes:
            lines.append(f"  note: {note}")
        if p.verdicts:
            width = max(len(v.trainer) for v in p.verdicts)
            lines.append(
                f"  {'trainer':<{width}}  {'ρ':>7}  {'R':>5}  {'empty maps':<13} {'margin':<14} {'flood':<5}  χ"
            )
            for v in p.verdicts:
                lines.append(
                    f"  {v.trainer:<{width}}  {v.push_ratio:7.3g}  {v.retained:5.2f}  {v.state:<13} "
                    f"{_margin_text(v):<14} {v.flood:<5}  {v.collapse:.2g}"
                )
        for intent, title in (
            ("missing", "segment structures whose labels are missing"),
            ("empty", "learn maps that are truly empty"),
        ):
            if intent in p.intents:
                lines.append(f"  to {title}: {p.intents[intent]['advice']}")
    lines += [
        "",
        "ρ: push on an empty map over the push off the label of a labelled map (Eq. 4); R: predicted share of a",
        "structure hidden in the empty maps that stays segmented; margin: how far the setting clears the window",
        "(×1 at its edge); flood: the class may take the background's place (Dice only, nothing trains the",
        "background); χ ≥ 1: leaving the labelled structures out too is no more costly (collapse).",
    ]
    return "\n".join(lines)


def _speed_lines(p: ClassPrediction, header: dict) -> list[str]:
    """How fast the class's regime leaves a hidden structure: read by a pilot, or how to read it."""
    from nnunet_dicephi.analysis.pilot import PUSH_TO_LEAVE, pilot_trainer

    if not p.pilots:
        if p.pilot_eps is None or not p.eps_window_I:
            return []
        return [
            f"  speed: the demo's (not measured); a pilot reads this class's: -tr {pilot_trainer(p.pilot_eps)}, "
            "then advise … --pilot <its fold folder> (two pilots, other seeds, read it finer)"
        ]
    lines, alone = [], len(p.pilots) == 1
    for r, run in zip(p.pilots, header["pilots"]):
        head = f"  pilot {run['trainer']} (ε = {r['eps']:.3g}, {r['cases']} validation cases): "
        if r["speed"] is None:
            lines.append(head + r["note"])
            continue
        at = "at least " if r["bound"] else ""
        when = f"segmented from epoch {r['segmented_epoch']}, " + (
            f"left out from epoch {r['left_epoch']}"
            if r["left_epoch"]
            else f"still segmented at epoch {r['recorded_epochs']}"
        )
        read = head + when + f": push {at}{r['amount']:.2g} = {at}{r['speed']:.2g} × the demo's {PUSH_TO_LEAVE:g}"
        lines.append(read + (f" → ρ½ = {at}{p.rho_half:.3g} (the windows above take it)" if alone else ""))
        if r["note"]:
            lines.append(f"    note: {r['note']}")
    if not alone and p.speed is not None:
        at = "at least " if p.speed_bound else ""
        read = sum(r["speed"] is not None for r in p.pilots)
        line = f"  speed {at}{p.speed:.2g}: the geometric mean of {read} pilots' speeds → ρ½ = {at}{p.rho_half:.3g} "
        if p.speed_span:
            line += (
                f"(the half-way ε above); the Φ = I window runs from the slowest pilot's lower edge to the fastest's "
                f"upper edge ({p.speed_span[0]:.2g}–{p.speed_span[1]:.2g})"
            )
        else:
            line += "(the windows above take it)"
        lines.append(line)
    longest = max((run["factor"] for run in header["pilots"]), default=0.0)
    if p.speed is not None and header["schedule"]["factor"] < longest:
        lines.append(
            f"  note: this training ({header['schedule']['factor']:.2g} × the reference) is shorter than the pilot "
            f"({longest:.2g} ×): windows with a pilot's speed were checked on trainings at least as long as the "
            "pilot, on shorter ones they missed (docs/studies.md)"
        )
    return lines


def plot_predictions(predictions: Sequence[ClassPrediction], path: str, title: str, batch_size: int) -> None:
    """Per class: R against ε for Φ = I (window shaded, v̂ marked) and against B for Φ = BI."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    shown = [p for p in predictions if p.curve_eps]
    rows = max(len(shown), 1)
    figure = Figure(figsize=(9.0, 2.9 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, 2, squeeze=False)
    for row, p in enumerate(shown):
        left, right = axes[row]
        left.semilogx(p.curve_eps, p.curve_retained_I, color="C0", label="R: hidden structure segmented")
        twin = left.twinx()
        twin.semilogx(p.curve_eps, p.curve_push_ratio_I, color="C3", ls="--", lw=0.9, label="ρ (Eq. 4)")
        twin.set_ylabel("ρ: empty / background push", color="C3", fontsize=8)
        twin.set_ylim(0, max(2.0, 1.1 * max(p.curve_push_ratio_I)))
        if p.eps_window_I:
            left.axvspan(*p.eps_window_I, color="C1", alpha=0.15, label="predicted window")
        left.axvline(p.v_hat, color="grey", ls=":", lw=0.9)
        left.annotate("H = v̂", (p.v_hat, 1.02), fontsize=7, ha="center")
        left.set_ylim(-0.03, 1.08)
        left.set_xlabel("ε (voxels), Φ = I")
        left.set_ylabel(f"class {p.name}: R")
        right.plot(p.curve_batch, p.curve_retained_BI, "o-", ms=3, color="C2")
        right.axvline(batch_size, color="grey", ls=":", lw=0.9)
        right.annotate("plans' B", (batch_size, 1.02), fontsize=7, ha="center")
        if p.min_batch_BI:
            right.axvline(p.min_batch_BI, color="C1", lw=0.9, label=f"learned from B = {p.min_batch_BI}")
            right.legend(fontsize=7, loc="upper right")
        right.set_ylim(-0.03, 1.08)
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_xlabel("batch size B, Φ = BI, ε = 1e-7")
        if row == 0:
            left.legend(fontsize=7, loc="lower left")
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no class with labelled voxels", ha="center", transform=axes[0, 0].transAxes)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=110)


def advise(
    classes: Sequence[ClassMaps],
    sampling: Sampling,
    *,
    extra: Sequence[str] = (),
    rho_half: float = RHO_HALF,
    steepness: float = STEEPNESS,
    speeds: Mapping[int, float] | None = None,
    spans: Mapping[int, tuple[float, float]] | None = None,
) -> list[ClassPrediction]:
    """The prediction for every class (the verb without reading or writing).

    ``speeds``: per channel, the regime's speed a pilot read (:mod:`~nnunet_dicephi.analysis.pilot`):
    that class's ρ½ is ``rho_half`` times it. ``spans``: per channel, the slowest and fastest of
    several pilots' speeds, over which the class's Φ = I window runs (:func:`predict_class`).
    """
    included = len(classes)
    speeds, spans = speeds or {}, spans or {}
    return [
        predict_class(
            m,
            sampling,
            classes=included,
            extra=extra,
            rho_half=rho_half * speeds.get(m.channel, 1.0),
            steepness=steepness,
            rho_half_span=(
                (rho_half * spans[m.channel][0], rho_half * spans[m.channel][1]) if m.channel in spans else None
            ),
        )
        for m in classes
    ]


def add_parser(verbs) -> None:
    """Add the ``advise`` verb to the ``nnunet-dicephi`` subparsers ``verbs``."""
    p = add_verb(verbs, "advise", run_advise)
    p.add_argument("dataset", help="dataset id or name, e.g. 901 or Dataset901_Blobs")
    p.add_argument("configuration", help="nnU-Net configuration, e.g. 2d or 3d_fullres")
    p.add_argument("fold", help="fold number or 'all'")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument(
        "-tr",
        "--trainer",
        default="TrainerDiceIEps",
        help="trainer whose sampling to model; a Dice trainer of this project is judged too (default: TrainerDiceIEps)",
    )
    p.add_argument("-o", "--output", help="FIGURE.png, or a folder for advise.png, advise.json and advise.txt")
    p.add_argument("--force", action="store_true", help="replace an earlier advise output folder")
    p.add_argument("--json", action="store_true", help="print the prediction as JSON instead of the table")
    p.add_argument(
        "--pilot",
        metavar="FOLD_FOLDER",
        action="append",
        help="fold folder of a pilot training on the same data and plans (the TrainerDiceI_eps…_ep60_it40_lr1e-2 "
        "advise suggests; finished or not): calibrates each class's speed from its validation record; "
        "given more than once (pilots of other seeds), the speed is the geometric mean of theirs and the Φ = I "
        "window spans the slowest and the fastest",
    )
    p.add_argument(
        "--pilot-cases",
        metavar="FILE",
        help="only these validation cases measure the pilot (a JSON list of case identifiers, or one per line): "
        "those in which the hidden structure is labelled",
    )


def _schedule(trainer) -> dict:
    """The trainer's training length and where it stands against the reference (the time law)."""
    epochs, iterations, lr = int(trainer.num_epochs), int(trainer.num_iterations_per_epoch), float(trainer.initial_lr)
    factor = schedule_factor(epochs, iterations, lr)
    low, high = TIME_LAW_CHECKED
    return {
        "epochs": epochs,
        "iterations": iterations,
        "initial_lr": lr,
        "factor": factor,
        "checked": low <= factor * (1 + 1e-9) and factor <= high * (1 + 1e-9),
    }


def _header(args, trainer, sampling: Sampling, cases: int) -> dict:
    from nnunet_dicephi.analysis.pilot import PILOT_PUSH, PILOT_SCHEDULE, PUSH_TO_LEAVE

    schedule = _schedule(trainer)
    return {
        "dataset": trainer.plans_manager.dataset_name,
        "configuration": args.configuration,
        "fold": args.fold,
        "plans": args.plans,
        "trainer": args.trainer,
        "batch_size": sampling.batch_size,
        "forced_slots": forced_slots(sampling.batch_size, sampling.oversample_foreground_percent),
        "oversample_foreground_percent": sampling.oversample_foreground_percent,
        "patch_voxels": sampling.patch_voxels,
        "training_cases": cases,
        "level_scales": list(sampling.level_scales),
        "schedule": schedule,
        "model": {
            "rho_half": rho_half_at(schedule["factor"]),
            "rho_half_reference": RHO_HALF,
            "onset": ONSET,
            "reference_schedule": list(REFERENCE_SCHEDULE),
            "time_law_checked": list(TIME_LAW_CHECKED),
            "steepness": STEEPNESS,
            "segmented": SEGMENTED,
            "left_out": LEFT_OUT,
            "overlap": OVERLAP,
            "outside": OUTSIDE,
            "push_to_leave": PUSH_TO_LEAVE,
            "pilot_schedule": list(PILOT_SCHEDULE),
            "pilot_push": PILOT_PUSH,
        },
        "pilot": None,
        "pilots": [],
    }


def run_advise(args: argparse.Namespace) -> int:
    """Predict, before training, which Phi and epsilon ignore or learn each class's empty maps.

    Reads the fold's preprocessed label maps, plans and partial-label manifest (through the trainers'
    own sampling model; cached beside the statistics) and prints per class: the share of empty and of
    unannotated maps, the labelled volume, the window in epsilon (Phi=I) and in B (Phi=BI) where empty
    maps go from ignored to learned, each trainer's verdict with its margin and the risks of a flood
    or a collapse, and the trainers for each intent. --json prints the prediction for scripts; -o
    writes the figure of the predicted curves (docs/advise.md).
    """
    from nnunet_dicephi.loss_config import TrainerNameError, parse_trainer_name

    if args.fold != "all" and not args.fold.isdigit():
        return refuse("advise", f"fold must be a number or 'all'; got {args.fold!r}")
    try:
        parse_trainer_name(args.trainer)
    except TrainerNameError as error:
        return refuse("advise", error)
    pilot_runs, pilot_cases = [], None
    if args.pilot:
        from nnunet_dicephi.analysis.pilot import PilotError, read_cases, read_pilot

        try:
            pilot_runs = [read_pilot(folder) for folder in args.pilot]
            pilot_cases = read_cases(args.pilot_cases) if args.pilot_cases else None
        except (PilotError, OSError) as error:
            return refuse("advise", error)
    elif args.pilot_cases:
        return refuse("advise", "--pilot-cases chooses the cases of a pilot: give the pilot with --pilot")
    output = os.path.abspath(args.output) if args.output else None
    figure_file = output is not None and output.lower().endswith((".png", ".pdf", ".svg"))
    if output is not None and not figure_file:
        from nnunet_dicephi._files import output_folder_problem

        problem = output_folder_problem(
            output, force=args.force, marker="advise.json", command="nnunet-dicephi advise", parent_must_exist=True
        )
        if problem:
            return refuse("advise", problem)
    elif figure_file and not os.path.isdir(os.path.dirname(output)):
        return refuse("advise", f"the folder of {output} does not exist")

    from nnunet_dicephi.trainers.reading import reading_trainer

    try:
        with reading_trainer(args.dataset, args.configuration, args.fold, args.trainer, args.plans) as trainer:
            classes, sampling, record = read_class_maps(trainer, log=lambda text: print(text, file=sys.stderr))
            header = _header(args, trainer, sampling, len(trainer.do_split()[0]))
            annotated = _validation_cases(trainer, classes) if pilot_runs else {}
    except Exception as error:  # nnU-Net's many failure types become one clear message
        return refuse("advise", f"cannot read dataset {args.dataset}: {error}")
    readings = []  # per pilot, per class
    for folder, run in zip(args.pilot or [], pilot_runs):
        if run.fingerprint != record["fingerprint"]:
            return refuse(
                "advise",
                f"the pilot {folder} trained on other data, plans or fold than {header['dataset']} "
                f"{args.configuration} fold {args.fold} -p {args.plans} (data fingerprint "
                f"{run.fingerprint[:12]}… against {record['fingerprint'][:12]}…): give a pilot trained on these",
            )
        readings.append(_pilot_readings(run, classes, sampling, annotated, pilot_cases))
        header["pilots"].append(
            {
                "folder": os.path.abspath(folder),
                "trainer": run.trainer,
                "schedule": list(run.schedule),
                "factor": schedule_factor(*run.schedule),
                "cases": os.path.abspath(args.pilot_cases) if args.pilot_cases else None,
            }
        )
    header["pilot"] = header["pilots"][0] if header["pilots"] else None
    judged = Setting.from_trainer(args.trainer) is not None
    extra = [args.trainer] if judged else []
    from nnunet_dicephi.analysis.pilot import combined_speed, speed_span

    per_class = [combined_speed([own[index] for own in readings]) for index in range(len(classes))]
    speeds = {m.channel: speed for m, (speed, _) in zip(classes, per_class) if speed}
    per_span = [speed_span([own[index] for own in readings]) for index in range(len(classes))]
    spans = {m.channel: span for m, span in zip(classes, per_span) if span}
    predictions = advise(
        classes, sampling, extra=extra, rho_half=header["model"]["rho_half"], speeds=speeds, spans=spans
    )
    if readings:
        predictions = [
            replace(
                p,
                pilot=readings[0][index].to_json(),
                pilots=[own[index].to_json() for own in readings],
                speed=per_class[index][0],
                speed_bound=per_class[index][1],
                speed_span=per_span[index],
            )
            for index, p in enumerate(predictions)
        ]
    heuristic = record["heuristic_eps"]
    result = {
        **header,
        "heuristic_eps": heuristic,
        "data_fingerprint": record["fingerprint"],
        "classes": [p.to_json() for p in predictions],
    }
    text = table_text(header, predictions)
    if not judged:
        text += (
            f"\n{args.trainer}: not judged (the model covers the Dice loss of Eq. 3 with ε_nr = ε_dr, and leaf and "
            "marginal Dice; its patch sampling was used)"
        )
    print(json.dumps(_finite(result), indent=2) if args.json else text)
    if output is not None:
        _write(output, figure_file, predictions, result, text, header)
        print(f"wrote {output}", file=sys.stderr)
    return 0


def _validation_cases(trainer, classes: Sequence[ClassMaps]) -> dict[int, set[str]]:
    """Per channel, the fold's validation cases that annotate the class (the manifest's; all without one)."""
    validation = [str(key) for key in trainer.do_split()[1]]
    table = trainer._annotation_table()
    if table is None:
        return {m.channel: set(validation) for m in classes}
    mask = table.mask(validation)
    return {m.channel: {key for key, row in zip(validation, mask) if row[m.channel]} for m in classes}


def _pilot_readings(run, classes: Sequence[ClassMaps], sampling: Sampling, annotated: dict, cases: set | None) -> list:
    """Each class's reading of the pilot, on its annotated validation cases (among ``cases`` when given)."""
    from nnunet_dicephi.analysis.pilot import read_class

    readings = []
    for index, maps in enumerate(classes):
        own = annotated.get(maps.channel, set())
        own = own & cases if cases is not None else own
        readings.append(
            read_class(run, index, maps.name, lambda e, m=maps: float(push_ratio("I", e, m, sampling)), own)
        )
    return readings


def _write(output: str, figure_file: bool, predictions, result: dict, text: str, header: dict) -> None:
    import shutil

    from nnunet_dicephi._files import replace_folder, staging_folder, write_text_atomically

    title = f"{header['dataset']} {header['configuration']} fold {header['fold']}: predicted transition"
    if figure_file:
        base, suffix = os.path.splitext(output)
        partial = f"{base}.partial{os.getpid()}{suffix}"
        try:
            plot_predictions(predictions, partial, title, header["batch_size"])
            os.replace(partial, output)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return
    tmp = str(staging_folder(output))
    try:
        plot_predictions(predictions, os.path.join(tmp, "advise.png"), title, header["batch_size"])
        write_text_atomically(os.path.join(tmp, "advise.json"), json.dumps(_finite(result), indent=2) + "\n")
        write_text_atomically(os.path.join(tmp, "advise.txt"), text + "\n")
        replace_folder(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
