r"""Mime loss (Kervadec & de Bruijne, 2023): a fixed stand-in for the Dice gradient.

The Dice gradient is two-valued within a map (Eq. 4): negative on labelled voxels, positive
elsewhere. Mime replaces it by dataset constants, with no division at all:

.. math::

    L = \frac{1}{|M|}\sum_{(b,c)\in M}\sum_i \omega_{bci}\,\tilde y_{bci},\qquad
    \omega = -a_c\,y + b_c\,(1 - y)

so ∂L/∂ỹ = ω / |M| exactly, M being the kept maps. Because ``Σ_i ω ỹ = b_c P − (a_c + b_c) I`` in
terms of the map sums, it costs one pass over the voxels, like the Dice loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import check_annotated, check_probs, check_target, check_voxel_mask, values_checkable
from .subsets import drop_background, kept_maps
from .sums import MapSums, map_sums, no_autocast

__all__ = ["mime_loss", "mime_constants", "mime_from_sums"]


def mime_constants(mean_label_volume: Tensor, map_voxels: float) -> tuple[Tensor, Tensor]:
    """Constants of the Mime loss from a class distribution.

    ``a_c = 1 / E|y_c|`` and ``b_c = 1 / E(|Ω| − |y_c|)``, with E the expectation over training maps
    (patches as the network sees them) and |Ω| = ``map_voxels``: the inverse expected volumes of the
    class and of the rest of the map, so that over an average map the pull on labelled voxels
    (Σ a_c y = 1) and the push on the others (Σ b_c (1 − y) = 1) weigh the same. This is Kervadec &
    de Bruijne's choice "from the class distribution over the whole dataset"; their formula as printed,
    ``a = 1 / (|D| Σ_n |Ω_y_n|)``, is this ``a`` divided by |D|² (the same for ``b``), a common factor
    that only rescales the loss. The constants are not the Dice gradient's two values: for a
    prediction equal to the label those are −1/(2|y_c|) and +1/(2|y_c|), both set by the class's volume
    alone (Eq. 4); ``b_c`` instead follows the background's volume.

    Args:
        mean_label_volume: ``(C,)`` expected labelled voxel count per class in one map.
        map_voxels: number of voxels in one map.

    Returns:
        ``(a, b)``, two ``(C,)`` float tensors. A class that is never labelled gets ``a = 0``.
    """
    volume = torch.as_tensor(mean_label_volume, dtype=torch.float64)
    if volume.ndim != 1 or bool((volume < 0).any()) or bool((volume > map_voxels).any()):
        raise ValueError(
            "mean_label_volume must be a (C,) tensor of voxel counts in [0, map_voxels]; "
            f"got {volume.tolist()} for map_voxels={map_voxels}"
        )
    a = torch.where(volume > 0, 1.0 / volume.clamp_min(1e-12), 0.0)
    rest = map_voxels - volume
    b = torch.where(rest > 0, 1.0 / rest.clamp_min(1e-12), 0.0)
    return a.float(), b.float()


def mime_from_sums(sums: MapSums, a: Tensor | float, b: Tensor | float, annotated: Tensor | None) -> Tensor:
    keep = kept_maps(sums, annotated)
    a = torch.as_tensor(a, dtype=sums.pred.dtype, device=sums.pred.device)
    b = torch.as_tensor(b, dtype=sums.pred.dtype, device=sums.pred.device)
    per_map = b * sums.pred - (a + b) * sums.intersection
    return torch.where(keep, per_map, 0.0).sum() / keep.sum().clamp_min(1)


def mime_loss(
    probs: Tensor,
    target: Tensor,
    a: Tensor | float,
    b: Tensor | float,
    *,
    voxel_mask: Tensor | None = None,
    annotated: Tensor | None = None,
    include_background: bool = True,
) -> Tensor:
    """Mime loss with caller-given constants ``a`` (labelled voxels) and ``b`` (the others).

    Args:
        probs: ``(B, C, *spatial)`` probabilities.
        target: integer label map ``(B, 1, *spatial)`` or dense ``(B, C, *spatial)`` target.
        a: scalar or ``(C,)`` weight pulling labelled voxels up; ≥ 0.
        b: scalar or ``(C,)`` weight pushing unlabelled voxels down; ≥ 0.
        voxel_mask: ``(B, 1, *spatial)``; zero removes the voxel.
        annotated: ``(B, C)`` bool; unannotated maps are removed.
        include_background: False drops channel 0.

    Returns:
        Scalar loss: the mean over kept maps of Σ_i ω ỹ (it is negative for good predictions; only
        its gradient matters). No kept map gives 0.
    """
    check_probs(probs)
    check_target(probs, target)
    batch, classes = probs.shape[:2]
    annotated = check_annotated(annotated, batch, classes)
    a, b = _check_constant("a", a, classes), _check_constant("b", b, classes)
    with no_autocast(probs.device):
        sums = map_sums(probs, target, voxel_mask=check_voxel_mask(voxel_mask, probs))
        if not include_background:
            sums, annotated, a, b = drop_background(sums, annotated, a, b)
        return mime_from_sums(sums, a, b, annotated)


def _check_constant(name: str, value: Tensor | float, classes: int) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.ndim == 0:
        t = t.expand(classes)
    bad_values = values_checkable() and (not bool(torch.isfinite(t).all()) or bool((t < 0).any()))
    if t.shape != (classes,) or bad_values:
        raise ValueError(f"{name} must be a finite number >= 0 or a (C,) = ({classes},) tensor of them; got {value!r}")
    return t
