"""Losses for partially labelled data: marginal Dice and cross-entropy, exclusion loss.

``annotated`` is a ``(B, C)`` bool tensor: True where class c is annotated in the case of batch
element b. Channel 0 is background. In a case where class c is not annotated, a voxel labelled 0
means "background or c"; the marginal losses therefore merge the probabilities of unannotated classes
into background before comparing (Fidon et al., 2021; Shi et al., 2021), and the exclusion loss uses
the voxels labelled with annotated classes, which are certainly not c (Shi et al., 2021).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._validation import (
    Epsilon,
    check_annotated,
    check_eps,
    check_label_values,
    check_probs,
    check_target,
    check_voxel_mask,
)
from .overlap import accumulation_dtype, no_autocast, soft_dice_loss

__all__ = [
    "marginalize_probs",
    "marginal_dice_loss",
    "marginal_cross_entropy",
    "masked_binary_cross_entropy",
    "exclusion_loss",
]


def _merged_into_background(annotated: Tensor) -> Tensor:
    """(B, C) bool: the classes whose probability is summed into background (0 itself included)."""
    merged = ~annotated
    merged[:, 0] = True
    return merged


def marginalize_probs(probs: Tensor, annotated: Tensor) -> Tensor:
    """Add the probabilities of unannotated foreground classes to background (channel 0).

    The unannotated channels are kept unchanged; the losses below remove them afterwards.
    """
    unannotated = (~annotated).to(probs.dtype)
    unannotated[:, 0] = 0
    batch, classes = probs.shape[:2]
    flat = probs.reshape(batch, classes, -1)
    extra = torch.bmm(unannotated.unsqueeze(1), flat).reshape(batch, 1, *probs.shape[2:])
    return torch.cat((probs[:, :1] + extra, probs[:, 1:]), dim=1)


def marginal_dice_loss(
    probs: Tensor,
    target: Tensor,
    annotated: Tensor,
    *,
    phi: str = "I",
    eps_nr: Epsilon = 1e-7,
    eps_dr: Epsilon = 1e-7,
    squared: bool = False,
    voxel_mask: Tensor | None = None,
    include_background: bool = True,
) -> Tensor:
    """Marginal Dice loss: Dice on the marginalised probabilities.

    Background's probability becomes ỹ_0 + Σ_{c unannotated} ỹ_c, the unannotated maps leave every
    subset, and :func:`soft_dice_loss` runs on the rest. Without background the merge has no effect
    and the loss equals the Dice loss with the unannotated maps removed.

    Args:
        probs: ``(B, C, *spatial)`` probabilities, channel 0 background.
        target: integer label map ``(B, 1, *spatial)`` or dense target; unannotated classes must not
            be labelled.
        annotated: ``(B, C)`` bool; column 0 is ignored (background is always the merged class).
        phi: reduction set, as in :func:`soft_dice_loss`.
        eps_nr: numerator ε, as in :func:`soft_dice_loss`.
        eps_dr: denominator ε, as in :func:`soft_dice_loss`.
        squared: V-Net relaxation.
        voxel_mask: ``(B, 1, *spatial)``; zero removes the voxel.
        include_background: False drops the merged background from the loss.
    """
    check_probs(probs)
    annotated = check_annotated(annotated, probs.shape[0], probs.shape[1])
    if annotated is None:
        raise ValueError("annotated must be a (B, C) bool tensor for marginal_dice_loss; got None")
    kept = annotated.clone()
    kept[:, 0] = True
    return soft_dice_loss(
        marginalize_probs(probs, annotated.to(probs.device)),
        target,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        squared=squared,
        voxel_mask=voxel_mask,
        annotated=kept,
        include_background=include_background,
    )


def marginal_cross_entropy(
    logits: Tensor,
    target: Tensor,
    annotated: Tensor | None = None,
    *,
    voxel_mask: Tensor | None = None,
    validate: bool = True,
) -> Tensor:
    r"""Cross-entropy that does not punish unannotated classes (marginal CE).

    For a voxel labelled background in batch element b the probability is that of the merged class,
    :math:`\log \sum_{c \in M_b} \tilde y_c = \mathrm{logsumexp}_{c\in M_b} z_c - \mathrm{logsumexp}_c z_c`
    with M_b = {0} ∪ unannotated classes, computed from the logits z (never a sum of logits, never
    a log of a sum of probabilities). Other voxels get the usual −log ỹ_label. With everything
    annotated this is the plain cross-entropy.

    Args:
        logits: ``(B, C, *spatial)`` network outputs before softmax.
        target: integer label map ``(B, 1, *spatial)``.
        annotated: ``(B, C)`` bool or None (all annotated); column 0 is ignored.
        voxel_mask: ``(B, 1, *spatial)``; zero removes the voxel (nnU-Net's ignore label).
        validate: check arguments (modules check once and pass False).

    Returns:
        Mean over the voxels that count; 0 (with zero gradient) if none does.
    """
    batch, classes = logits.shape[:2]
    if validate:
        check_probs(logits, "logits")
        if check_target(logits, target) is False:
            raise ValueError("marginal_cross_entropy needs an integer label map target of shape (B, 1, *spatial)")
        check_label_values(target, classes)
        annotated = check_annotated(annotated, batch, classes)
        voxel_mask = check_voxel_mask(voxel_mask, logits)
    with no_autocast(logits.device):
        lab = target.reshape(batch, -1).long()
        if annotated is None:
            # everything annotated: the plain, fused cross-entropy kernel
            z = logits.reshape(batch, classes, -1).to(accumulation_dtype(logits.dtype))
            nll = F.cross_entropy(z, lab, reduction="none" if voxel_mask is not None else "mean")
            if voxel_mask is None:
                return nll
        else:
            merged = _merged_into_background(annotated.to(logits.device))
            nll = _MarginalNLL.apply(logits.reshape(batch, classes, -1), lab, merged)
            if voxel_mask is None:
                return nll.mean()
        m = voxel_mask.reshape(batch, -1).bool()
        return torch.where(m, nll, 0.0).sum() / m.sum().clamp_min(1)


class _MarginalNLL(torch.autograd.Function):
    r"""Per-voxel marginal negative log-likelihood ``(B, N)`` from logits ``(B, C, N)``, no branch.

    A voxel's target set S is its label, or M_b = ``merged[b]`` where it is labelled background:
    ``nll = logsumexp_c z_c − logsumexp_{c∈S} z_c``, and ``∂nll/∂z_c = ỹ_c − [c∈S] ỹ_c / Σ_{k∈S} ỹ_k``.
    Only the logits (already held by the network's graph), the labels and the two ``(B, N)`` log-sums
    are kept for the backward pass, which recomputes the softmax: no ``(B, C, N)`` tensor is saved, so
    the partial-label CE costs no more memory than the plain one (autograd through ``log_softmax``
    and ``logsumexp`` would keep three). Half-precision logits are computed in float32.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, merged: Tensor) -> Tensor:  # noqa: D102
        z = logits.to(accumulation_dtype(logits.dtype))
        log_all = torch.logsumexp(z, dim=1)
        log_merged = torch.logsumexp(torch.where(merged.unsqueeze(-1), z, float("-inf")), dim=1)
        log_label = z.gather(1, labels.unsqueeze(1)).squeeze(1)
        log_target = torch.where(labels == 0, log_merged, log_label)
        ctx.save_for_backward(logits, labels, merged, log_all, log_target)
        return log_all - log_target

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # noqa: D102
        logits, labels, merged, log_all, log_target = ctx.saved_tensors
        z = logits.to(log_all.dtype)
        background = (labels == 0).unsqueeze(1)
        out = (z - log_all.unsqueeze(1)).exp_()  # ỹ
        # background voxels: ỹ_c / Σ_{k∈M_b} ỹ_k on the merged channels; labelled voxels: 1 on the label
        out.sub_((z - log_target.unsqueeze(1)).exp_().mul_(merged.unsqueeze(-1) & background))
        out.scatter_add_(1, labels.unsqueeze(1), (~background).to(out.dtype).neg_())
        return out.mul_(grad.unsqueeze(1)).to(logits.dtype), None, None


def masked_binary_cross_entropy(
    logits: Tensor,
    target: Tensor,
    annotated: Tensor | None = None,
    *,
    voxel_mask: Tensor | None = None,
) -> Tensor:
    """Binary cross-entropy for sigmoid (region) outputs, leaving out unannotated maps and voxels.

    Args:
        logits: ``(B, R, *spatial)``.
        target: ``(B, R, *spatial)`` binary or soft targets.
        annotated: ``(B, R)`` bool or None; unannotated maps contribute nothing.
        voxel_mask: ``(B, 1, *spatial)``.

    Returns:
        Mean over the (map, voxel) pairs that count; 0 if none does.
    """
    batch, regions = logits.shape[:2]
    with no_autocast(logits.device):
        acc = accumulation_dtype(logits.dtype)
        per_voxel = F.binary_cross_entropy_with_logits(logits.to(acc), target.to(acc), reduction="none")
        weight = torch.ones((batch, regions, 1), dtype=acc, device=logits.device)
        if annotated is not None:
            weight = weight * annotated.to(device=logits.device, dtype=acc).unsqueeze(-1)
        if voxel_mask is not None:
            weight = weight * voxel_mask.reshape(batch, 1, -1).bool().to(acc)
        per_voxel = per_voxel.reshape(batch, regions, -1)
        weight = weight.expand_as(per_voxel)
        return (per_voxel * weight).sum() / weight.sum().clamp_min(1)


def exclusion_loss(
    probs: Tensor,
    target: Tensor,
    annotated: Tensor,
    *,
    eps: Epsilon = 1e-7,
    voxel_mask: Tensor | None = None,
    validate: bool = True,
) -> Tensor:
    """Exclusion loss (Shi et al., 2021): no unannotated class where an annotated class is labelled.

    For batch element b and unannotated foreground class j, the exclusion region E_b is the set of
    voxels labelled with an annotated foreground class; the loss is the mean over such (b, j) with a
    non-empty E_b of the soft Dice overlap ``(2 Σ E ỹ_j + ε) / (Σ E + Σ ỹ_j + ε)``, which training
    drives to 0.

    Args:
        probs: ``(B, C, *spatial)`` probabilities, channel 0 background.
        target: integer label map ``(B, 1, *spatial)`` or dense one-hot target.
        annotated: ``(B, C)`` bool.
        eps: scalar ε ≥ 0 added to numerator and denominator.
        voxel_mask: ``(B, 1, *spatial)``; zero removes the voxel.
        validate: check arguments (modules check once and pass False).

    Returns:
        Scalar loss; 0 when no (b, j) pair qualifies.
    """
    batch, classes = probs.shape[:2]
    labels = not (target.is_floating_point() or target.dtype == torch.bool)
    if validate:
        check_probs(probs)
        labels = check_target(probs, target)
        annotated = check_annotated(annotated, batch, classes)
        if annotated is None:
            raise ValueError("annotated must be a (B, C) bool tensor for exclusion_loss; got None")
        eps = check_eps("eps", eps, classes)
        if isinstance(eps, Tensor):
            raise ValueError("exclusion_loss takes a scalar eps")
        voxel_mask = check_voxel_mask(voxel_mask, probs)
        if labels:
            check_label_values(target, classes)
    with no_autocast(probs.device):
        acc = accumulation_dtype(probs.dtype)
        annotated = annotated.to(probs.device)
        fg_annotated = annotated.clone()
        fg_annotated[:, 0] = False
        p = probs.reshape(batch, classes, -1)
        if labels:
            lab = target.reshape(batch, -1).long()
            region = fg_annotated.gather(1, lab).to(acc)
        else:
            y = target.reshape(batch, classes, -1).to(acc)
            region = torch.bmm(fg_annotated.to(acc).unsqueeze(1), y).squeeze(1)
        if voxel_mask is not None:
            m = voxel_mask.reshape(batch, -1).bool().to(acc)
            region = region * m
            pred = torch.bmm(p.to(acc), m.unsqueeze(-1)).squeeze(-1)
        else:
            pred = p.sum(-1, dtype=acc)
        overlap = torch.bmm(p.to(acc), region.unsqueeze(-1)).squeeze(-1)  # (B, C)
        region_size = region.sum(-1, keepdim=True)
        pairs = ~annotated & (region_size > 0)
        pairs[:, 0] = False
        # Pairs that do not count may have a zero denominator; keep it away from the division so no
        # NaN reaches the backward pass through torch.where.
        denominator = torch.where(pairs, region_size + pred + eps, 1.0)
        dice = (2.0 * overlap + eps) / denominator
        return torch.where(pairs, dice, 0.0).sum() / pairs.sum().clamp_min(1)
