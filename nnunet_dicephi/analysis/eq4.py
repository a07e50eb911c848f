"""Eq. 4 of the Φ/ε paper on per-map sums, and a model of one training step with empty maps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from nnunet_dicephi.loss_config import PHIS


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
    volume: float | np.ndarray, fp: float | np.ndarray, *, batch_size: int, empty_fraction: float, **step: Any
) -> StepGradients:
    """Empty- and non-empty-map gradients for a batch of B maps with a share of empty maps.

    For B ≥ 2 both come from one step with :func:`empty_maps_in_batch` empty maps. For B = 1 the
    empty map and the non-empty map are two steps of one map each. ``step`` holds the other
    arguments of :func:`step_gradients` (Φ, ε, overlap, outside).
    """
    common = {"batch_size": batch_size, **step}
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
