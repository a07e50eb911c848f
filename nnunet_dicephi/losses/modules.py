"""``nn.Module`` losses with nnU-Net's call convention: ``loss(logits, target, annotated=None)``.

* ``nonlinearity="softmax"``: ``target`` is nnU-Net's integer label map ``(B, 1, *spatial)``; the
  ``ignore_label`` value, if any, is removed from every sum (a voxel-wise "unknown").
* ``nonlinearity="sigmoid"`` (nnU-Net region training): ``target`` is the one-hot region tensor
  ``(B, R, *spatial)``; with an ignore label nnU-Net appends one channel that is 1 on ignored voxels,
  and ``ignore_label`` (any non-None value) says that channel is there.
* ``annotated`` is ``(B, C)`` bool over the network's output channels (background included for
  softmax), True where the class is annotated in the case of that batch element.

Each module checks its options once at construction (ε settings without a lower bound included) and
calls the pure functions of this package; the math lives there. The activation and every sum run in
float32 whatever the logits' dtype (fp16, bf16, under autocast or not), and the loss is float32;
float64 logits stay float64. A training step synchronises nothing and compiles as one graph
(``torch.compile(loss, fullgraph=True)``), under DDP too, where ``distributed=True`` costs one
all-reduce per call: the label values are checked on the first batch a module sees outside
``torch.compile``, and on every batch when the environment sets ``NNUNET_DICEPHI_CHECK_LABELS=1``
(a debugging switch: one host synchronisation per step).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._validation import (
    Epsilon,
    Phi,
    check_annotated,
    check_bounded_eps,
    check_choice,
    check_eps,
    check_label_values,
    check_phi,
    check_probability,
    check_probs,
    values_checkable,
)
from .distributed import global_loss, is_distributed
from .lovasz import lovasz_softmax_loss
from .mime import _check_constant, mime_from_sums
from .overlap import (  # the functional API whose options the modules take
    EPS_PER,
    LEAF_MEANS,
    WEIGHTINGS,
    EpsPer,
    LeafMean,
    MeanOver,
    Weighting,
    dice_from_sums,
    generalized_dice_from_sums,
    jaccard_from_sums,
    tversky_from_sums,
)
from .partial import exclusion_loss, marginal_cross_entropy, marginalize_probs, masked_binary_cross_entropy
from .subsets import drop_background
from .sums import MapSums, accumulation_dtype, map_sums, no_autocast

__all__ = [
    "Prepared",
    "SegmentationLoss",
    "DiceLoss",
    "VNetDiceLoss",
    "LeafDiceLoss",
    "GeneralizedDiceLoss",
    "JaccardLoss",
    "TverskyLoss",
    "MimeLoss",
    "MarginalDiceLoss",
    "LovaszSoftmaxLoss",
    "ExclusionLoss",
    "CrossEntropyLoss",
    "WeightedCrossEntropyLoss",
    "DiceCELoss",
]

NONLINEARITIES = ("softmax", "sigmoid")
CHECK_LABELS_VARIABLE = "NNUNET_DICEPHI_CHECK_LABELS"


def _check_every_batch() -> bool:
    return os.environ.get(CHECK_LABELS_VARIABLE, "").strip().lower() in ("1", "true", "yes")


class Prepared(NamedTuple):
    """A batch after the nonlinearity and ignore-label handling, shared by compound losses."""

    logits: Tensor
    probs: Tensor | None
    target: Tensor
    """Label map ``(B, 1, *spatial)`` (softmax) or dense regions ``(B, R, *spatial)`` (sigmoid)."""
    voxel_mask: Tensor | None

    def require_probs(self) -> Tensor:
        """The probabilities; every loss but the cross-entropy asks for them (``needs_probs``)."""
        assert self.probs is not None, "built by a loss with needs_probs = False"
        return self.probs


class SegmentationLoss(nn.Module):
    """Base class: nonlinearity, ignore label, background and ``annotated`` handling."""

    needs_probs = True
    """False for losses computed from the logits alone (cross-entropy): no softmax pass."""

    def __init__(
        self,
        *,
        nonlinearity: str = "softmax",
        include_background: bool | None = None,
        ignore_label: int | None = None,
    ) -> None:
        super().__init__()
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
        if include_background is None:
            include_background = nonlinearity == "sigmoid"
        if nonlinearity == "sigmoid" and not include_background:
            raise ValueError(
                "include_background=False needs a softmax output with a background channel; sigmoid (region) "
                "outputs have none, so every channel counts"
            )
        self.include_background = bool(include_background)
        if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, int)):
            raise ValueError(f"ignore_label must be an int or None; got {ignore_label!r}")
        self.ignore_label = ignore_label
        self.labels_checked = False
        """Set once a batch's label values were checked; later batches are not (no synchronisation)."""
        self.check_every_batch = _check_every_batch()

    def _check_labels(self, labels: Tensor, classes: int) -> None:
        if values_checkable() and (self.check_every_batch or not self.labels_checked):
            check_label_values(labels, classes)
            self.labels_checked = True

    def prepare(self, logits: Tensor, target: Tensor) -> Prepared:
        """Activation and targets in float32 (float64 stays float64); call under :func:`no_autocast`.

        Half-precision logits are upcast first: on a map with empty labels predicted near 0 the Dice
        gradient with respect to ỹ is about −1/ε (−10⁷ at the default ε), beyond fp16's range (65504),
        and fp16 probabilities underflow to 0 where float32 ones do not. nnU-Net's CUDA autocast runs
        its softmax in float32 for the same reason; CPU autocast and fp16 logits passed in would not.
        """
        check_probs(logits, "logits")
        logits = logits.to(accumulation_dtype(logits.dtype))
        if self.nonlinearity == "softmax":
            expected = (logits.shape[0], 1, *logits.shape[2:])
            if tuple(target.shape) != expected:
                raise ValueError(
                    f"target must be nnU-Net's label map of shape (B, 1, *spatial) = {expected}; "
                    f"got {tuple(target.shape)}"
                )
            labels = target.long()
            voxel_mask = None
            if self.ignore_label is not None:
                voxel_mask = labels != self.ignore_label
                labels = torch.where(voxel_mask, labels, 0)
            self._check_labels(labels, logits.shape[1])
            return Prepared(logits, torch.softmax(logits, 1) if self.needs_probs else None, labels, voxel_mask)
        channels = logits.shape[1] + (self.ignore_label is not None)
        expected = (logits.shape[0], channels, *logits.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(
                f"target must be the one-hot region tensor of shape {expected}"
                f"{' (regions plus the trailing ignore channel)' if self.ignore_label is not None else ''}; "
                f"got {tuple(target.shape)}"
            )
        voxel_mask = None
        if self.ignore_label is not None:
            voxel_mask = target[:, -1:] == 0
            target = target[:, :-1]
        probs = torch.sigmoid(logits) if self.needs_probs else None
        return Prepared(logits, probs, target.to(logits.dtype), voxel_mask)

    def forward(self, logits: Tensor, target: Tensor, annotated: Tensor | None = None) -> Tensor:
        with no_autocast(logits.device):
            prepared = self.prepare(logits, target)
            return self.loss_from_prepared(prepared, self._annotated(annotated, logits))

    def loss_from_prepared(self, prepared: Prepared, annotated: Tensor | None) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def _annotated(annotated: Tensor | None, logits: Tensor) -> Tensor | None:
        return check_annotated(annotated, logits.shape[0], logits.shape[1])

    def extra_repr(self) -> str:
        return (
            f"nonlinearity={self.nonlinearity!r}, include_background={self.include_background}, "
            f"ignore_label={self.ignore_label}"
        )


class _OverlapLoss(SegmentationLoss):
    """Losses computed from the per-map sums: Dice, V-Net, leaf, GDL, Jaccard, Tversky, Mime."""

    squared = False
    eps_nr: Epsilon
    eps_dr: Epsilon

    def __init__(
        self,
        *,
        phi: Phi = "I",
        eps_nr: Epsilon = 1e-7,
        eps_dr: Epsilon | None = None,
        eps_per: EpsPer = "subset",
        distributed: bool = False,
        **base,
    ) -> None:
        super().__init__(**base)
        self.phi = check_phi(phi)
        self.eps_per = check_choice("eps_per", eps_per, EPS_PER)
        """A per-class ε once per subset of Φ (``"subset"``, Eq. 3) or once per kept map (``"map"``)."""
        self.distributed = bool(distributed)
        """Φ over the global batch of all processes: one all-reduce per call, in a process group of more
        than one (see :mod:`~nnunet_dicephi.losses.distributed`)."""
        self._store_eps("eps_nr", eps_nr)
        self._store_eps("eps_dr", eps_nr if eps_dr is None else eps_dr)
        check_bounded_eps(self.eps_nr, self.eps_dr, include_background=self.include_background)

    def _store_eps(self, name: str, value: Epsilon) -> None:
        # A per-class ε is a buffer, so it follows .to(device); a scalar stays a Python float.
        classes = value.shape[0] if isinstance(value, Tensor) and value.ndim == 1 else 1
        value = check_eps(name, value, classes)
        if isinstance(value, Tensor):
            self.register_buffer(name, value.detach().clone().float())
        else:
            setattr(self, name, value)

    def loss_from_prepared(self, prepared: Prepared, annotated: Tensor | None) -> Tensor:
        sums = map_sums(
            prepared.require_probs(),
            prepared.target,
            squared=self.squared,
            voxel_mask=prepared.voxel_mask,
            validate=False,
        )
        return self.loss_from_sums(sums, annotated)

    def loss_from_sums(self, sums: MapSums, annotated: Tensor | None) -> Tensor:
        eps_nr, eps_dr = self.eps_nr, self.eps_dr
        for name, eps in (("eps_nr", eps_nr), ("eps_dr", eps_dr)):
            if isinstance(eps, Tensor) and eps.shape[0] != sums.intersection.shape[1]:
                raise ValueError(
                    f"{name} has {eps.shape[0]} per-class values but the network has {sums.intersection.shape[1]} "
                    "output channels (background included)"
                )
        extra = self._per_class_extras()
        if not self.include_background:
            sums, annotated, eps_nr, eps_dr, *extra = drop_background(sums, annotated, eps_nr, eps_dr, *extra)
        if self.distributed and is_distributed():
            return global_loss(self, sums, annotated, eps_nr, eps_dr, *extra)
        return self._from_sums(sums, annotated, eps_nr, eps_dr, *extra)

    def _per_class_extras(self) -> tuple:
        return ()

    def _from_sums(self, sums: MapSums, annotated: Tensor | None, eps_nr: Epsilon, eps_dr: Epsilon, *extra) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"phi={self.phi!r}, eps_nr={self.eps_nr}, eps_dr={self.eps_dr}, eps_per={self.eps_per!r}, "
            + super().extra_repr()
        )


