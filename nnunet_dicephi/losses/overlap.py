r"""The general Dice loss over reduction sets Φ, and the overlap losses that share its statistics.

Everything here works on probabilities ``(B, C, *spatial)`` and a target that is either dense (one-hot
or soft, same shape) or an integer label map ``(B, 1, *spatial)``: :mod:`.sums` reduces every map to
its sums in one pass over the voxels, :mod:`.subsets` groups the maps into the subsets of Φ, and each
loss here is a few lines on the resulting ``(B, C)`` tensors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..loss_config import DEFAULT_EPS
from ._validation import (
    Epsilon,
    Phi,
    check_annotated,
    check_bounded_eps,
    check_choice,
    check_class_weights,
    check_eps,
    check_phi,
    check_probability,
)
from .subsets import (
    EPS_PER,
    LEAF_MEANS,
    MEAN_OVER,
    WEIGHTINGS,
    EpsPer,
    LeafMean,
    MeanOver,
    Weighting,
    drop_background,
    expand_subsets,
    kept_maps,
    ratio_loss,
    reduce_maps,
)
from .sums import MapSums, map_sums

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
    "LEAF_MEANS",
    "EpsPer",
    "LeafMean",
    "MeanOver",
    "Weighting",
]


def prepare_overlap(
    probs: Tensor,
    target: Tensor,
    *,
    phi: str,
    eps_nr: Epsilon = DEFAULT_EPS,
    eps_dr: Epsilon = DEFAULT_EPS,
    eps_per: EpsPer = "subset",
    squared: bool = False,
    voxel_mask: Tensor | None = None,
    annotated: Tensor | None = None,
    class_weights: Tensor | None = None,
    include_background: bool = True,
) -> tuple[MapSums, dict[str, Any]]:
    """Validate the arguments shared by the overlap losses and compute the map sums.

    Returns the sums and the validated keyword arguments of the ``*_from_sums`` functions (Φ, ε,
    ``eps_per``, ``annotated``, and ``class_weights`` when given), the background dropped if asked.
    """
    phi = check_phi(phi)
    check_choice("eps_per", eps_per, EPS_PER)
    sums = map_sums(probs, target, squared=squared, voxel_mask=voxel_mask)
    batch, classes = probs.shape[:2]
    eps_nr = check_eps("eps_nr", eps_nr, classes)
    eps_dr = check_eps("eps_dr", eps_dr, classes)
    annotated = check_annotated(annotated, batch, classes)
    check_bounded_eps(eps_nr, eps_dr, include_background=include_background)
    class_weights = check_class_weights(class_weights, batch, classes)
    if not include_background:
        sums, annotated, eps_nr, eps_dr, class_weights = drop_background(sums, annotated, eps_nr, eps_dr, class_weights)
    validated = {"phi": phi, "eps_nr": eps_nr, "eps_dr": eps_dr, "eps_per": eps_per, "annotated": annotated}
    if class_weights is not None:
        validated["class_weights"] = class_weights
    return sums, validated


_PREPARE_ARGUMENTS = frozenset(inspect.signature(prepare_overlap).parameters) - {"probs", "target"}


def _overlap_loss(from_sums: Callable[..., Tensor], probs: Tensor, target: Tensor, **options: Any) -> Tensor:
    """The one path of every overlap loss: :func:`prepare_overlap`, then ``from_sums(sums, ...)``.

    ``options`` holds :func:`prepare_overlap`'s arguments and the loss's own (Tversky's α, β; Dice's
    weighting), which go to ``from_sums`` with the validated Φ, ε, annotation and class weights. An
    argument a loss does not take (class weights for Jaccard) is a ``TypeError`` of ``from_sums``.
    """
    sums, validated = prepare_overlap(probs, target, **{k: options.pop(k) for k in _PREPARE_ARGUMENTS & options.keys()})
    return from_sums(sums, **validated, **options)


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
    drop_empty_subsets: bool = False,
    mean_over: MeanOver = "present",
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
        probs: ``(B, C, *spatial)`` probabilities (softmax or sigmoid outputs), any float dtype; the
            sums are float32 (float64 for float64). Compute them in float32 from half-precision logits
            (the modules do): ∂L/∂ỹ reaches about −1/ε on an empty map predicted empty, −10⁷ at the
            default ε, which fp16 cannot hold (its largest value is 65504).
        target: dense ``(B, C, *spatial)`` one-hot or soft target, or integer label map
            ``(B, 1, *spatial)`` with values in ``[0, C)``.
        phi: ``"I"``, ``"CI"``, ``"BI"`` or ``"BCI"``.
        eps_nr: ε of the numerator: a number, or a ``(C,)`` tensor of per-class values. With
            ``eps_per="subset"`` it is added once to every subset (a per-class value once for each
            class the subset holds: ε_c for Φ = I and BI, Σ_c ε_c for CI and BCI).
        eps_dr: ε of the denominator, same forms. ``eps_dr = 0`` where ``eps_nr > 0`` (for a class,
            with per-class values) is refused: on a map with empty labels predicted near 0 the ratio
            grows without limit. ``eps_nr > eps_dr > 0`` is accepted: the loss is then bounded below by
            ``1 − eps_nr / eps_dr`` (below 0 on empty maps).
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
        drop_empty_subsets: empty every subset whose labels sum to zero (leaf Dice,
            :func:`leaf_dice_loss`).
        mean_over: ``"present"``: the mean over the subsets left; ``"all"``: over every subset of Φ,
            a subset that left counting 0.

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
    return _overlap_loss(
        dice_from_sums,
        probs,
        target,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        squared=squared,
        class_weights=class_weights,
        weighting=weighting,
        eps_per=eps_per,
        voxel_mask=voxel_mask,
        annotated=annotated,
        include_background=include_background,
        drop_empty_subsets=drop_empty_subsets,
        mean_over=check_choice("mean_over", mean_over, MEAN_OVER),
    )


def vnet_dice_loss(probs: Tensor, target: Tensor, **kwargs) -> Tensor:
    """V-Net Dice (Milletari et al., 2016): :func:`soft_dice_loss` with ``squared=True``."""
    return soft_dice_loss(probs, target, squared=True, **kwargs)


def leaf_dice_loss(probs: Tensor, target: Tensor, *, mean_over: LeafMean = "all", **kwargs) -> Tensor:
    """Leaf Dice (Fidon et al., 2021) as a choice of Φ: subsets whose labels sum to zero are emptied.

    Takes the arguments of :func:`soft_dice_loss`. Subsets are emptied afresh at every call, so an
    unannotated or empty structure never receives a gradient; with ``annotated`` the unannotated
    maps leave the subsets first.

    ``mean_over="all"`` (Fidon's and dicegrad's normalisation): an emptied subset contributes 0 and
    the mean runs over every subset of Φ (B·C maps for Φ = I), so the gradient's scale does not
    change with how many maps of a batch happen to be labelled. ``mean_over="labelled"``: the mean
    over the subsets with labels only (this package's form before 0.2.0).
    """
    check_choice("mean_over", mean_over, LEAF_MEANS)
    return soft_dice_loss(
        probs, target, drop_empty_subsets=True, mean_over="all" if mean_over == "all" else "present", **kwargs
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


def generalized_dice_loss(probs: Tensor, target: Tensor, *, phi: Phi = "CI", **options: Any) -> Tensor:
    """Generalized Dice loss (Sudre et al., 2017): the Dice loss with class weights 1/(Σ_φ y_c)².

    Sudre's loss is Φ = CI (one subset per image, all classes); ``phi="BCI"`` weights classes by
    their volume in the whole batch. See :func:`generalized_dice_weights` for empty classes. The
    other arguments are those of :func:`soft_dice_loss` but the class weights (the loss sets them).
    """
    return _overlap_loss(generalized_dice_from_sums, probs, target, phi=phi, **options)


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


def jaccard_loss(probs: Tensor, target: Tensor, *, phi: Phi = "I", **options: Any) -> Tensor:
    r"""Soft Jaccard loss over Φ: ``1 − mean_φ (I_φ + ε_nr) / (U_φ − I_φ + ε_dr)``, U_φ = Σ_φ (y + ỹ).

    The other arguments are those of :func:`soft_dice_loss` but the class weights.
    """
    return _overlap_loss(jaccard_from_sums, probs, target, phi=phi, **options)


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
    probs: Tensor, target: Tensor, *, alpha: float = 0.3, beta: float = 0.7, phi: Phi = "I", **options: Any
) -> Tensor:
    r"""Tversky loss over Φ: ``1 − mean_φ (I + ε_nr) / (I + α·FP + β·FN + ε_dr)``.

    FP = Σ (1 − y)·ỹ and FN = Σ y·(1 − ỹ) per subset; α weighs false positives, β false
    negatives. α = β = ½ gives the Dice loss with ε doubled. The other arguments are those of
    :func:`soft_dice_loss` but the class weights.
    """
    alpha, beta = check_probability("alpha", alpha), check_probability("beta", beta)
    return _overlap_loss(tversky_from_sums, probs, target, phi=phi, alpha=alpha, beta=beta, **options)
