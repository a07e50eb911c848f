"""Global Φ across processes: gather every process's ``(B, C)`` map sums before dividing.

Every subset of every Φ is a union of whole (b, c) maps, so the map sums of all processes are all a
process needs to compute the loss of the global batch exactly — for Φ = BI and BCI (one subset spans
processes) as for I and CI (|Φ| counts every process's subsets). Batch sizes may differ between
processes: shorter ones are padded with maps that hold no voxel, which leave every subset.

Gradients: every process computes the same global loss L; the backward pass of the gather sums the
gradients of all processes, so each receives ``world_size · ∂L/∂(its own sums)``, which DDP's
gradient averaging turns into exactly ∂L/∂θ (nnU-Net's ``AllGatherGrad`` follows the same rule).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .sums import MapSums

__all__ = ["gather_map_sums", "gather_annotated", "is_distributed"]


def is_distributed(group=None) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, group) -> Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)  # every process's contribution to this process's part
        return grad[ctx.rank], None


def _batch_sizes(batch: int, device: torch.device, group) -> list[int]:
    """Every process's batch size, in rank order (one exchange and one host synchronisation)."""
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(counts, torch.tensor([batch], dtype=torch.long, device=device), group=group)
    return [int(count) for count in counts]


def gather_map_sums(sums: MapSums, group=None) -> MapSums:
    """The map sums of every process, concatenated along the batch in rank order."""
    if not is_distributed(group):
        return sums
    batch, classes = sums.intersection.shape
    sizes = _batch_sizes(batch, sums.voxels.device, group)
    packed = torch.cat((sums.intersection, sums.pred, sums.target, sums.voxels.unsqueeze(1)), dim=1)
    padded = torch.zeros((max(sizes), packed.shape[1]), dtype=packed.dtype, device=packed.device)
    padded = padded.index_copy(0, torch.arange(batch, device=packed.device), packed)
    gathered = _AllGather.apply(padded, group)
    rows = torch.cat([gathered[rank, :size] for rank, size in enumerate(sizes)])
    return MapSums(
        rows[:, :classes], rows[:, classes : 2 * classes], rows[:, 2 * classes : 3 * classes], rows[:, 3 * classes]
    )


def gather_annotated(annotated: Tensor, group=None) -> Tensor:
    """The ``(B, C)`` annotated masks of every process, concatenated in rank order (no gradient)."""
    if not is_distributed(group):
        return annotated
    batch = annotated.shape[0]
    sizes = _batch_sizes(batch, annotated.device, group)
    padded = torch.zeros((max(sizes), annotated.shape[1]), dtype=torch.uint8, device=annotated.device)
    padded[:batch] = annotated.to(torch.uint8)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]).bool()
