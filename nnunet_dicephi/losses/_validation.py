"""Argument checks shared by the loss functions and modules.

Every check raises ``ValueError`` naming the argument, what was received and what is accepted.

Checks of tensor *values* (label ranges, finite ε and weights) need the values on the host: on a GPU a
synchronisation, inside ``torch.compile`` a graph break. They therefore stay out of the training step:
modules check constructor arguments once and label values on the first batch they see (see
:class:`~nnunet_dicephi.losses.SegmentationLoss`), and while ``torch.compile`` traces a function these
checks are skipped (:func:`values_checkable`): a compiled graph cannot raise on values without a sync.
An out-of-range label that slips past still cannot corrupt training silently: the gather and scatter
that read it stop with an index error (a device-side assert on CUDA).
"""

from __future__ import annotations

import numbers
from typing import TypeVar, Union

import torch
from torch import Tensor

from nnunet_dicephi.loss_config import PHIS, Phi

Epsilon = Union[float, Tensor]  # noqa: UP007 - a runtime alias, kept valid on Python 3.10


Choice = TypeVar("Choice", bound=str)


def check_phi(phi: object) -> Phi:
    if phi not in PHIS:
        raise ValueError(
            f"phi must be one of {', '.join(repr(p) for p in PHIS)} "
            "(image-wise, class-wise, batch-wise, all-wise); "
            f"got {phi!r}"
        )
    return phi  # type: ignore[return-value]


def check_probs(probs: object, name: str = "probs") -> Tensor:
    if not isinstance(probs, Tensor) or not probs.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape (B, C, *spatial); got {_describe(probs)}")
    if probs.ndim < 3:
        raise ValueError(
            f"{name} must have shape (B, C, *spatial) with at least one spatial axis; got shape {tuple(probs.shape)}"
        )
    return probs


def check_target(probs: Tensor, target: object) -> bool:
    """Validate ``target`` against ``probs``; return True for an integer label map.

    Accepted: a dense (one-hot or soft) floating-point target of the same shape as ``probs``, or an
    integer label map ``(B, 1, *spatial)`` with values in ``[0, C)``.
    """
    if not isinstance(target, Tensor):
        raise ValueError(f"target must be a tensor; got {_describe(target)}")
    if target.is_floating_point() or target.dtype == torch.bool:
        if target.shape != probs.shape:
            raise ValueError(
                "target must have the same shape as probs (a one-hot or soft target) or be an integer "
                f"label map of shape (B, 1, *spatial); got target shape {tuple(target.shape)} for probs shape "
                f"{tuple(probs.shape)}"
            )
        return False
    expected = (probs.shape[0], 1, *probs.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"an integer label map target must have shape (B, 1, *spatial) = {expected}; got {tuple(target.shape)} "
            "(pass a floating-point one-hot target of the same shape as probs instead, if that is what you have)"
        )
    return True


def values_checkable() -> bool:
    """False while ``torch.compile`` traces: value checks would break the graph, so they are skipped."""
    return not torch.compiler.is_compiling()


def labels_outside(labels: Tensor, num_classes: int) -> tuple[int, int] | None:
    """The (lowest, highest) label value when some value lies outside ``[0, num_classes)``, else None."""
    if labels.numel() == 0:
        return None
    low, high = (int(v) for v in torch.aminmax(labels))
    return (low, high) if low < 0 or high >= num_classes else None


def check_label_values(labels: Tensor, num_classes: int, name: str = "target") -> None:
    """Raise if an integer label map holds values outside ``[0, num_classes)`` (synchronises).

    Skipped while ``torch.compile`` traces (:func:`values_checkable`).
    """
    if not values_checkable():
        return
    outside = labels_outside(labels, num_classes)
    if outside is not None:
        lo_i, hi_i = outside
        raise ValueError(
            f"{name} holds label values in [{lo_i}, {hi_i}] but probs has {num_classes} channels, so labels must lie "
            f"in [0, {num_classes - 1}]; replace ignore or padding values by a valid label and drop those voxels "
            "with voxel_mask"
        )


def check_eps(name: str, eps: object, num_classes: int) -> Epsilon:
    """ε is a non-negative scalar (added once per subset) or a per-class ``(C,)`` tensor (added per map)."""
    if isinstance(eps, bool):
        raise ValueError(f"{name} must be a non-negative number or a (C,) tensor; got a bool")
    if isinstance(eps, numbers.Real):
        value = float(eps)
        if not value >= 0.0 or value == float("inf"):
            raise ValueError(f"{name} must be a finite number >= 0 (a voxel count); got {eps!r}")
        return value
    if isinstance(eps, Tensor):
        if eps.ndim == 0:
            return check_eps(name, float(eps), num_classes)
        if eps.shape != (num_classes,):
            raise ValueError(
                f"{name} as a tensor must have shape (C,) = ({num_classes},), one value per class; "
                f"got shape {tuple(eps.shape)}"
            )
        if values_checkable() and (not bool(torch.isfinite(eps).all()) or bool((eps < 0).any())):
            raise ValueError(f"{name} must hold finite values >= 0 (voxel counts); got {eps.tolist()}")
        return eps
    raise ValueError(f"{name} must be a non-negative number or a (C,) tensor; got {_describe(eps)}")


