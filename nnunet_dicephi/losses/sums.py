r"""Per-map sums: the only pass over the voxels of every overlap loss.

:func:`map_sums` reduces each ``(b, c)`` map of probabilities and target (dense, or an integer label
map) to three numbers:

.. math::

    I_{bc} = \sum_i y_{bci}\,\tilde y_{bci}, \qquad
    P_{bc} = \sum_i \tilde y_{bci}, \qquad
    G_{bc} = \sum_i y_{bci}

(with :math:`\tilde y^2, y^2` for the squared relaxation). Every Φ of the paper is a union of whole
maps, so these ``(B, C)`` sums suffice for every Φ, for Jaccard, Tversky and Mime; processes of a
distributed run exchange them (any B per process) and divide afterwards.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._validation import check_label_values, check_probs, check_target, check_voxel_mask

__all__ = ["MapSums", "map_sums", "accumulation_dtype", "no_autocast"]


class MapSums(NamedTuple):
    """Per-map sums over the voxels kept by the voxel mask; every field but ``voxels`` is ``(B, C)``."""

    intersection: Tensor
    """Σ_i y·ỹ."""
    pred: Tensor
    """Σ_i ỹ (Σ_i ỹ² when squared)."""
    target: Tensor
    """Σ_i y (Σ_i y² when squared)."""
    voxels: Tensor
    """``(B,)`` number of voxels that count in each batch element."""


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types (fp16 overflows at 65504 voxels), float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def no_autocast(device: torch.device) -> torch.autocast:
    """Reductions and divisions run outside autocast: their inputs are sums of thousands of voxels."""
    return torch.autocast(device_type=device.type, enabled=False)


def map_sums(
    probs: Tensor,
    target: Tensor,
    *,
    squared: bool = False,
    voxel_mask: Tensor | None = None,
    validate: bool = True,
) -> MapSums:
    """Reduce probabilities and target to the per-map sums :class:`MapSums`.

    Args:
        probs: ``(B, C, *spatial)`` probabilities.
        target: dense ``(B, C, *spatial)`` target, or integer label map ``(B, 1, *spatial)``.
        squared: use ỹ² and y² in ``pred`` and ``target`` (the V-Net relaxation).
        voxel_mask: ``(B, 1, *spatial)``, nonzero for voxels that count (nnU-Net's ignore label).
        validate: check shapes and label values; modules switch this off after their own checks.

    Returns:
        The sums, accumulated in float32 (float64 for float64 input) whatever the input precision.
    """
    if validate:
        check_probs(probs)
        labels = check_target(probs, target)
        voxel_mask = check_voxel_mask(voxel_mask, probs)
        if labels:
            check_label_values(target, probs.shape[1])
    else:
        labels = not (target.is_floating_point() or target.dtype == torch.bool)
    with no_autocast(probs.device):
        if labels:
            return _sums_from_labels(probs, target, voxel_mask, squared)
        return _sums_from_dense(probs, target, voxel_mask, squared)


class _LabelMapSums(torch.autograd.Function):
    """Σ y·ỹ and Σ ỹ per map from a label map, with the two-valued gradient written directly.

    With a label map, ∂I_bc/∂ỹ_bci = [label_bi = c] and ∂P_bc/∂ỹ_bci = 1, so the gradient of any
    function of (I, P) is ``g_P[b, c]`` everywhere plus ``g_I[b, c]`` on the voxels labelled c: one
    broadcast write and one scatter over the voxels. Autograd through gather/scatter would allocate
    and add two (B, C, N) tensors instead.
    """

    @staticmethod
    def forward(ctx, probs: Tensor, labels: Tensor, mask: Tensor | None):
        batch, classes, _ = probs.shape
        acc = accumulation_dtype(probs.dtype)
        p_true = probs.gather(1, labels.unsqueeze(1)).squeeze(1).to(acc)
        if mask is None:
            pred = probs.sum(-1, dtype=acc)
        else:
            p_true = p_true * mask
            pred = torch.bmm(probs.to(acc), mask.unsqueeze(-1)).squeeze(-1)
        inter = torch.zeros((batch, classes), dtype=acc, device=probs.device).scatter_add_(1, labels, p_true)
        ctx.save_for_backward(labels, mask)
        ctx.probs_dtype = probs.dtype
        ctx.classes = classes
        return inter, pred

    @staticmethod
    def backward(ctx, grad_inter: Tensor | None, grad_pred: Tensor | None):
        labels, mask = ctx.saved_tensors
        batch, voxels = labels.shape
        given = grad_inter if grad_inter is not None else grad_pred
        assert given is not None  # autograd passes at least one gradient
        dtype = given.dtype
        if grad_pred is None:
            grad = torch.zeros((batch, ctx.classes, voxels), dtype=dtype, device=labels.device)
        elif mask is None:
            grad = grad_pred.unsqueeze(-1).expand(batch, ctx.classes, voxels).clone()
        else:
            grad = grad_pred.unsqueeze(-1) * mask.unsqueeze(1)
        if grad_inter is not None:
            on_label = grad_inter.gather(1, labels)
            if mask is not None:
                on_label = on_label * mask
            grad.scatter_add_(1, labels.unsqueeze(1), on_label.unsqueeze(1))
        return grad.to(ctx.probs_dtype), None, None


def _sums_from_labels(probs: Tensor, labels: Tensor, voxel_mask: Tensor | None, squared: bool) -> MapSums:
    batch, classes = probs.shape[:2]
    acc = accumulation_dtype(probs.dtype)
    p = probs.reshape(batch, classes, -1)
    lab = labels.reshape(batch, -1).long()
    m = None if voxel_mask is None else voxel_mask.reshape(batch, -1).bool().to(acc)
    if m is None:
        voxels = torch.full((batch,), p.shape[-1], dtype=acc, device=p.device)
        ones = torch.ones((1, 1), dtype=acc, device=p.device).expand_as(lab)
        gt = torch.zeros((batch, classes), dtype=acc, device=p.device).scatter_add_(1, lab, ones)
    else:
        voxels = m.sum(-1)
        gt = torch.zeros((batch, classes), dtype=acc, device=p.device).scatter_add_(1, lab, m)
    if squared:
        # y² = y for a label map; only the prediction term changes, and plain autograd is fine here
        q = p * p
        pred = q.sum(-1, dtype=acc) if m is None else torch.bmm(q.to(acc), m.unsqueeze(-1)).squeeze(-1)
        p_true = p.gather(1, lab.unsqueeze(1)).squeeze(1).to(acc)
        p_true = p_true if m is None else p_true * m
        inter = torch.zeros((batch, classes), dtype=acc, device=p.device).scatter_add_(1, lab, p_true)
        return MapSums(inter, pred, gt, voxels)
    inter, pred = _LabelMapSums.apply(p, lab, m)
    return MapSums(inter, pred, gt, voxels)


def _sums_from_dense(probs: Tensor, target: Tensor, voxel_mask: Tensor | None, squared: bool) -> MapSums:
    batch, classes = probs.shape[:2]
    acc = accumulation_dtype(probs.dtype)
    p = probs.reshape(batch, classes, -1)
    y = target.reshape(batch, classes, -1).to(acc)
    if voxel_mask is None:
        voxels = torch.full((batch,), p.shape[-1], dtype=acc, device=p.device)
    else:
        m = voxel_mask.reshape(batch, 1, -1).bool().to(acc)
        voxels = m.sum((1, 2))
        y = y * m
        p = p * m
    inter = (p * y).sum(-1, dtype=acc)
    if squared:
        return MapSums(inter, (p * p).sum(-1, dtype=acc), (y * y).sum(-1), voxels)
    return MapSums(inter, p.sum(-1, dtype=acc), y.sum(-1), voxels)
