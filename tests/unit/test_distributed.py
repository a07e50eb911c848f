"""CPU processes (gloo) with unequal batches equal one process on the concatenated batch.

Each call costs one collective and reads nothing on the host: a dispatch mode counts the collective
operations (``c10d`` and ``_c10d_functional``, forward and backward) and the host reads
(``aten._local_scalar_dense``, behind ``.item()``, ``int(t)``, ``bool(t)``) of every call.
"""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode

from nnunet_dicephi.losses import (
    DiceLoss,
    GeneralizedDiceLoss,
    JaccardLoss,
    LeafDiceLoss,
    MarginalDiceLoss,
    MimeLoss,
    TverskyLoss,
    VNetDiceLoss,
    modules,
)
from nnunet_dicephi.losses.distributed import global_form, global_loss
from nnunet_dicephi.losses.sums import map_sums

SPLIT = [1, 3, 2]  # batch elements of ranks 0, 1 and 2
WORLD = len(SPLIT)
IGNORE = 3  # nnU-Net's ignore label: one past the last class


def _losses():
    """(name, module, target key): every overlap loss, every Φ, the ε forms and class weightings."""
    eps = torch.tensor([2.0, 5.0, 1.0])
    weights = torch.tensor([0.5, 2.0, 1.0])
    for phi in ("I", "CI", "BI", "BCI"):
        yield f"dice-{phi}", DiceLoss(phi=phi, eps_nr=eps, eps_dr=eps, distributed=True), "labels"
        # the trainers' heuristic ε: once per kept map, ε_nr > ε_dr accepted
        per_map = DiceLoss(phi=phi, eps_nr=2 * eps, eps_dr=eps, eps_per="map", distributed=True)
        yield f"dice-{phi}-per-map-eps", per_map, "labels"
        yield f"leaf-{phi}", LeafDiceLoss(phi=phi, distributed=True), "labels"
        yield f"gdl-{phi}", GeneralizedDiceLoss(phi=phi, distributed=True), "labels"
        yield f"tversky-{phi}", TverskyLoss(phi=phi, distributed=True), "labels"
    yield "dice-BI-number-eps", DiceLoss(phi="BI", eps_nr=1e-5, distributed=True), "labels"
    for phi in ("CI", "BCI"):
        for weighting in ("term", "inside"):
            module = DiceLoss(phi=phi, eps_nr=1.0, class_weights=weights, weighting=weighting, distributed=True)
            yield f"dice-{phi}-weights-{weighting}", module, "labels"
    yield "leaf-BCI-labelled", LeafDiceLoss(phi="BCI", mean_over="labelled", distributed=True), "labels"
    yield "vnet-BI", VNetDiceLoss(phi="BI", eps_nr=eps, eps_per="map", distributed=True), "labels"
    yield "marginal-BI", MarginalDiceLoss(phi="BI", distributed=True), "labels"
    yield "dice-BCI-background", DiceLoss(phi="BCI", include_background=True, distributed=True), "labels"
    yield "gdl-BCI-eps", GeneralizedDiceLoss(phi="BCI", eps_nr=eps, eps_dr=eps, distributed=True), "labels"
    yield "jaccard-BI", JaccardLoss(phi="BI", distributed=True), "labels"
    yield "jaccard-BCI", JaccardLoss(phi="BCI", eps_nr=eps, eps_per="map", distributed=True), "labels"
    yield "mime", MimeLoss(a=torch.tensor([0.0, 0.3, 0.1]), b=0.01, distributed=True), "labels"
    # one batch element of rank 0 and one of rank 1 lie wholly under the ignore label
    ignore = DiceLoss(phi="BI", eps_nr=eps, eps_per="map", ignore_label=IGNORE, distributed=True)
    yield "dice-BI-ignore", ignore, "ignore"
    yield "dice-I-ignore", DiceLoss(phi="I", ignore_label=IGNORE, distributed=True), "ignore"


def _data():
    g = torch.Generator().manual_seed(0)
    batch = sum(SPLIT)
    logits = torch.randn(batch, 3, 6, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (batch, 1, 6, 7), generator=g)
    ignore = torch.where(torch.rand(batch, 1, 6, 7, generator=g) < 0.2, IGNORE, labels)
    ignore[0] = ignore[2] = IGNORE
    targets = {"labels": labels, "ignore": ignore}
    annotated = torch.rand(batch, 3, generator=g) > 0.3
    rank_without_labels = annotated.clone()
    rank_without_labels[: SPLIT[0]] = False  # rank 0 holds no kept map: it still gets its (zero) gradient
    return logits, targets, {"all": None, "random": annotated, "rank 0 unannotated": rank_without_labels}


def _part(rank):
    return slice(sum(SPLIT[:rank]), sum(SPLIT[: rank + 1]))