UNBOUNDED_EPS = (
    "makes the loss unbounded below (on a map with empty labels predicted near 0 the ratio's denominator "
    "goes to 0 while its numerator stays eps_nr)"
)


def check_bounded_eps(eps_nr: Epsilon, eps_dr: Epsilon, *, include_background: bool = True) -> None:
    """Refuse ``eps_dr = 0`` where ``eps_nr > 0`` (per class for a ``(C,)`` ε): that loss has no lower bound.

    Per class, because ``annotated`` can leave a subset with the maps of one class only; without
    the background, its channel's ε plays no role.

    ``eps_nr > eps_dr > 0`` is accepted: the ratio is then at most ``eps_nr / eps_dr`` (the loss at
    least ``1 − eps_nr / eps_dr``, below 0 on empty maps). A tensor's values are checked outside
    ``torch.compile`` only (:func:`values_checkable`); modules check theirs once, at construction.
    """
    if not isinstance(eps_nr, Tensor) and not isinstance(eps_dr, Tensor):
        if eps_dr == 0.0 and eps_nr > 0.0:
            raise ValueError(f"eps_nr = {eps_nr!r} with eps_dr = 0 {UNBOUNDED_EPS}; use eps_dr > 0, or eps_nr = 0")
        return
    if not values_checkable():
        return
    nr, dr = (e.detach().cpu() if isinstance(e, Tensor) else torch.tensor(float(e)) for e in (eps_nr, eps_dr))
    bad = (dr == 0) & (nr > 0)  # a number broadcasts to every class
    if not include_background:
        bad[0] = False
    if bool(bad.any()):
        classes = torch.nonzero(bad.reshape(-1)).flatten().tolist()
        raise ValueError(
            f"eps_nr > 0 with eps_dr = 0 for class index {classes} {UNBOUNDED_EPS}; "
            "use eps_dr > 0, or eps_nr = 0, for every class"
        )


def check_annotated(annotated: object, batch: int, num_classes: int) -> Tensor | None:
    if annotated is None:
        return None
    if not isinstance(annotated, Tensor):
        raise ValueError(f"annotated must be a (B, C) bool tensor or None; got {_describe(annotated)}")
    if tuple(annotated.shape) != (batch, num_classes):
        raise ValueError(
            f"annotated must have shape (B, C) = ({batch}, {num_classes}), True where class c is annotated in "
            f"batch element b; got shape {tuple(annotated.shape)}"
        )
    if annotated.dtype != torch.bool:
        raise ValueError(f"annotated must have dtype torch.bool; got {annotated.dtype}")
    return annotated


def check_voxel_mask(voxel_mask: object, probs: Tensor) -> Tensor | None:
    if voxel_mask is None:
        return None
    expected = (probs.shape[0], 1, *probs.shape[2:])
    if not isinstance(voxel_mask, Tensor) or tuple(voxel_mask.shape) != expected:
        got = tuple(voxel_mask.shape) if isinstance(voxel_mask, Tensor) else _describe(voxel_mask)
        raise ValueError(
            f"voxel_mask must be a tensor of shape (B, 1, *spatial) = {expected}, nonzero for voxels that count; "
            f"got {got}"
        )
    return voxel_mask


def check_class_weights(weights: object, batch: int, num_classes: int) -> Tensor | None:
    if weights is None:
        return None
    if not isinstance(weights, Tensor) or weights.shape not in ((num_classes,), (batch, num_classes)):
        got = tuple(weights.shape) if isinstance(weights, Tensor) else _describe(weights)
        raise ValueError(
            f"class_weights must be a tensor of shape (C,) = ({num_classes},) or (B, C) = ({batch}, {num_classes}); "
            f"got {got}"
        )
    if values_checkable() and (not bool(torch.isfinite(weights).all()) or bool((weights < 0).any())):
        raise ValueError("class_weights must be finite and >= 0")
    return weights


def check_probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value):
        raise ValueError(f"{name} must be a number >= 0; got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple[Choice, ...]) -> Choice:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value  # type: ignore[return-value]


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"