class DiceLoss(_OverlapLoss):
    """General Dice loss (Eq. 3) on network logits; see :func:`~nnunet_dicephi.losses.soft_dice_loss`.

    Args:
        phi: ``"I"``, ``"CI"``, ``"BI"`` or ``"BCI"``.
        eps_nr: scalar or ``(C,)`` tensor over output channels.
        eps_dr: defaults to ``eps_nr``.
        eps_per: a per-class ε once per subset of Φ (``"subset"``, Eq. 3) or per kept map (``"map"``).
        squared: V-Net denominator.
        class_weights: optional ``(C,)`` weights over output channels.
        weighting: ``"term"`` (each subset's term weighed, as MONAI's ``weight``) or ``"inside"`` (Sudre).
        nonlinearity: ``"softmax"`` or ``"sigmoid"``.
        include_background: default False for softmax, True (required) for sigmoid.
        ignore_label: nnU-Net's ignore label, or None.

    Example:
        >>> loss = DiceLoss(phi="BI", eps_nr=1e-5)
        >>> logits = torch.randn(2, 3, 16, 16, requires_grad=True)
        >>> loss(logits, torch.randint(0, 3, (2, 1, 16, 16))).backward()
    """

    drop_empty_subsets = False
    mean_over: MeanOver = "present"

    def __init__(
        self,
        *,
        squared: bool = False,
        class_weights: Tensor | None = None,
        weighting: Weighting = "term",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.squared = bool(squared)
        self.weighting = check_choice("weighting", weighting, WEIGHTINGS)
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
            if (
                class_weights.ndim != 1
                or not bool(torch.isfinite(class_weights).all())
                or bool((class_weights < 0).any())
            ):
                raise ValueError(f"class_weights must be a (C,) tensor of finite values >= 0; got {class_weights}")
            self.register_buffer("class_weights", class_weights)
        else:
            self.class_weights = None

    def _per_class_extras(self) -> tuple:
        return (self.class_weights,)

    def _from_sums(self, sums, annotated, eps_nr, eps_dr, class_weights=None) -> Tensor:
        return dice_from_sums(
            sums,
            phi=self.phi,
            eps_nr=eps_nr,
            eps_dr=eps_dr,
            eps_per=self.eps_per,
            class_weights=class_weights,
            weighting=self.weighting,
            annotated=annotated,
            drop_empty_subsets=self.drop_empty_subsets,
            mean_over=self.mean_over,
        )


class VNetDiceLoss(DiceLoss):
    """V-Net Dice (Milletari et al., 2016): squared denominator y² + ỹ²."""

    def __init__(self, **kwargs) -> None:
        super().__init__(squared=True, **kwargs)


class LeafDiceLoss(DiceLoss):
    """Leaf Dice (Fidon et al., 2021): subsets whose labels sum to zero are emptied at every step.

    ``mean_over="all"`` (Fidon's): the mean runs over every subset of Φ, an emptied one counting 0;
    ``"labelled"``: over the subsets with labels only. See :func:`~nnunet_dicephi.losses.leaf_dice_loss`.
    """

    drop_empty_subsets = True

    def __init__(self, *, mean_over: LeafMean = "all", **kwargs) -> None:
        super().__init__(**kwargs)
        self.leaf_mean = check_choice("mean_over", mean_over, LEAF_MEANS)
        self.mean_over = "all" if mean_over == "all" else "present"

    def extra_repr(self) -> str:
        return f"mean_over={self.leaf_mean!r}, " + super().extra_repr()


class GeneralizedDiceLoss(_OverlapLoss):
    """Generalized Dice (Sudre et al., 2017), Φ = CI by default.

    Classes empty in a subset are weighted as documented in
    :func:`~nnunet_dicephi.losses.generalized_dice_weights`.
    """

    def __init__(self, *, phi: Phi = "CI", **kwargs) -> None:
        super().__init__(phi=phi, **kwargs)

    def _from_sums(self, sums, annotated, eps_nr, eps_dr) -> Tensor:
        return generalized_dice_from_sums(
            sums, phi=self.phi, eps_nr=eps_nr, eps_dr=eps_dr, eps_per=self.eps_per, annotated=annotated
        )


class JaccardLoss(_OverlapLoss):
    """Soft Jaccard loss over Φ."""

    def __init__(self, *, squared: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.squared = bool(squared)

    def _from_sums(self, sums, annotated, eps_nr, eps_dr) -> Tensor:
        return jaccard_from_sums(
            sums, phi=self.phi, eps_nr=eps_nr, eps_dr=eps_dr, eps_per=self.eps_per, annotated=annotated
        )


class TverskyLoss(_OverlapLoss):
    """Tversky loss over Φ; ``alpha`` weighs false positives, ``beta`` false negatives."""

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, **kwargs) -> None:
        super().__init__(**kwargs)
        self.alpha, self.beta = check_probability("alpha", alpha), check_probability("beta", beta)

    def _from_sums(self, sums, annotated, eps_nr, eps_dr) -> Tensor:
        return tversky_from_sums(
            sums,
            alpha=self.alpha,
            beta=self.beta,
            phi=self.phi,
            eps_nr=eps_nr,
            eps_dr=eps_dr,
            eps_per=self.eps_per,
            annotated=annotated,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, " + super().extra_repr()


class MimeLoss(_OverlapLoss):
    """Mime loss (Kervadec & de Bruijne, 2023) with constants ``a``, ``b`` over output channels.

    Φ and ε play no role: the loss is linear in ỹ, averaged over the kept maps. ``a`` and ``b`` are
    ``(C,)`` tensors over the output channels (background included for softmax) or numbers, which
    apply to every class.
    """

    def __init__(self, *, a: Tensor | float, b: Tensor | float, **kwargs) -> None:
        super().__init__(**kwargs)
        given = {"a": torch.as_tensor(a, dtype=torch.float32), "b": torch.as_tensor(b, dtype=torch.float32)}
        classes = next((t.shape[0] for t in given.values() if t.ndim == 1), 1)
        for name, value in given.items():
            checked = _check_constant(name, value, classes).float()
            # a number stays 0-d: it broadcasts to every class, and dropping the background leaves it whole
            self.register_buffer(name, checked if value.ndim else checked[0].clone())

    def _per_class_extras(self) -> tuple:
        return (self.a, self.b)

    def _from_sums(self, sums, annotated, eps_nr, eps_dr, a=None, b=None) -> Tensor:
        return mime_from_sums(sums, a, b, annotated)


class MarginalDiceLoss(DiceLoss):
    """Marginal Dice (Fidon et al., 2021; Shi et al., 2021): unannotated classes merged into background.

    Softmax only; without ``annotated`` it is the plain Dice loss.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.nonlinearity != "softmax":
            raise ValueError("MarginalDiceLoss needs nonlinearity='softmax' (a background channel to merge into)")

    def loss_from_prepared(self, prepared: Prepared, annotated: Tensor | None) -> Tensor:
        if annotated is None:
            return super().loss_from_prepared(prepared, None)
        probs = prepared.require_probs()
        annotated = annotated.to(probs.device)
        kept = annotated.clone()
        kept[:, 0] = True
        merged = prepared._replace(probs=marginalize_probs(probs, annotated))
        return super().loss_from_prepared(merged, kept)


class LovaszSoftmaxLoss(SegmentationLoss):
    """Lovász-Softmax; see :func:`~nnunet_dicephi.losses.lovasz_softmax_loss`.

    Berman's defaults: the batch sorted together (``per_image=False``), classes present; pass
    ``include_background=True`` for his background-counting form (the trainers do).
    """

    def __init__(self, *, per_image: bool = False, classes: str = "present", **kwargs) -> None:
        super().__init__(**kwargs)
        self.per_image = bool(per_image)
        self.classes = check_choice("classes", classes, ("present", "all"))

    def loss_from_prepared(self, prepared: Prepared, annotated: Tensor | None) -> Tensor:
        return lovasz_softmax_loss(
            prepared.require_probs(),
            prepared.target,
            per_image=self.per_image,
            classes=self.classes,
            voxel_mask=prepared.voxel_mask,
            annotated=annotated,
            include_background=self.include_background,
            validate=False,
        )


class ExclusionLoss(SegmentationLoss):
    """Exclusion loss (Shi et al., 2021); softmax only. Without ``annotated`` it is 0."""

    def __init__(self, *, eps: float = 1e-7, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.nonlinearity != "softmax":
            raise ValueError("ExclusionLoss needs nonlinearity='softmax'")
        self.eps = check_eps("eps", eps, 1)

    def loss_from_prepared(self, prepared: Prepared, annotated: Tensor | None) -> Tensor:
        if annotated is None:
            # nothing to exclude; keep the graph connected so backward() works as for any loss
            probs = prepared.require_probs()
            return probs.sum(dtype=accumulation_dtype(probs.dtype)) * 0.0
        return exclusion_loss(
            prepared.require_probs(),
            prepared.target,
            annotated,
            eps=self.eps,
            voxel_mask=prepared.voxel_mask,
            validate=False,
        )


class CrossEntropyLoss(SegmentationLoss):
    """Cross-entropy that honours ``annotated`` and the ignore label.

    Softmax: :func:`~nnunet_dicephi.losses.marginal_cross_entropy`; sigmoid:
    :func:`~nnunet_dicephi.losses.masked_binary_cross_entropy`. With everything annotated these are
    nnU-Net's ``RobustCrossEntropyLoss`` and ``BCEWithLogitsLoss``.
    """

    needs_probs = False

    def loss_from_prepared(self, prepared: Prepared, annotated: Tensor | None) -> Tensor:
        if self.nonlinearity == "softmax":
            return marginal_cross_entropy(
                prepared.logits,
                prepared.target,
                annotated,
                class_weights=self._weights(prepared.logits.shape[1]),
                voxel_mask=prepared.voxel_mask,
                validate=False,
                probs=prepared.probs,  # the region loss's softmax, when Dice + CE share one pass
            )
        return masked_binary_cross_entropy(prepared.logits, prepared.target, annotated, voxel_mask=prepared.voxel_mask)

    def _weights(self, classes: int) -> Tensor | None:
        return None


class WeightedCrossEntropyLoss(CrossEntropyLoss):
    r"""Weighted marginal cross-entropy: each voxel counts with the weight of its label value.

    ``L = Σ_i m_i w_{y_i} ℓ_i / Σ_i m_i w_{y_i}`` with ℓ_i the marginal CE of voxel i, so label 0 of
    an image with unannotated classes (the merged class) carries w_0; see
    :func:`~nnunet_dicephi.losses.marginal_cross_entropy`. With everything annotated it is nnU-Net's
    ``RobustCrossEntropyLoss(weight=class_weights)``. Softmax only: a region (sigmoid) voxel has
    no single class to take a weight from. The trainers' weights are
    :func:`~nnunet_dicephi.losses.inverse_frequency_weights` of the expected class volumes.

    Args:
        class_weights: ``(C,)`` weights ≥ 0 over the output channels, background included, not all 0.
        ignore_label: nnU-Net's ignore label, or None.

    Example:
        >>> loss = WeightedCrossEntropyLoss(class_weights=torch.tensor([0.4, 1.5, 6.0]))
        >>> logits = torch.randn(2, 3, 16, 16, requires_grad=True)
        >>> loss(logits, torch.randint(0, 3, (2, 1, 16, 16))).backward()
    """

    class_weights: Tensor

    def __init__(self, *, class_weights: Tensor, **kwargs) -> None:
        kwargs.setdefault("include_background", True)  # a cross-entropy counts every class
        super().__init__(**kwargs)
        if self.nonlinearity != "softmax":
            raise ValueError(
                "WeightedCrossEntropyLoss needs nonlinearity='softmax': a region (sigmoid) voxel has no single "
                "class to take a weight from"
            )
        weights = torch.as_tensor(class_weights, dtype=torch.float32)
        if (
            weights.ndim != 1
            or not bool(torch.isfinite(weights).all())
            or bool((weights < 0).any())
            or not bool((weights > 0).any())
        ):
            raise ValueError(f"class_weights must be a (C,) tensor of finite values >= 0, not all 0; got {weights}")
        self.register_buffer("class_weights", weights.detach().clone())

    def _weights(self, classes: int) -> Tensor | None:
        if self.class_weights.shape[0] != classes:
            raise ValueError(
                f"class_weights has {self.class_weights.shape[0]} values but the network has {classes} output "
                "channels (background included)"
            )
        return self.class_weights

    def extra_repr(self) -> str:
        return f"class_weights={self.class_weights.tolist()}, " + super().extra_repr()


class DiceCELoss(nn.Module):
    """``weight_region · region_loss + weight_ce · CE [+ weight_exclusion · exclusion]`` over one softmax pass.

    The CE term follows the region loss's nonlinearity and ignore label and honours ``annotated``
    (marginal CE), so unannotated lesions are not taught as background. ``weight_exclusion`` adds
    Shi et al.'s exclusion term (:class:`ExclusionLoss`, softmax only), the marginal loss's partner:
    the marginal terms say nothing of where an unannotated class may be, the exclusion term keeps it
    off the voxels labelled as another class.

    Example:
        >>> loss = DiceCELoss(DiceLoss(phi="I", eps_nr=1e-5, ignore_label=3))
        >>> logits = torch.randn(2, 3, 16, 16, requires_grad=True)
        >>> loss(logits, torch.randint(0, 4, (2, 1, 16, 16))).backward()
    """

    def __init__(
        self,
        region_loss: SegmentationLoss,
        weight_region: float = 1.0,
        weight_ce: float = 1.0,
        weight_exclusion: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(region_loss, SegmentationLoss):
            raise ValueError(f"region_loss must be one of this package's SegmentationLoss modules; got {region_loss!r}")
        self.region_loss = region_loss
        self.ce = CrossEntropyLoss(
            nonlinearity=region_loss.nonlinearity,
            include_background=True,
            ignore_label=region_loss.ignore_label,
        )
        self.weight_region = check_probability("weight_region", weight_region)
        self.weight_ce = check_probability("weight_ce", weight_ce)
        self.weight_exclusion = check_probability("weight_exclusion", weight_exclusion)
        self.exclusion = None
        if self.weight_exclusion:
            if region_loss.nonlinearity != "softmax":
                raise ValueError(
                    "the exclusion term needs mutually exclusive labels (softmax); this loss uses "
                    f"{region_loss.nonlinearity} (a dataset with regions): leave the exclusion term out"
                )
            self.exclusion = ExclusionLoss(nonlinearity="softmax", ignore_label=region_loss.ignore_label)

    def forward(self, logits: Tensor, target: Tensor, annotated: Tensor | None = None) -> Tensor:
        with no_autocast(logits.device):
            prepared = self.region_loss.prepare(logits, target)
            annotated = SegmentationLoss._annotated(annotated, logits)
            loss = self.weight_region * self.region_loss.loss_from_prepared(prepared, annotated)
            if self.weight_ce:
                loss = loss + self.weight_ce * self.ce.loss_from_prepared(prepared, annotated)
            if self.exclusion is not None:
                if prepared.probs is None:  # a cross-entropy region loss skipped the softmax
                    prepared = prepared._replace(probs=torch.softmax(prepared.logits, 1))
                loss = loss + self.weight_exclusion * self.exclusion.loss_from_prepared(prepared, annotated)
            return loss

    def extra_repr(self) -> str:
        return (
            f"weight_region={self.weight_region}, weight_ce={self.weight_ce}, weight_exclusion={self.weight_exclusion}"
        )