class _Count(TorchDispatchMode):
    """Counts collectives and host reads among the operations run while it is active."""

    NOT_COLLECTIVES = ("wait_tensor", "_wrap_tensor_autograd")

    def __init__(self):
        super().__init__()
        self.collectives, self.host_reads = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if func.namespace in ("c10d", "_c10d_functional") and name.split(".")[1] not in self.NOT_COLLECTIVES:
            self.collectives.append(name)
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            self.host_reads.append(name)
        return func(*args, **(kwargs or {}))


def _init(rank, store):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)


def _worker(rank, store, out):
    _init(rank, store)
    logits, targets, annotations = _data()
    part = _part(rank)
    results = {}
    for name, loss_fn, target in _losses():
        # the first batch a module sees has its label values checked on the host; later ones do not
        loss_fn(logits[part], targets[target][part])
        for key, annotated in annotations.items():
            x = logits[part].clone().requires_grad_()
            with _Count() as count:
                loss = loss_fn(x, targets[target][part], None if annotated is None else annotated[part])
                loss.backward()
            results[name, key] = (loss.item(), x.grad, count.collectives, count.host_reads)
    # half-precision logits: sums, exchange and loss in float32
    loss_fn = DiceLoss(phi="BI", eps_nr=torch.tensor([2.0, 5.0, 1.0]), eps_per="map", distributed=True)
    x = logits[part].half().requires_grad_()
    loss = loss_fn(x, targets["labels"][part], annotations["random"][part])
    loss.backward()
    results["fp16"] = (loss.detach(), x.grad)
    torch.save(results, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_processes_equal_one_with_one_collective_and_no_host_read(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"out.{r}") for r in range(WORLD)]
    logits, targets, annotations = _data()
    for name, loss_fn, target in _losses():
        for key, annotated in annotations.items():
            x = logits.clone().requires_grad_()
            loss = loss_fn(x, targets[target], annotated)  # not initialised here: a single process
            loss.backward()
            for rank in range(WORLD):
                value, grad, collectives, host_reads = ranks[rank][name, key]
                case = (name, key, rank)
                assert abs(value - loss.item()) < 1e-6, case
                # each process receives world_size · ∂L/∂x; DDP's gradient averaging divides by world_size
                assert torch.allclose(grad / WORLD, x.grad[_part(rank)], atol=1e-9), case
                assert collectives == ["_c10d_functional.all_reduce.default"], case
                assert host_reads == [], case
    loss_fn = DiceLoss(phi="BI", eps_nr=torch.tensor([2.0, 5.0, 1.0]), eps_per="map")
    x = logits.half().requires_grad_()
    loss = loss_fn(x, targets["labels"], annotations["random"])
    loss.backward()
    for rank in range(WORLD):
        value, grad = ranks[rank]["fp16"]
        assert value.dtype == torch.float32 and grad.dtype == torch.float16
        assert abs(value.item() - loss.item()) < 1e-6
        assert torch.allclose(grad.float() / WORLD, x.grad[_part(rank)].float(), rtol=1e-2, atol=1e-6)


def _compiled_worker(rank, store, out):
    torch.set_num_threads(1)
    _init(rank, store)
    logits, targets, annotations = _data()
    part = _part(rank)
    results = []
    eps = torch.tensor([2.0, 5.0, 1.0])
    for loss_fn in (
        DiceLoss(phi="BI", eps_nr=eps, eps_per="map", distributed=True),  # the batch totals exchanged
        TverskyLoss(phi="CI", distributed=True),  # each process's terms and their number exchanged
    ):
        grads = []
        for module in (loss_fn, torch.compile(loss_fn, fullgraph=True, backend="aot_eager")):
            x = logits[part].clone().requires_grad_()
            loss = module(x, targets["labels"][part], annotations["random"][part])
            loss.backward()
            grads.append((loss.item(), x.grad))
        results.append(grads)
    torch.save(results, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_loss_compiles_as_one_graph(tmp_path):
    mp.spawn(_compiled_worker, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        for (eager, eager_grad), (compiled, compiled_grad) in torch.load(tmp_path / f"out.{rank}"):
            assert abs(eager - compiled) < 1e-12
            assert torch.allclose(eager_grad, compiled_grad, atol=1e-12)


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_overlap_module_has_a_global_form():
    package = [cls for cls in _subclasses(modules._OverlapLoss) if cls.__module__.startswith("nnunet_dicephi.")]
    assert len(package) >= 8  # Dice, V-Net, leaf, marginal, GDL, Jaccard, Tversky, Mime
    assert [cls.__name__ for cls in package if global_form(cls) is None] == []


def test_a_module_with_its_own_loss_has_no_global_form_until_written():
    class SquaredDice(DiceLoss):
        def _from_sums(self, *args):
            return super()._from_sums(*args) ** 2

    assert global_form(SquaredDice) is None
    sums = map_sums(torch.rand(2, 3, 4, 4).softmax(1), torch.randint(0, 3, (2, 1, 4, 4)))
    with pytest.raises(NotImplementedError, match="SquaredDice"):  # before any exchange, for Φ = I
        global_loss(SquaredDice(phi="I"), sums, None, 1e-7, 1e-7, None)
