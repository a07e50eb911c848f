"""Two CPU processes (gloo) with unequal batches equal one process on the concatenated batch."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnunet_dicephi.losses import DiceLoss, GeneralizedDiceLoss, JaccardLoss, MimeLoss, TverskyLoss

SPLIT = [1, 3]  # batch elements of rank 0 and rank 1


def _losses():
    eps = torch.tensor([2.0, 5.0, 1.0])
    yield from (DiceLoss(phi=phi, eps_nr=eps, eps_dr=eps, distributed=True) for phi in ("I", "CI", "BI", "BCI"))
    yield GeneralizedDiceLoss(phi="BCI", distributed=True)
    yield JaccardLoss(phi="BI", distributed=True)
    yield TverskyLoss(phi="CI", distributed=True)
    yield MimeLoss(a=torch.tensor([0.0, 0.3, 0.1]), b=0.01, distributed=True)


def _data():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(sum(SPLIT), 3, 6, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (sum(SPLIT), 1, 6, 7), generator=g)
    annotated = torch.rand(sum(SPLIT), 3, generator=g) > 0.3
    return logits, labels, annotated


def _worker(rank, world, store, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    logits, labels, annotated = _data()
    part = slice(sum(SPLIT[:rank]), sum(SPLIT[: rank + 1]))
    results = []
    for loss_fn in _losses():
        x = logits[part].clone().requires_grad_()
        loss = loss_fn(x, labels[part], annotated[part])
        loss.backward()
        results.append((loss.item(), x.grad))
    torch.save(results, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    logits, labels, annotated = _data()
    for index, loss_fn in enumerate(_losses()):
        x = logits.clone().requires_grad_()
        loss = loss_fn(x, labels, annotated)  # not initialised here: a single process
        loss.backward()
        for rank in range(2):
            value, grad = ranks[rank][index]
            assert abs(value - loss.item()) < 1e-6, (type(loss_fn).__name__, loss_fn.extra_repr())
            part = slice(sum(SPLIT[:rank]), sum(SPLIT[: rank + 1]))
            # each process receives world_size · ∂L/∂x; DDP's gradient averaging divides by world_size
            assert torch.allclose(grad / 2, x.grad[part], atol=1e-9), type(loss_fn).__name__
