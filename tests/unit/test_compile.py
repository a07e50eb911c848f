"""Every loss module compiles as one graph and synchronises nothing, and equals eager.

``torch.compile(module, fullgraph=True)`` fails on anything that would need a tensor's value on the
host (``.item()``, ``int(t)``, ``bool(t)``, a branch on data): the same operations that cost a GPU
a host synchronisation per step. Most cases compile with the ``aot_eager`` backend, which traces the
forward and the backward graph without generating kernels (fast on a CPU); a few go through
inductor, nnU-Net's backend, for the numbers. On CUDA the eager modules are also run with
``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from nnunet_dicephi import losses as L
from tests.conftest import NO_CUDA

CLASSES = 3
IGNORE = CLASSES  # the label value nnU-Net gives the ignore label: one past the last class


def _softmax_modules():
    for phi in ("I", "CI", "BI", "BCI"):
        yield f"dice-{phi}", lambda phi=phi, **kw: L.DiceLoss(phi=phi, eps_nr=1e-5, **kw)
        yield f"dicece-{phi}", lambda phi=phi, **kw: L.DiceCELoss(L.DiceLoss(phi=phi, eps_nr=1e-5, **kw))
    per_class = torch.tensor([0.0, 3.0, 0.5])  # the heuristic ε: one volume per class
    yield "dice-BI-per-class-eps", lambda **kw: L.DiceLoss(phi="BI", eps_nr=per_class, eps_dr=per_class, **kw)
    yield (
        "dice-I-per-map-eps",  # the trainers' heuristic ε; ε_nr > ε_dr is accepted (bounded)
        lambda **kw: L.DiceLoss(phi="I", eps_nr=per_class * 2, eps_dr=per_class, eps_per="map", **kw),
    )
    yield "dice-I-background", lambda **kw: L.DiceLoss(phi="I", include_background=True, **kw)
    yield "vnet", lambda **kw: L.VNetDiceLoss(phi="BI", **kw)
    yield "leaf", lambda **kw: L.LeafDiceLoss(phi="I", **kw)
    yield "gdl", lambda **kw: L.GeneralizedDiceLoss(**kw)
    yield "jaccard", lambda **kw: L.JaccardLoss(phi="BI", **kw)
    yield "tversky", lambda **kw: L.TverskyLoss(phi="I", **kw)
    yield "mime", lambda **kw: L.MimeLoss(a=torch.tensor([0.0, 0.1, 0.3]), b=1e-3, **kw)
    yield "mime-numbers", lambda **kw: L.MimeLoss(a=1.0, b=0.1, **kw)
    yield "marginal-dice", lambda **kw: L.MarginalDiceLoss(phi="I", **kw)
    yield "lovasz-per-image", lambda **kw: L.LovaszSoftmaxLoss(per_image=True, **kw)
    yield "lovasz-per-batch", lambda **kw: L.LovaszSoftmaxLoss(per_image=False, classes="all", **kw)
    yield "exclusion", lambda **kw: L.ExclusionLoss(**kw)
    yield "ce", lambda **kw: L.CrossEntropyLoss(**kw)
    yield "wce", lambda **kw: L.WeightedCrossEntropyLoss(class_weights=torch.tensor([0.4, 1.5, 6.0]), **kw)


def _sigmoid_modules():
    sig = {"nonlinearity": "sigmoid"}
    yield "sigmoid-dice-BI", lambda **kw: L.DiceLoss(phi="BI", **sig, **kw)
    yield "sigmoid-dicece-I", lambda **kw: L.DiceCELoss(L.DiceLoss(phi="I", **sig, **kw))
    yield "sigmoid-gdl", lambda **kw: L.GeneralizedDiceLoss(**sig, **kw)
    yield "sigmoid-tversky", lambda **kw: L.TverskyLoss(**sig, **kw)
    yield "sigmoid-ce", lambda **kw: L.CrossEntropyLoss(**sig, **kw)


SOFTMAX = dict(_softmax_modules())
SIGMOID = dict(_sigmoid_modules())


def _softmax_batch(ignore: bool, partial: bool, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, CLASSES, 6, 7, generator=g, dtype=dtype)
    labels = torch.randint(0, CLASSES, (2, 1, 6, 7), generator=g)
    annotated = None
    if partial:
        annotated = torch.tensor([[True, True, False], [True, True, True]])
        labels[0][labels[0] == 2] = 0  # class 2 is not annotated in image 0
    if ignore:
        labels[:, :, :2] = IGNORE
    return logits.to(device), labels.to(device), None if annotated is None else annotated.to(device)


def _sigmoid_batch(ignore: bool, partial: bool, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, CLASSES, 6, 7, generator=g, dtype=dtype)
    regions = (torch.rand(2, CLASSES, 6, 7, generator=g) > 0.6).to(dtype)
    if ignore:  # nnU-Net appends one channel that is 1 on ignored voxels
        ignored = torch.zeros(2, 1, 6, 7, dtype=dtype)
        ignored[:, :, :2] = 1
        regions = torch.cat((regions, ignored), dim=1)
    annotated = torch.tensor([[True, False, True], [True, True, True]]) if partial else None
    return logits.to(device), regions.to(device), None if annotated is None else annotated.to(device)


def _cases():
    for name in SOFTMAX:
        for ignore in (False, True):
            for partial in (False, True):
                yield pytest.param(name, ignore, partial, id=f"{name}-ignore{int(ignore)}-partial{int(partial)}")
    for name in SIGMOID:
        for ignore in (False, True):
            yield pytest.param(name, ignore, True, id=f"{name}-ignore{int(ignore)}-partial1")


def _build(name: str, ignore: bool):
    factory = SOFTMAX.get(name) or SIGMOID[name]
    return factory(ignore_label=IGNORE) if ignore else factory()


def _batch(name: str, ignore: bool, partial: bool, device, dtype=torch.float32):
    make = _softmax_batch if name in SOFTMAX else _sigmoid_batch
    return make(ignore, partial, device, dtype)


def _value_and_grad(loss_fn, logits, target, annotated):
    leaf = logits.detach().clone().requires_grad_()
    value = loss_fn(leaf, target, annotated)
    value.backward()
    return value.detach(), leaf.grad


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(("name", "ignore", "partial"), list(_cases()))
def test_one_graph_forward_and_backward_equal_to_eager(name, ignore, partial):
    module = _build(name, ignore)
    logits, target, annotated = _batch(name, ignore, partial, "cpu", torch.float64)
    eager = _value_and_grad(module, logits, target, annotated)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    traced = _value_and_grad(compiled, logits, target, annotated)
    torch.testing.assert_close(traced[0], eager[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(traced[1], eager[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["dicece-I", "dice-I-per-map-eps", "marginal-dice", "sigmoid-dicece-I"])
@pytest.mark.parametrize(("dtype", "autocast"), [(torch.float16, False), (torch.float16, True), (torch.bfloat16, True)])
def test_half_precision_logits_compile_as_one_graph(name, dtype, autocast):
    """The float32 upcast and the autocast switch-off inside the modules trace into the one graph."""
    module = _build(name, False)
    logits, target, annotated = _batch(name, False, True, "cpu")
    logits = logits.to(dtype)
    if name.startswith("sigmoid"):
        target = target.to(dtype)

    def run(fn):
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            return _value_and_grad(fn, logits, target, annotated)

    eager = run(module)
    traced = run(torch.compile(module, fullgraph=True, backend="aot_eager"))
    assert traced[0].dtype == torch.float32 and traced[1].dtype == dtype
    torch.testing.assert_close(traced[0], eager[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(traced[1], eager[1], rtol=0, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "ignore", "partial"),
    [("dicece-BI", True, True), ("lovasz-per-image", False, True), ("sigmoid-dicece-I", True, True)],
)
def test_inductor_kernels_equal_eager(name, ignore, partial, device):
    """nnU-Net's backend: generated kernels, float32, to 1e-6."""
    module = _build(name, ignore).to(device)
    logits, target, annotated = _batch(name, ignore, partial, device)
    eager = _value_and_grad(module, logits, target, annotated)
    traced = _value_and_grad(torch.compile(module, fullgraph=True), logits, target, annotated)
    torch.testing.assert_close(traced[0], eager[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(traced[1], eager[1], rtol=0, atol=1e-6)


@NO_CUDA
@pytest.mark.parametrize(("name", "ignore", "partial"), list(_cases()))
def test_eager_step_synchronises_nothing_on_cuda(name, ignore, partial):
    """After the first batch (whose labels each module checks once), a step never waits for the GPU."""
    module = _build(name, ignore).cuda()
    logits, target, annotated = _batch(name, ignore, partial, "cuda")
    _value_and_grad(module, logits, target, annotated)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _value_and_grad(module, logits, target, annotated)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_labels_are_checked_on_the_first_eager_batch_only(monkeypatch):
    logits, labels, _ = _softmax_batch(False, False, "cpu")
    bad = labels.clone()
    bad[0, 0, 0, 0] = CLASSES + 4
    with pytest.raises(ValueError, match=r"label values in \[0, 7\].*3 channels"):
        L.DiceLoss()(logits, bad)
    module = L.DiceLoss()
    module(logits, labels)
    assert module.labels_checked
    # later batches are not checked on the host; the gather that reads the label still stops
    with pytest.raises((RuntimeError, IndexError)):
        module(logits, bad)


def test_the_debug_switch_checks_every_batch(monkeypatch):
    monkeypatch.setenv("NNUNET_DICEPHI_CHECK_LABELS", "1")
    logits, labels, _ = _softmax_batch(False, False, "cpu")
    module = L.DiceCELoss(L.DiceLoss())
    module(logits, labels)
    bad = labels.clone()
    bad[1, 0, 3, 3] = -1
    with pytest.raises(ValueError, match=r"label values in \[-1, 2\]"):
        module(logits, bad)
