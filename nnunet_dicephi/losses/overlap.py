r"""The general Dice loss over reduction sets Φ, and the overlap losses that share its statistics.

Everything here works on probabilities ``(B, C, *spatial)`` and a target that is either dense (one-hot
or soft, same shape) or an integer label map ``(B, 1, *spatial)``. The only pass over the voxels is
:func:`map_sums`, which reduces each ``(b, c)`` map to three numbers:

.. math::

    I_{bc} = \sum_i y_{bci}\,\tilde y_{bci}, \qquad
    P_{bc} = \sum_i \tilde y_{bci}, \qquad
    G_{bc} = \sum_i y_{bci}

(with :math:`\tilde y^2, y^2` for the squared relaxation). Every Φ of the paper is a union of whole
maps, so these ``(B, C)`` sums are sufficient for every Φ, for Jaccard and for Tversky: the
reduction to subsets happens afterwards on tiny tensors. This is also what makes the batch-wise Φ
distributable: processes exchange their ``(B, C)`` sums (any B per process) and divide afterwards.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from ._validation import (
    Epsilon,
    Phi,
    check_annotated,
    check_choice,
    check_class_weights,
    check_eps,
    check_label_values,
    check_phi,
    check_probability,
    check_probs,
    check_target,
    check_voxel_mask,
)

__all__ = [
    "MapSums",
    "map_sums",
    "dice_from_sums",
    "soft_dice_loss",
    "vnet_dice_loss",
    "generalized_dice_loss",
    "generalized_dice_weights",
    "jaccard_loss",
    "tversky_loss",
    "leaf_dice_loss",
    "EPS_PER",
    "WEIGHTINGS",
]

EpsPer = Literal["subset", "map"]
Weighting = Literal["term", "inside"]
MeanOver = Literal["present", "all"]
LeafMean = Literal["all", "labelled"]
LEAF_MEANS: tuple[LeafMean, ...] = ("all", "labelled")
EPS_PER: tuple[EpsPer, ...] = ("subset", "map")
"""Where a per-class ε is added: once per subset of Φ (Eq. 3, the default), or once per kept map."""
WEIGHTINGS: tuple[Weighting, ...] = ("term", "inside")
"""How class weights act: on each subset's term (MONAI's ``weight``; the default), or inside the sums (Sudre)."""


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


# --- Φ: from maps to subsets --------------------------------------------------------------------


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


class _Prepared(NamedTuple):
    sums: MapSums
    phi: Phi
    eps_nr: Epsilon
    eps_dr: Epsilon
    annotated: Tensor | None
    class_weights: Tensor | None


def prepare_overlap(
    probs: Tensor,
    target: Tensor,
    *,
    phi: str,
    eps_nr: Epsilon,
    eps_dr: Epsilon,
    eps_per: EpsPer = "subset",
    squared: bool = False,
    voxel_mask: Tensor | None = None,
    annotated: Tensor | None = None,
    class_weights: Tensor | None = None,
    include_background: bool = True,
) -> _Prepared:
    """Validate the arguments shared by the overlap losses and compute the map sums."""
    phi = check_phi(phi)
    check_choice("eps_per", eps_per, EPS_PER)
    sums = map_sums(probs, target, squared=squared, voxel_mask=voxel_mask)
    batch, classes = probs.shape[:2]
    eps_nr = check_eps("eps_nr", eps_nr, classes)
    eps_dr = check_eps("eps_dr", eps_dr, classes)
    annotated = check_annotated(annotated, batch, classes)
    class_weights = check_class_weights(class_weights, batch, classes)
    if not include_background:
        sums, annotated, eps_nr, eps_dr, class_weights = drop_background(sums, annotated, eps_nr, eps_dr, class_weights)
    return _Prepared(sums, phi, eps_nr, eps_dr, annotated, class_weights)


# --- Dice ---------------------------------------------------------------------------------------


def dice_from_sums(
    sums: MapSums,
    *,
    phi: Phi = "I",
    eps_nr: Epsilon = 1e-7,
    eps_dr: Epsilon = 1e-7,
    class_weights: Tensor | None = None,
    weighting: Weighting = "term",
    eps_per: EpsPer = "subset",
    annotated: Tensor | None = None,
    drop_empty_subsets: bool = False,
    mean_over: MeanOver = "present",
) -> Tensor:
    """The Dice loss of Eq. 3 from precomputed :class:`MapSums` (no validation, no background logic).

    This is the step a distributed caller runs after exchanging the sums of all processes.
    ``class_weights`` are ``(C,)`` or ``(B, C)``; ``weighting`` and ``eps_per`` as in
    :func:`soft_dice_loss`, ``mean_over`` as in :func:`ratio_loss`.
    """
    keep = kept_maps(sums, annotated)
    inter, union = sums.intersection, sums.pred + sums.target
    subset_weights = None
    if class_weights is not None:
        w = class_weights.to(device=inter.device, dtype=inter.dtype).expand_as(inter)
        if weighting == "inside":
            inter, union = inter * w, union * w
        else:
            subset_weights = w
    return ratio_loss(
        2.0 * inter,
        union,
        keep,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        labels_required=sums.target if drop_empty_subsets else None,
        eps_per=eps_per,
        subset_weights=subset_weights,
        mean_over=mean_over,
    )


def soft_dice_loss(
    probs: Tensor,
    target: Tensor,
    *,
    phi: Phi = "I",
    eps_nr: Epsilon = 1e-7,
    eps_dr: Epsilon = 1e-7,
    squared: bool = False,
    class_weights: Tensor | None = None,
    weighting: Weighting = "term",
    eps_per: EpsPer = "subset",
    voxel_mask: Tensor | None = None,
    annotated: Tensor | None = None,
    include_background: bool = True,
) -> Tensor:
    r"""General Dice loss over the reduction sets Φ (Tilborghs, Bertels et al., MICCAI 2022, Eq. 3).

    .. math::

        \mathrm{DL} = \frac{1}{|\Phi|}\sum_{\phi\in\Phi} w_\phi \Bigl(1 -
            \frac{2\sum_{\omega\in\phi} y_\omega\tilde y_\omega + \epsilon_{nr}}
                 {\sum_{\omega\in\phi} (y_\omega + \tilde y_\omega) + \epsilon_{dr}}\Bigr)

    with ω = (b, c, i). One subset φ of Φ is one ``(b, c)`` map for ``phi="I"``, one batch element
    (all classes) for ``"CI"``, one class (all batch elements) for ``"BI"``, and everything for
    ``"BCI"``. Within a subset the gradient takes two values only, for y = 0 and y = 1 (Eq. 4).

    Args:
        probs: ``(B, C, *spatial)`` probabilities (softmax or sigmoid outputs), any float dtype.
        target: dense ``(B, C, *spatial)`` one-hot or soft target, or integer label map
            ``(B, 1, *spatial)`` with values in ``[0, C)``.
        phi: ``"I"``, ``"CI"``, ``"BI"`` or ``"BCI"``.
        eps_nr: ε of the numerator: a number, or a ``(C,)`` tensor of per-class values. With
            ``eps_per="subset"`` it is added once to every subset (a per-class value once for each
            class the subset holds: ε_c for Φ = I and BI, Σ_c ε_c for CI and BCI).
        eps_dr: ε of the denominator, same forms.
        squared: V-Net relaxation, ``y² + ỹ²`` in the denominator (loses the two-value gradient).
        class_weights: ``(C,)`` or ``(B, C)`` weights. With ``weighting="term"`` each subset's term is
            multiplied by w_φ, the mean weight of its kept maps — for Φ = I and BI the class's weight,
            as MONAI's ``DiceLoss(weight=...)`` (the mean still divides by
            |Φ|, not by the weights' sum). ``weighting="inside"``: w_c multiplies every voxel term
            inside the sums (Sudre's form; in a one-class subset it only rescales the class against ε).
        weighting: ``"term"`` or ``"inside"``, see ``class_weights``.
        eps_per: for a per-class ε, ``"subset"`` (Eq. 3) or ``"map"``: ε_c added once for every kept
            ``(b, c)`` map, so a subset of several maps gets the sum over its maps (an expected volume
            per map, summed like the labels: the trainers' heuristic ε). A number is always added
            once per subset.
        voxel_mask: ``(B, 1, *spatial)``; zero removes the voxel from every subset.
        annotated: ``(B, C)`` bool; False removes map ``(b, c)`` from every subset.
        include_background: False drops channel 0 from the loss.

    Returns:
        Scalar loss in float32 (float64 for float64 input). Subsets left with no map leave Φ; if
        none is left the loss is 0 with a zero gradient. With ε_nr = ε_dr = 0, a subset with empty
        labels and zero probabilities contributes 0 (ratio 1) and no gradient.

    Example:
        >>> probs = torch.rand(2, 3, 8, 8, requires_grad=True)
        >>> labels = torch.randint(0, 3, (2, 1, 8, 8))
        >>> loss = soft_dice_loss(probs.softmax(1), labels, phi="BI", eps_nr=1e-5, eps_dr=1e-5)
        >>> loss.backward()
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    p = prepare_overlap(
        probs,
        target,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        eps_per=eps_per,
        squared=squared,
        voxel_mask=voxel_mask,
        annotated=annotated,
        class_weights=class_weights,
        include_background=include_background,
    )
    return dice_from_sums(
        p.sums,
        phi=p.phi,
        eps_nr=p.eps_nr,
        eps_dr=p.eps_dr,
        eps_per=eps_per,
        class_weights=p.class_weights,
        weighting=weighting,
        annotated=p.annotated,
    )


def vnet_dice_loss(probs: Tensor, target: Tensor, **kwargs) -> Tensor:
    """V-Net Dice (Milletari et al., 2016): :func:`soft_dice_loss` with ``squared=True``."""
    return soft_dice_loss(probs, target, squared=True, **kwargs)


def leaf_dice_loss(
    probs: Tensor,
    target: Tensor,
    *,
    phi: Phi = "I",
    eps_nr: Epsilon = 1e-7,
    eps_dr: Epsilon = 1e-7,
    squared: bool = False,
    class_weights: Tensor | None = None,
    weighting: Weighting = "term",
    eps_per: EpsPer = "subset",
    mean_over: LeafMean = "all",
    voxel_mask: Tensor | None = None,
    annotated: Tensor | None = None,
    include_background: bool = True,
) -> Tensor:
    """Leaf Dice (Fidon et al., 2021) as a choice of Φ: subsets whose labels sum to zero are emptied.

    Same arguments as :func:`soft_dice_loss`. Subsets are emptied afresh at every call, so an
    unannotated or empty structure never receives a gradient; with ``annotated`` the unannotated
    maps leave the subsets first.

    ``mean_over="all"`` (Fidon's and dicegrad's normalisation): an emptied subset contributes 0 and
    the mean runs over every subset of Φ (B·C maps for Φ = I), so the gradient's scale does not
    change with how many maps of a batch happen to be labelled. ``mean_over="labelled"``: the mean
    over the subsets with labels only (this package's form before 0.2.0).
    """
    check_choice("mean_over", mean_over, LEAF_MEANS)
    check_choice("weighting", weighting, WEIGHTINGS)
    p = prepare_overlap(
        probs,
        target,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        eps_per=eps_per,
        squared=squared,
        voxel_mask=voxel_mask,
        annotated=annotated,
        class_weights=class_weights,
        include_background=include_background,
    )
    return dice_from_sums(
        p.sums,
        phi=p.phi,
        eps_nr=p.eps_nr,
        eps_dr=p.eps_dr,
        eps_per=eps_per,
        class_weights=p.class_weights,
        weighting=weighting,
        annotated=p.annotated,
        drop_empty_subsets=True,
        mean_over="all" if mean_over == "all" else "present",
    )


# --- Generalized Dice ---------------------------------------------------------------------------


def generalized_dice_weights(sums: MapSums, keep: Tensor, phi: str) -> Tensor:
    """Sudre's weights 1/(Σ y)² per class and subset, as a ``(B, C)`` tensor (no gradient).

    Rule for a class whose labels are empty in a subset (weight 1/0): it takes the largest weight
    of the non-empty classes of that subset, so its false positives still count and nothing becomes
    inf or NaN; a subset with no labelled class gets equal weights. The weights are then scaled to
    mean 1 over the kept maps of each subset, which leaves the ratio unchanged when ε = 0 and keeps ε
    comparable to a voxel count otherwise. For Φ = I and BI (one class per subset) all weights are
    1 and the loss equals the plain Dice loss.
    """
    with torch.no_grad():
        gt = torch.where(keep, sums.target, 0.0)
        volume = gt if phi in ("I", "CI") else gt.sum(0, keepdim=True).expand_as(gt)
        labelled = volume > 0
        inv = torch.where(labelled, 1.0 / torch.where(labelled, volume, 1.0) ** 2, 0.0)
        inv = torch.where(keep, inv, 0.0)
        largest = expand_subsets(reduce_maps(inv, phi, "amax"), phi, inv.shape)
        w = torch.where(labelled, inv, largest)
        w = torch.where(w > 0, w, 1.0)
        w = torch.where(keep, w, 0.0)
        total = expand_subsets(reduce_maps(w, phi), phi, w.shape)
        count = expand_subsets(reduce_maps(keep.to(w.dtype), phi), phi, w.shape)
        return torch.where(keep, w * count / torch.where(total > 0, total, 1.0), 0.0)


def generalized_dice_loss(
    probs: Tensor,
    target: Tensor,
    *,
    phi: Phi = "CI",
    eps_nr: Epsilon = 1e-7,
    eps_dr: Epsilon = 1e-7,
    eps_per: EpsPer = "subset",
    voxel_mask: Tensor | None = None,
    annotated: Tensor | None = None,
    include_background: bool = True,
) -> Tensor:
    """Generalized Dice loss (Sudre et al., 2017): the Dice loss with class weights 1/(Σ_φ y_c)².

    Sudre's loss is Φ = CI (one subset per image, all classes); ``phi="BCI"`` weights classes by
    their volume in the whole batch. See :func:`generalized_dice_weights` for empty classes.
    """
    p = prepare_overlap(
        probs,
        target,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        eps_per=eps_per,
        voxel_mask=voxel_mask,
        annotated=annotated,
        include_background=include_background,
    )
    return generalized_dice_from_sums(
        p.sums, phi=p.phi, eps_nr=p.eps_nr, eps_dr=p.eps_dr, eps_per=eps_per, annotated=p.annotated
    )


def generalized_dice_from_sums(
    sums: MapSums, *, phi: Phi, eps_nr: Epsilon, eps_dr: Epsilon, annotated: Tensor | None, eps_per: EpsPer = "subset"
) -> Tensor:
    weights = generalized_dice_weights(sums, kept_maps(sums, annotated), phi)
    return dice_from_sums(
        sums,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        eps_per=eps_per,
        class_weights=weights,
        weighting="inside",
        annotated=annotated,
    )


# --- Jaccard and Tversky ------------------------------------------------------------------------


def jaccard_from_sums(
    sums: MapSums, *, phi: Phi, eps_nr: Epsilon, eps_dr: Epsilon, annotated: Tensor | None, eps_per: EpsPer = "subset"
) -> Tensor:
    inter = sums.intersection
    return ratio_loss(
        inter,
        sums.pred + sums.target - inter,
        kept_maps(sums, annotated),
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        eps_per=eps_per,
    )


def jaccard_loss(
    probs: Tensor,
    target: Tensor,
    *,
    phi: Phi = "I",
    eps_nr: Epsilon = 1e-7,
    eps_dr: Epsilon = 1e-7,
    eps_per: EpsPer = "subset",
    squared: bool = False,
    voxel_mask: Tensor | None = None,
    annotated: Tensor | None = None,
    include_background: bool = True,
) -> Tensor:
    r"""Soft Jaccard loss over Φ: ``1 − mean_φ (I_φ + ε_nr) / (U_φ − I_φ + ε_dr)``, U_φ = Σ_φ (y + ỹ)."""
    p = prepare_overlap(
        probs,
        target,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        eps_per=eps_per,
        squared=squared,
        voxel_mask=voxel_mask,
        annotated=annotated,
        include_background=include_background,
    )
    return jaccard_from_sums(
        p.sums, phi=p.phi, eps_nr=p.eps_nr, eps_dr=p.eps_dr, eps_per=eps_per, annotated=p.annotated
    )


def tversky_from_sums(
    sums: MapSums,
    *,
    alpha: float,
    beta: float,
    phi: Phi,
    eps_nr: Epsilon,
    eps_dr: Epsilon,
    annotated: Tensor | None,
    eps_per: EpsPer = "subset",
) -> Tensor:
    inter = sums.intersection
    false_pos, false_neg = sums.pred - inter, sums.target - inter
    return ratio_loss(
        inter,
        inter + alpha * false_pos + beta * false_neg,
        kept_maps(sums, annotated),
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        eps_per=eps_per,
    )


def tversky_loss(
    probs: Tensor,
    target: Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    phi: Phi = "I",
    eps_nr: Epsilon = 1e-7,
    eps_dr: Epsilon = 1e-7,
    eps_per: EpsPer = "subset",
    voxel_mask: Tensor | None = None,
    annotated: Tensor | None = None,
    include_background: bool = True,
) -> Tensor:
    r"""Tversky loss over Φ: ``1 − mean_φ (I + ε_nr) / (I + α·FP + β·FN + ε_dr)``.

    FP = Σ (1 − y)·ỹ and FN = Σ y·(1 − ỹ) per subset; α weighs false positives, β false
    negatives. α = β = ½ gives the Dice loss with ε doubled.
    """
    alpha, beta = check_probability("alpha", alpha), check_probability("beta", beta)
    p = prepare_overlap(
        probs,
        target,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        eps_per=eps_per,
        voxel_mask=voxel_mask,
        annotated=annotated,
        include_background=include_background,
    )
    return tversky_from_sums(
        p.sums,
        alpha=alpha,
        beta=beta,
        phi=p.phi,
        eps_nr=p.eps_nr,
        eps_dr=p.eps_dr,
        eps_per=eps_per,
        annotated=p.annotated,
    )
