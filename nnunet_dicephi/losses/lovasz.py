r"""Lovász-Softmax (Berman et al., CVPR 2018): the convex Lovász extension of the Jaccard loss.

For one map with errors e_i = |y_i − ỹ_i| sorted in decreasing order, the loss is
:math:`\sum_k e_{(k)}\, g_k` where g is the discrete derivative of the Jaccard loss along the
sorted ground truth. All maps are sorted at once along one axis: no Python loop over voxels or maps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import (
    check_annotated,
    check_choice,
    check_label_values,
    check_probs,
    check_target,
    check_voxel_mask,
)
from .sums import accumulation_dtype, no_autocast

__all__ = ["lovasz_softmax_loss"]


def lovasz_softmax_loss(
    probs: Tensor,
    target: Tensor,
    *,
    per_image: bool = False,
    classes: str = "present",
    voxel_mask: Tensor | None = None,
    annotated: Tensor | None = None,
    include_background: bool = True,
    validate: bool = True,
) -> Tensor:
    """Lovász-Softmax loss.

    Args:
        probs: ``(B, C, *spatial)`` probabilities.
        target: integer label map ``(B, 1, *spatial)`` or binary dense ``(B, C, *spatial)`` target.
        per_image: one Jaccard surrogate per image (averaged over its classes, then over images);
            False (Berman's default) sorts the voxels of the whole batch together, one surrogate per
            class.
        classes: ``"present"`` counts only maps whose labels are not empty (Berman's default);
            ``"all"`` counts every map, so predictions on empty maps are penalised.
        voxel_mask: ``(B, 1, *spatial)``; zero removes the voxel.
        annotated: ``(B, C)`` bool; an unannotated map is removed (per batch: its voxels leave the
            class's pooled set).
        include_background: False drops channel 0 (Berman's default counts it).
        validate: check arguments (modules check once and pass False).

    Returns:
        Scalar loss. Images (or classes, per batch) with no counted map leave the average; with none
        at all the loss is 0 with a zero gradient.
    """
    if validate:
        check_probs(probs)
        labels = check_target(probs, target)
        voxel_mask = check_voxel_mask(voxel_mask, probs)
        annotated = check_annotated(annotated, probs.shape[0], probs.shape[1])
        check_choice("classes", classes, ("present", "all"))
        if labels:
            check_label_values(target, probs.shape[1])
    batch, num_classes = probs.shape[:2]
    with no_autocast(probs.device):
        acc = accumulation_dtype(probs.dtype)
        p = probs.reshape(batch, num_classes, -1).to(acc)
        if target.is_floating_point() or target.dtype == torch.bool:
            y = target.reshape(batch, num_classes, -1).to(acc)
        else:
            lab = target.reshape(batch, 1, -1).long()
            y = torch.zeros_like(p).scatter_(1, lab, 1.0)

        valid = torch.ones((batch, num_classes, 1), dtype=torch.bool, device=p.device)
        if voxel_mask is not None:
            valid = valid & voxel_mask.reshape(batch, 1, -1).bool()
        if annotated is not None:
            valid = valid & annotated.to(p.device).unsqueeze(-1)
        if not include_background:
            p, y, valid = p[:, 1:], y[:, 1:], valid[:, 1:]
        valid = valid.expand_as(p)
        y = y * valid
        errors = torch.where(valid, (y - p).abs(), 0.0)
        # Removed voxels sort after every real error (key −1) and carry error 0; since the Jaccard
        # derivative at a position depends only on the positions before it, they change nothing.
        keys = torch.where(valid, errors.detach(), -1.0)
        if not per_image:
            errors, y, keys = (t.transpose(0, 1).reshape(1, t.shape[1], -1) for t in (errors, y, keys))
            valid = valid.transpose(0, 1).reshape(1, valid.shape[1], -1)

        order = keys.argsort(dim=-1, descending=True)
        errors_sorted = errors.gather(-1, order)
        with torch.no_grad():
            gt_sorted = y.gather(-1, order)
            jaccard_derivative = _lovasz_gradient(gt_sorted)
        per_map = (errors_sorted * jaccard_derivative).sum(-1)  # (images, classes)

        counted = valid.any(-1)
        if classes == "present":
            counted = counted & (y.sum(-1) > 0)
        counted_f = counted.to(acc)
        per_image_loss = (per_map * counted_f).sum(-1) / counted_f.sum(-1).clamp_min(1)
        images = counted.any(-1)
        return (per_image_loss * images).sum() / images.sum().clamp_min(1)


def _lovasz_gradient(gt_sorted: Tensor) -> Tensor:
    """Discrete derivative of the Jaccard loss along sorted binary labels, for every map at once."""
    total = gt_sorted.sum(-1, keepdim=True)
    intersection = total - gt_sorted.cumsum(-1)
    union = total + (1.0 - gt_sorted).cumsum(-1)
    jaccard = 1.0 - intersection / union
    return torch.cat((jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]), dim=-1)
