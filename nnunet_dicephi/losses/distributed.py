"""Global Φ across processes: one all-reduce per call, no batch sizes exchanged, nothing read on the host.

The loss over the global batch (every process's batch concatenated, in any sizes) needs no process
to see another's maps. A subset of Φ is a union of whole (b, c) maps, and what its term takes from
them are sums: per class, over the subset's kept maps (annotated, with a voxel left by the mask), of
Σ y·ỹ, Σ ỹ and Σ y, and the number n of those maps. n counts what comes once per map: the per-map ε
(``eps_per="map"``, the trainers' heuristic ε), the class weights a subset's weight is the mean of,
the Generalized Dice weights' scale and Mime's mean. Written on these *totals*, ``(R, C)`` tensors of
a class's sums in each of R subsets (or rows of subsets), every overlap loss of this package takes a
few lines, and so does the exchange:

* Φ = BI, BCI: a subset spans the processes. Each process sums its kept maps per class, a ``(4, C)``
  tensor; one all-reduce adds them, and every process computes the same loss from the same totals.
* Φ = I, CI (and Mime, which has no Φ): a subset lies in one process. Each process computes its own
  subsets' terms; one all-reduce adds (Σ terms, number of subsets the mean runs over), and the loss
  is the one divided by the other.

So a call costs one collective of at most 4·C numbers, whatever the batch sizes, and no value is
read on the host: a training step compiles as one graph (``torch.compile(fullgraph=True)``). The
totals are those of :mod:`.sums`, float32 for half-precision logits, and the loss equals the
single-process one of :mod:`.overlap` and :mod:`.mime` on the concatenated batch
(``tests/unit/test_distributed.py``: every overlap module, the Φ, ε forms and class weightings,
partial ``annotated`` masks, the ignore label, unequal batch sizes).

Gradients: every process computes the same loss L from the same all-reduced values, so the gradient
with respect to them is the same on every process and the backward pass exchanges nothing: each
process passes ``world_size · ∂L/∂(its own contribution)`` to its maps, which DDP's gradient
averaging turns into exactly ∂L/∂θ of one process over the global batch (the scale nnU-Net's
``AllGatherGrad`` gives). This asks of the processes what DDP training does: each weighs L alike
(the same deep-supervision and term weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from ._validation import Epsilon
from .subsets import EpsPer, MeanOver, kept_maps
from .sums import MapSums

if dist.is_available():  # a torch built without it has no process groups, and no use for them
    import torch.distributed._functional_collectives as funcol

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

    from .modules import _OverlapLoss

__all__ = ["Totals", "all_reduce_sum", "global_form", "global_loss", "is_distributed"]


def is_distributed(group: ProcessGroup | None = None) -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, group: ProcessGroup | None) -> Tensor:
        ctx.world_size = dist.get_world_size(group)
        group = dist.group.WORLD if group is None else group
        assert group is not None  # inside an initialised process group
        return funcol.wait_tensor(funcol.all_reduce(tensor, "sum", group))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        # every process holds this same gradient (same loss of the same sums): no exchange
        return grad * ctx.world_size, None


def all_reduce_sum(tensor: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Σ of ``tensor`` over the processes; its gradient is ``world_size ·`` the incoming one (see above)."""
    return _AllReduceSum.apply(tensor, group)


class Totals(NamedTuple):
    """Per class and subset (or row of subsets), sums over the kept maps; every field is ``(R, C)``."""

    intersection: Tensor
    """Σ y·ỹ."""
    pred: Tensor
    """Σ ỹ (Σ ỹ² when squared)."""
    target: Tensor
    """Σ y (Σ y² when squared)."""
    maps: Tensor
    """Number of kept maps."""


def _map_totals(sums: MapSums, annotated: Tensor | None) -> Totals:
    keep = kept_maps(sums, annotated)
    return Totals(
        torch.where(keep, sums.intersection, 0.0),
        torch.where(keep, sums.pred, 0.0),
        torch.where(keep, sums.target, 0.0),
        keep.to(sums.intersection.dtype),
    )


def global_loss(
    loss: _OverlapLoss,
    sums: MapSums,
    annotated: Tensor | None,
    eps_nr: Epsilon,
    eps_dr: Epsilon,
    *extra: Any,
    group: ProcessGroup | None = None,
) -> Tensor:
    """The loss of ``loss`` over the global batch, from this process's map sums; one all-reduce.

    ``sums``, ``annotated``, ε and ``extra`` (the module's per-class arguments) are the process's
    own, without the background where the module drops it: what ``loss._from_sums`` would take.
    """
    totals = _map_totals(sums, annotated)
    if loss.phi in ("BI", "BCI"):
        # sum over the batch, then over the processes: one row of per-class totals
        packed = all_reduce_sum(torch.stack(totals).sum(1), group)
        total, count = _terms(loss, Totals(*packed.unsqueeze(1)), loss.phi == "BCI", eps_nr, eps_dr, extra)
        return total / count.clamp_min(1)
    total, count = all_reduce_sum(
        torch.stack(_terms(loss, totals, loss.phi == "CI", eps_nr, eps_dr, extra)), group
    ).unbind()
    return total / count.clamp_min(1)


