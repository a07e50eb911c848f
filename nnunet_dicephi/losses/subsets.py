"""Φ: from ``(B, C)`` per-map terms to one value per subset, ε, weights and the mean over Φ."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ._validation import Epsilon
from .sums import MapSums

EpsPer = Literal["subset", "map"]
Weighting = Literal["term", "inside"]
MeanOver = Literal["present", "all"]
LeafMean = Literal["all", "labelled"]
LEAF_MEANS: tuple[LeafMean, ...] = ("all", "labelled")
MEAN_OVER: tuple[MeanOver, ...] = ("present", "all")
EPS_PER: tuple[EpsPer, ...] = ("subset", "map")
"""Where a per-class ε is added: once per subset of Φ (Eq. 3, the default), or once per kept map."""
WEIGHTINGS: tuple[Weighting, ...] = ("term", "inside")
"""How class weights act: on each subset's term (MONAI's ``weight``; the default), or inside the sums (Sudre)."""


def reduce_maps(x: Tensor, phi: str, op: str = "sum") -> Tensor:
    """Reduce a ``(B, C)`` per-map tensor to one value per subset of Φ.

    Subset shapes: I → ``(B, C)``, CI → ``(B,)``, BI → ``(C,)``, BCI → ``()``.
    """
    reduce = torch.sum if op == "sum" else torch.amax
    if phi == "I":
        return x
    if phi == "CI":
        return reduce(x, 1)
    if phi == "BI":
        return reduce(x, 0)
    return reduce(x, (0, 1))


def expand_subsets(x: Tensor, phi: str, shape: torch.Size) -> Tensor:
    """Broadcast one value per subset back to the ``(B, C)`` maps it holds."""
    if phi == "CI":
        x = x.unsqueeze(1)
    elif phi == "BI":
        x = x.unsqueeze(0)
    return x.expand(shape)


def _eps_per_subset(eps: Epsilon, keep: Tensor, phi: str, dtype: torch.dtype, per: EpsPer) -> Tensor | float:
    """ε of every subset of Φ.

    A number is added once to every subset (Eq. 3). A per-class ``(C,)`` value with
    ``per="subset"``: once for each class the subset holds a kept map of — for Φ = I and BI, where a
    subset is one class, ε_c itself; with ``per="map"``: once for every kept map, so a subset gets
    the sum over its maps (a volume per map, summed like the labels it stands for).
    """
    if not isinstance(eps, Tensor):
        return eps
    per_map = torch.where(keep, eps.to(device=keep.device, dtype=dtype).unsqueeze(0), 0.0)
    if per == "map" or phi in ("I", "CI"):  # I and CI hold at most one map of each class
        return reduce_maps(per_map, phi)
    per_class = per_map.amax(0)  # (C,): ε_c where the class has a kept map in the batch, else 0
    return per_class if phi == "BI" else per_class.sum()


def _subset_weights(weights: Tensor, keep: Tensor, phi: str) -> Tensor:
    """One weight per subset: the mean weight of its kept maps (the class's weight when Φ = I or BI)."""
    kept = keep.to(weights.dtype)
    return reduce_maps(weights * kept, phi) / reduce_maps(kept, phi).clamp_min(1)


def ratio_loss(
    numerator: Tensor,
    denominator: Tensor,
    keep: Tensor,
    *,
    phi: str,
    eps_nr: Epsilon,
    eps_dr: Epsilon,
    labels_required: Tensor | None = None,
    eps_per: EpsPer = "subset",
    subset_weights: Tensor | None = None,
    mean_over: MeanOver = "present",
) -> Tensor:
    """``mean over present subsets of w_φ · (1 − (Σ_φ num + ε_nr) / (Σ_φ den + ε_dr))``.

    ``numerator`` and ``denominator`` are ``(B, C)`` per-map terms, linear in the map sums, so
    summing them per subset equals reducing the voxels of the subset directly. Maps where ``keep``
    is False leave every subset; a subset with no kept map leaves Φ (it is not counted in |Φ|). With
    ``labels_required`` (per-map label volumes), subsets whose labels sum to zero leave Φ as well.
    ``subset_weights`` (``(B, C)`` per map) weigh each subset's term by the mean weight of its kept
    maps. ``mean_over="all"`` divides by the number of subsets of Φ whatever is left of them (a
    subset that left contributes 0): a constant |Φ| from batch to batch.

    A denominator of exactly 0 (only possible with ``eps_dr = 0``: empty labels, zero probabilities)
    counts as perfect agreement, ratio 1, and passes no gradient; this keeps every output finite.
    """
    numerator = torch.where(keep, numerator, 0.0)
    denominator = torch.where(keep, denominator, 0.0)
    num = reduce_maps(numerator, phi) + _eps_per_subset(eps_nr, keep, phi, numerator.dtype, eps_per)
    den = reduce_maps(denominator, phi) + _eps_per_subset(eps_dr, keep, phi, denominator.dtype, eps_per)
    present = reduce_maps(keep.to(numerator.dtype), phi) > 0
    if labels_required is not None:
        present = present & (reduce_maps(torch.where(keep, labels_required, 0.0), phi) > 0)
    safe = den > 0
    ratio = torch.where(safe, num / torch.where(safe, den, 1.0), 1.0)
    term = 1.0 - ratio
    if subset_weights is not None:
        term = term * _subset_weights(subset_weights.to(term.dtype), keep, phi)
    per_subset = torch.where(present, term, 0.0)
    if mean_over == "all":
        return per_subset.sum() / max(per_subset.numel(), 1)
    return per_subset.sum() / present.sum().clamp_min(1)


def kept_maps(sums: MapSums, annotated: Tensor | None) -> Tensor:
    """Maps that count: annotated, in a batch element with at least one voxel left by the mask."""
    keep = (sums.voxels > 0).unsqueeze(1).expand_as(sums.intersection)
    if annotated is not None:
        keep = keep & annotated.to(keep.device)
    return keep


def _without_background(x: Tensor | None) -> Tensor | None:
    return None if x is None else x[..., 1:]


def drop_background(sums: MapSums, annotated: Tensor | None, *extra: Epsilon | Tensor | None):
    """Remove class 0 from the sums and from every per-class argument."""
    dropped = MapSums(sums.intersection[:, 1:], sums.pred[:, 1:], sums.target[:, 1:], sums.voxels)
    rest = tuple(e[..., 1:] if isinstance(e, Tensor) and e.ndim > 0 else e for e in extra)
    return (dropped, _without_background(annotated), *rest)
