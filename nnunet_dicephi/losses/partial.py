"""Losses for partially labelled data: marginal Dice and cross-entropy, exclusion loss.

``annotated`` is a ``(B, C)`` bool tensor: True where class c is annotated in the case of batch
element b. Channel 0 is background. In a case where class c is not annotated, a voxel labelled 0
means "background or c"; the marginal losses therefore merge the probabilities of unannotated classes
into background before comparing (Fidon et al., 2021; Shi et al., 2021), and the exclusion loss uses
the voxels labelled with annotated classes, which are certainly not c (Shi et al., 2021).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._validation import (
    Epsilon,
    check_annotated,
    check_class_weights,
    check_eps,
    check_label_values,
    check_probs,
    check_target,
    check_voxel_mask,
)
from .overlap import soft_dice_loss
from .sums import accumulation_dtype, no_autocast

__all__ = [
    "marginalize_probs",
    "marginal_dice_loss",
    "marginal_cross_entropy",
    "inverse_frequency_weights",
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


def marginal_dice_loss(probs: Tensor, target: Tensor, annotated: Tensor, **options: Any) -> Tensor:
    """Marginal Dice loss: Dice on the marginalised probabilities.

    Background's probability becomes ỹ_0 + Σ_{c unannotated} ỹ_c, the unannotated maps leave every
    subset, and :func:`soft_dice_loss` runs on the rest. Without background the merge has no effect
    and the loss equals the Dice loss with the unannotated maps removed.

    Args:
        probs: ``(B, C, *spatial)`` probabilities, channel 0 background.
        target: integer label map ``(B, 1, *spatial)`` or dense target; unannotated classes must not
            be labelled.
        annotated: ``(B, C)`` bool; column 0 is ignored (background is always the merged class).
        **options: the arguments of :func:`soft_dice_loss` (Φ, ε, ``squared``, ``voxel_mask``,
            ``include_background``, ...); ``include_background=False`` drops the merged background.
    """
    check_probs(probs)
    checked = check_annotated(annotated, probs.shape[0], probs.shape[1])
    if checked is None:
        raise ValueError("annotated must be a (B, C) bool tensor for marginal_dice_loss; got None")
    if "annotated" in options:
        raise TypeError("marginal_dice_loss takes annotated once, as its third argument")
    annotated = checked
    kept = annotated.clone()
    kept[:, 0] = True
    return soft_dice_loss(marginalize_probs(probs, annotated.to(probs.device)), target, annotated=kept, **options)


def marginal_cross_entropy(
    logits: Tensor,
    target: Tensor,
    annotated: Tensor | None = None,
    *,
    class_weights: Tensor | None = None,
    voxel_mask: Tensor | None = None,
    validate: bool = True,
    probs: Tensor | None = None,
) -> Tensor:
    r"""Cross-entropy that does not punish unannotated classes (marginal CE), optionally class-weighted.

    For a voxel labelled background in batch element b the probability is that of the merged class,
    :math:`\log \sum_{c \in M_b} \tilde y_c = \mathrm{logsumexp}_{c\in M_b} z_c - \mathrm{logsumexp}_c z_c`
    with M_b = {0} ∪ unannotated classes, computed from the logits z relative to the largest merged
    logit, so it is exact and finite for any logits. Other voxels get the usual −log ỹ_label. With
    everything annotated this is the plain cross-entropy. One pass without a branch on data (see
    ``_MarginalNLL``): it compiles as one graph and synchronises nothing.

    With ``class_weights`` w, each voxel i of batch element b counts with the weight of its label
    value, :math:`w_i = w_{b, y_i}`, and the loss is the weighted mean

    .. math::

        L = \frac{\sum_i m_i\, w_i\, \ell_i}{\sum_i m_i\, w_i},\qquad
        \ell_i = -\log \sum_{c \in S_i} \tilde y_c,

    with S_i = {y_i} for a labelled voxel and S_i = M_b for one labelled 0, and m the voxel mask.
    Label 0 stands for the merged class M_b, so it carries w_0, the weight of label value 0: the
    frequencies behind :func:`inverse_frequency_weights` are counted on the same label maps, where
    the voxels of an unannotated class are 0. With everything annotated this is torch's
    ``cross_entropy(weight=w)`` and nnU-Net's ``RobustCrossEntropyLoss(weight=w)``; ``w = 1`` is the
    plain CE. Where no voxel has weight (all masked, or all weights 0) the loss is 0 with zero
    gradient (torch: NaN).

    Args:
        logits: ``(B, C, *spatial)`` network outputs before softmax.
        target: integer label map ``(B, 1, *spatial)``.
        annotated: ``(B, C)`` bool or None (all annotated); column 0 is ignored.
        class_weights: ``(C,)`` or ``(B, C)`` weights ≥ 0 of the label values, or None (all 1).
        voxel_mask: ``(B, 1, *spatial)``; zero removes the voxel (nnU-Net's ignore label).
        validate: check arguments (modules check once and pass False).
        probs: ``softmax(logits, 1)`` when the caller has it already (Dice + CE); read, never
            differentiated: the gradient goes to the logits.

    Returns:
        (Weighted) mean over the voxels that count; 0 (with zero gradient) if none does.

    Example:
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> labels = torch.randint(0, 2, (2, 1, 8, 8))  # class 2 not annotated in image 0
        >>> annotated = torch.tensor([[True, True, False], [True, True, True]])
        >>> w = inverse_frequency_weights(torch.tensor([900.0, 90.0, 10.0]))
        >>> marginal_cross_entropy(logits, labels, annotated, class_weights=w).backward()
    """
    batch, classes = logits.shape[:2]
    if validate:
        check_probs(logits, "logits")
        if check_target(logits, target) is False:
            raise ValueError("marginal_cross_entropy needs an integer label map target of shape (B, 1, *spatial)")
        check_label_values(target, classes)
        annotated = check_annotated(annotated, batch, classes)
        class_weights = check_class_weights(class_weights, batch, classes)
        voxel_mask = check_voxel_mask(voxel_mask, logits)
    with no_autocast(logits.device):
        lab = target.reshape(batch, -1).long()
        plain_mean = voxel_mask is None and class_weights is None
        if annotated is None:
            # everything annotated: the plain, fused cross-entropy kernel
            z = logits.reshape(batch, classes, -1).to(accumulation_dtype(logits.dtype))
            nll = F.cross_entropy(z, lab, reduction="mean" if plain_mean else "none")
            if plain_mean:
                return nll
        else:
            merged = _merged_into_background(annotated.to(logits.device))
            flat = logits.reshape(batch, classes, -1)
            if probs is None:
                probs = torch.softmax(flat.to(accumulation_dtype(flat.dtype)), dim=1)
            nll = _MarginalNLL.apply(flat, probs.detach().reshape(batch, classes, -1), lab, merged)
            if plain_mean:
                return nll.mean()
        return _voxel_mean(nll, lab, class_weights, voxel_mask)


def _voxel_mean(nll: Tensor, labels: Tensor, class_weights: Tensor | None, voxel_mask: Tensor | None) -> Tensor:
    """``Σ m w ℓ / Σ m w`` over ``(B, N)`` voxels: w the weight of each voxel's label (1 without weights)."""
    batch = nll.shape[0]
    m = None if voxel_mask is None else voxel_mask.reshape(batch, -1).bool()
    if class_weights is None:
        assert m is not None  # the plain mean is taken by the caller
        return torch.where(m, nll, 0.0).sum() / m.sum().clamp_min(1)
    w = class_weights.to(device=nll.device, dtype=nll.dtype)
    weight = w.expand(batch, w.shape[-1]).gather(1, labels)  # (B, N): w[b, y_i]
    if m is not None:
        weight = torch.where(m, weight, 0.0)
    total = weight.sum()
    # all weights 0: the numerator is exactly 0 too, so the loss and its gradient are 0
    return (weight * nll).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


def inverse_frequency_weights(class_volumes: Tensor) -> Tensor:
    r"""Class weights of the weighted cross-entropy: inverse class frequencies, balanced.

    .. math::

        w_c = \frac{1}{K\, f_c},\qquad f_c = \frac{v_c}{\sum_k v_k},\qquad K = |\{c : v_c > 0\}|

    with v_c the (expected) voxel count of class c, background included: every class present gets
    the same total weight over the data, and the mean weight of a voxel is 1 (Σ_c f_c w_c = 1), so
    the weighted loss keeps the scale of the plain one. A class with no voxel gets w_c = 0, as the
    Mime constants of a class never labelled (no voxel of it is ever weighted). Only ratios of
    ``class_volumes`` matter: counts, expected counts per patch or frequencies give the same weights.
    These are scikit-learn's ``class_weight="balanced"``, the usual weighting of the "(weighted)
    cross-entropy" that Eelbode, Bertels et al. (TMI 2020) compare the Dice-type losses with.

    Args:
        class_volumes: ``(C,)`` voxel counts (or frequencies) ≥ 0 of the classes, not all 0.

    Returns:
        ``(C,)`` float32 weights.
    """
    volume = torch.as_tensor(class_volumes, dtype=torch.float64)
    if volume.ndim != 1 or not bool(torch.isfinite(volume).all()) or bool((volume < 0).any()) or volume.sum() <= 0:
        raise ValueError(
            f"class_volumes must be a (C,) tensor of finite voxel counts >= 0, not all 0; got {volume.tolist()}"
        )
    present = volume > 0
    frequency = volume / volume.sum()
    weights = torch.where(present, 1.0 / (present.sum() * frequency).clamp_min(1e-300), 0.0)
    return weights.float()


class _MarginalNLL(torch.autograd.Function):
    r"""Per-voxel marginal negative log-likelihood ``(B, N)`` from logits and softmax ``(B, C, N)``.

    A voxel's target set S is its label, or M_b = ``merged[b]`` where it is labelled background:
    ``nll = −log q`` with ``q = Σ_{c∈S} ỹ_c``, and ``∂nll/∂z_c = ỹ_c − [c∈S] ỹ_c / q``; no branch on
    data. The softmax is the one the Dice term computed already (or computed once here); the
    backward pass keeps it (shared, no copy), the logits (alive anyway), the labels and two
    ``(B, N)`` tensors. Everything is exact and finite for any logits:

    * ``log ỹ_c = z_c − lse`` with ``lse = max_k z_k − log max_k ỹ_k``: the largest probability is at
      least 1/C, so no log-softmax pass is needed and nothing underflows (labelled voxels: as
      nnU-Net's cross-entropy);
    * background voxels: ``log q = m_b − lse + log Σ_{c∈M_b} exp(z_c − m_b)`` with m_b the largest
      merged logit (the sum is a batched product with ``merged[b]``, between 1 and |M_b|), so a
      confident false positive of an annotated class still pulls the merged classes up.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, probs: Tensor, labels: Tensor, merged: Tensor) -> Tensor:
        acc = accumulation_dtype(logits.dtype)
        z, p = logits.to(acc), probs.to(acc)
        lse = z.amax(1) - torch.log(p.amax(1))  # (B, N) log Σ exp z
        weights = merged.to(acc)
        log_weights = torch.log(weights)
        largest = z[:, 0]  # m_b per voxel, channel by channel: no (B, C, N) temporary
        for c in range(1, z.shape[1]):
            largest = torch.maximum(largest, z[:, c] + log_weights[:, c : c + 1])
        # merged channels have z_c ≤ m_b; the others are clamped (their weight is 0) so nothing overflows
        # clamped below at log(smallest normal): no denormals (slow on x86), no change to the sum ≥ 1
        floor = math.log(torch.finfo(acc).tiny)
        relative = (z - largest.unsqueeze(1)).clamp_(floor, 0.0).exp_()  # one (B, C, N) allocation
        log_sum = torch.log(torch.bmm(weights.unsqueeze(1), relative).squeeze(1))  # in [0, log |M_b|]
        background = labels == 0
        log_merged = largest + log_sum  # log Σ_{c∈M_b} exp z_c
        log_label = z.gather(1, labels.unsqueeze(1)).squeeze(1)
        ctx.save_for_backward(logits, p, labels, weights, log_merged)
        ctx.logits_dtype = logits.dtype
        return lse - torch.where(background, log_merged, log_label)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        logits, probs, labels, weights, log_merged = ctx.saved_tensors
        background = labels == 0
        floor = math.log(torch.finfo(probs.dtype).tiny)
        # share ỹ_c / q = exp(z_c − log Σ_M exp z) (≤ 1 on merged channels), kept on background voxels
        # and merged channels only; one (B, C, N) allocation, then in place (fresh tensors cost page
        # faults on a CPU, denormals and infinities slow exp down)
        out = (logits.to(probs.dtype) - log_merged.unsqueeze(1)).clamp_(floor, 0.0).exp_()
        out.mul_(weights.neg().unsqueeze(-1)).mul_(background.unsqueeze(1)).add_(probs)  # ỹ − share
        # labelled voxels: minus 1 on the label's channel
        out.scatter_add_(1, labels.unsqueeze(1), (~background).to(out.dtype).neg_().unsqueeze(1))
        return out.mul_(grad.unsqueeze(1)).to(ctx.logits_dtype), None, None, None


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
        checked = check_annotated(annotated, batch, classes)
        if checked is None:
            raise ValueError("annotated must be a (B, C) bool tensor for exclusion_loss; got None")
        annotated = checked
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