def global_form(cls: type) -> type | None:
    """The module class whose loss ``cls`` computes, where its form on totals is written here; else None.

    A subclass that changes the loss (its own ``_from_sums``) has none until its form is added to
    :func:`_terms`.
    """
    from . import modules

    forms = (modules.MimeLoss, modules.GeneralizedDiceLoss, modules.JaccardLoss, modules.TverskyLoss, modules.DiceLoss)
    return next((form for form in forms if issubclass(cls, form) and cls._from_sums is form._from_sums), None)


def _terms(
    loss: _OverlapLoss, t: Totals, classwise: bool, eps_nr: Epsilon, eps_dr: Epsilon, extra: tuple
) -> tuple[Tensor, Tensor]:
    """(Σ of the terms over the subsets held in ``t``, the number of subsets the mean divides by).

    A row of ``t`` is one subset when ``classwise`` (Φ = CI, BCI), else each entry is one (I, BI).
    """
    from . import modules  # modules imports this module; the classes are only read here

    if global_form(type(loss)) is None:
        raise NotImplementedError(
            f"{type(loss).__name__} computes its own loss from the map sums; over processes it needs the same "
            "loss written on per-class totals in nnunet_dicephi/losses/distributed.py"
        )
    if isinstance(loss, modules.MimeLoss):
        a, b = (torch.as_tensor(v, dtype=t.pred.dtype, device=t.pred.device) for v in extra)
        return (b * t.pred - (a + b) * t.intersection).sum(), t.maps.sum()

    def ratio(numerator: Tensor, denominator: Tensor, **options: Any) -> tuple[Tensor, Tensor]:
        return _ratio_terms(
            t, classwise, numerator, denominator, eps_nr=eps_nr, eps_dr=eps_dr, eps_per=loss.eps_per, **options
        )

    inter, pred, target = t.intersection, t.pred, t.target
    if isinstance(loss, modules.GeneralizedDiceLoss):
        w = _generalized_dice_weights(t, classwise)
        return ratio(2.0 * (inter * w), (pred + target) * w)
    if isinstance(loss, modules.JaccardLoss):
        return ratio(inter, pred + target - inter)
    if isinstance(loss, modules.TverskyLoss):
        return ratio(inter, inter + loss.alpha * (pred - inter) + loss.beta * (target - inter))
    if isinstance(loss, modules.DiceLoss):
        (class_weights,) = extra
        union, term_weights = pred + target, None
        if class_weights is not None:
            w = class_weights.to(inter)
            if loss.weighting == "inside":
                inter, union = inter * w, union * w
            else:
                term_weights = w
        return ratio(
            2.0 * inter,
            union,
            term_weights=term_weights,
            labels_required=loss.drop_empty_subsets,
            mean_over=loss.mean_over,
        )
    raise AssertionError(type(loss))  # global_form lists the classes above


def _within(classwise: bool) -> Callable[[Tensor], Tensor]:
    """Sum over the classes of a subset (CI, BCI); a subset of one class (I, BI) is itself."""
    return (lambda x: x.sum(1, keepdim=True)) if classwise else (lambda x: x)


def _subset_eps(eps: Epsilon, maps: Tensor, per: EpsPer, within: Callable[[Tensor], Tensor]) -> Tensor | float:
    """A number once per subset; a per-class ε_c once per class present (``"subset"``) or per kept map."""
    if not isinstance(eps, Tensor):
        return eps
    eps = eps.to(maps)
    return within(eps * maps if per == "map" else torch.where(maps > 0, eps, 0.0))


def _ratio_terms(
    t: Totals,
    classwise: bool,
    numerator: Tensor,
    denominator: Tensor,
    *,
    eps_nr: Epsilon,
    eps_dr: Epsilon,
    eps_per: EpsPer,
    term_weights: Tensor | None = None,
    labels_required: bool = False,
    mean_over: MeanOver = "present",
) -> tuple[Tensor, Tensor]:
    """:func:`~nnunet_dicephi.losses.subsets.ratio_loss` on totals, before the mean over Φ."""
    within = _within(classwise)
    maps = within(t.maps)
    present = maps > 0
    if labels_required:
        present = present & (within(t.target) > 0)
    num = within(numerator) + _subset_eps(eps_nr, t.maps, eps_per, within)
    den = within(denominator) + _subset_eps(eps_dr, t.maps, eps_per, within)
    safe = den > 0
    term = 1.0 - torch.where(safe, num / torch.where(safe, den, 1.0), 1.0)
    if term_weights is not None:
        term = term * (within(term_weights * t.maps) / maps.clamp_min(1))
    term = torch.where(present, term, 0.0)
    if mean_over == "all":
        count = torch.full((), term.numel(), dtype=term.dtype, device=term.device)
    else:
        count = present.sum().to(term.dtype)
    return term.sum(), count


def _generalized_dice_weights(t: Totals, classwise: bool) -> Tensor:
    """:func:`~nnunet_dicephi.losses.generalized_dice_weights` on totals (no gradient)."""
    within = _within(classwise)
    with torch.no_grad():
        kept, labelled = t.maps > 0, t.target > 0
        inv = torch.where(labelled & kept, 1.0 / torch.where(labelled, t.target, 1.0) ** 2, 0.0)
        largest = inv.amax(1, keepdim=True) if classwise else inv
        w = torch.where(labelled, inv, largest)
        w = torch.where(kept, torch.where(w > 0, w, 1.0), 0.0)
        total, count = within(w * t.maps), within(t.maps)
        return torch.where(kept, w * count / torch.where(total > 0, total, 1.0), 0.0)
