"""Property tests on random shapes (1D to 3D): reference equality, invariances, bounds on saturated inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from nnunet_dicephi import losses as L
from nnunet_dicephi.losses import DiceLoss, lovasz_softmax_loss, soft_dice_loss
from tests import reference


@st.composite
def cases(draw):
    batch = draw(st.integers(1, 3))
    classes = draw(st.integers(1, 4))
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    probs = torch.randn(batch, classes, *spatial, generator=g, dtype=torch.float64).softmax(1)
    labels = torch.randint(0, classes, (batch, 1, *spatial), generator=g)
    masked = draw(st.booleans())
    voxel_mask = (torch.rand(batch, 1, *spatial, generator=g) > 0.3) if masked else None
    annotated = (torch.rand(batch, classes, generator=g) > 0.3) if draw(st.booleans()) else None
    return probs, labels, voxel_mask, annotated


EPS = st.one_of(st.just(0.0), st.floats(1e-9, 1e3))
PHIS = st.sampled_from(["I", "CI", "BI", "BCI"])


@given(case=cases(), phi=PHIS, eps_nr=EPS, eps_dr=EPS, squared=st.booleans())
def test_matches_reference(case, phi, eps_nr, eps_dr, squared):
    assume(eps_dr > 0 or eps_nr == 0)  # the others are refused (test_unbounded_eps_is_refused_the_rest_bounded)
    probs, labels, voxel_mask, annotated = case
    onehot = torch.zeros_like(probs).scatter_(1, labels, 1.0)
    loss = soft_dice_loss(
        probs,
        labels,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        squared=squared,
        voxel_mask=voxel_mask,
        annotated=annotated,
    )
    expected = reference.dice_loss(
        probs.numpy(),
        onehot.numpy(),
        phi,
        eps_nr,
        eps_dr,
        squared,
        None,
        None if voxel_mask is None else voxel_mask.numpy(),
        None if annotated is None else annotated.numpy(),
    )
    assert np.isfinite(loss.item())
    assert abs(loss.item() - expected) < 1e-9


@given(case=cases(), phi=st.sampled_from(["I", "CI", "BI", "BCI"]))
def test_batch_order_does_not_matter(case, phi):
    probs, labels, voxel_mask, annotated = case
    perm = torch.randperm(probs.shape[0])
    a = soft_dice_loss(probs, labels, phi=phi, voxel_mask=voxel_mask, annotated=annotated)
    b = soft_dice_loss(
        probs[perm],
        labels[perm],
        phi=phi,
        voxel_mask=None if voxel_mask is None else voxel_mask[perm],
        annotated=None if annotated is None else annotated[perm],
    )
    assert abs(a.item() - b.item()) < 1e-12


@given(case=cases(), phi=st.sampled_from(["I", "CI", "BI", "BCI"]))
def test_loss_in_unit_interval_and_perfect_prediction_is_zero(case, phi):
    probs, labels, voxel_mask, annotated = case
    loss = soft_dice_loss(probs, labels, phi=phi, voxel_mask=voxel_mask, annotated=annotated)
    assert -1e-12 <= loss.item() <= 1 + 1e-12
    perfect = torch.zeros_like(probs).scatter_(1, labels, 1.0)
    assert soft_dice_loss(perfect, labels, phi=phi, voxel_mask=voxel_mask, annotated=annotated).item() < 1e-6


@given(case=cases())
def test_lovasz_equals_definition_per_map(case):
    probs, labels, _, _ = case
    onehot = torch.zeros_like(probs).scatter_(1, labels, 1.0)
    loss = lovasz_softmax_loss(probs, labels, per_image=True, classes="all")
    errors = (onehot - probs).abs().numpy()
    batch, classes = probs.shape[:2]
    per_image = [
        np.mean([reference.lovasz_map(errors[b, c].ravel(), onehot[b, c].numpy().ravel()) for c in range(classes)])
        for b in range(batch)
    ]
    assert abs(loss.item() - np.mean(per_image)) < 1e-9


@given(case=cases(), phi=st.sampled_from(["I", "CI", "BI", "BCI"]))
def test_module_equals_function(case, phi):
    probs, labels, _, annotated = case
    logits = probs.log()
    module = DiceLoss(phi=phi, eps_nr=0.5, eps_dr=2.0)
    expected = soft_dice_loss(
        probs, labels, phi=phi, eps_nr=0.5, eps_dr=2.0, annotated=annotated, include_background=False
    )
    assert abs(module(logits, labels, annotated).item() - expected.item()) < 1e-9


@st.composite
def saturated_cases(draw):
    """Random shapes with probabilities of exactly 0 and 1 (logits scaled by 1e3), or of ≈ 1e-30 off the
    label (a normal float32, 0 in half precision): what a network that has collapsed predicts."""
    batch = draw(st.integers(1, 3))
    classes = draw(st.integers(2, 4))
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    labels = torch.randint(0, classes, (batch, 1, *spatial), generator=g)
    if draw(st.booleans()):
        labels[: draw(st.integers(0, batch))] = 0  # images whose foreground maps are all empty
    if draw(st.booleans()):
        logits = torch.randn(batch, classes, *spatial, generator=g, dtype=torch.float64) * 1e3
    else:  # ỹ ≈ e^-69 everywhere but on the label (or, predicting every map empty, on background)
        where = labels if draw(st.booleans()) else torch.zeros_like(labels)
        logits = torch.full((batch, classes, *spatial), -69.0, dtype=torch.float64).scatter_(1, where, 0.0)
    voxel_mask = (torch.rand(batch, 1, *spatial, generator=g) > 0.3) if draw(st.booleans()) else None
    annotated = (torch.rand(batch, classes, generator=g) > 0.3) if draw(st.booleans()) else None
    return logits, labels, voxel_mask, annotated


@given(case=saturated_cases(), phi=PHIS, eps_nr=EPS, eps_dr=EPS, squared=st.booleans())
def test_unbounded_eps_is_refused_the_rest_bounded(case, phi, eps_nr, eps_dr, squared):
    """ε_dr = 0 < ε_nr is refused; every other ε keeps the loss in [min(0, 1 − ε_nr/ε_dr), 1] with a
    finite gradient, on saturated probabilities too."""
    logits, labels, voxel_mask, annotated = case
    logits = logits.clone().requires_grad_()
    options = dict(phi=phi, eps_nr=eps_nr, eps_dr=eps_dr, squared=squared, voxel_mask=voxel_mask, annotated=annotated)
    if eps_dr == 0 and eps_nr > 0:
        with pytest.raises(ValueError, match="unbounded"):
            soft_dice_loss(logits.softmax(1), labels, **options)
        return
    loss = soft_dice_loss(logits.softmax(1), labels, **options)
    loss.backward()
    lowest = min(0.0, 1.0 - eps_nr / eps_dr) if eps_dr > 0 else 0.0
    assert lowest - 1e-9 <= loss.item() <= 1.0 + 1e-9
    assert torch.isfinite(logits.grad).all()


def _saturated_modules():
    yield lambda **kw: L.DiceLoss(phi="I", **kw)  # ε = 1e-7: ∂L/∂ỹ ≈ −1/ε on an empty map predicted empty
    yield lambda **kw: L.DiceLoss(phi="BCI", include_background=True, **kw)
    yield lambda **kw: L.VNetDiceLoss(phi="BI", **kw)
    yield lambda **kw: L.LeafDiceLoss(phi="CI", **kw)
    yield lambda **kw: L.GeneralizedDiceLoss(**kw)
    yield lambda **kw: L.JaccardLoss(**kw)
    yield lambda **kw: L.TverskyLoss(eps_nr=2.0, eps_dr=1.0, **kw)
    yield lambda **kw: L.MarginalDiceLoss(**kw)
    yield lambda **kw: L.DiceCELoss(L.DiceLoss(phi="I", eps_nr=0.0, eps_dr=1e-7, **kw))
    yield lambda **kw: L.LovaszSoftmaxLoss(**kw)
    yield lambda **kw: L.MimeLoss(a=1.0, b=0.1, **kw)
    yield lambda **kw: L.ExclusionLoss(**kw)
    yield lambda **kw: L.CrossEntropyLoss(**kw)


SATURATED_MODULES = list(_saturated_modules())


@given(
    case=saturated_cases(),
    make=st.sampled_from(SATURATED_MODULES),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32]),
    autocast=st.sampled_from([None, torch.float16, torch.bfloat16]),
)
def test_modules_finite_on_saturated_logits_at_any_precision(case, make, dtype, autocast):
    logits, labels, voxel_mask, annotated = case
    classes = logits.shape[1]
    options = {}
    if voxel_mask is not None:  # nnU-Net's ignore label: one value past the classes
        labels = torch.where(voxel_mask, labels, classes)
        options["ignore_label"] = classes
    module = make(**options)
    leaf = logits.to(dtype).requires_grad_()
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        loss = module(leaf, labels, annotated)
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert torch.isfinite(leaf.grad).all()


@given(case=saturated_cases(), dtype=st.sampled_from([torch.float16, torch.bfloat16]))
def test_sigmoid_modules_finite_on_saturated_logits(case, dtype):
    logits, labels, _, annotated = case
    regions = F.one_hot(labels[:, 0], logits.shape[1]).movedim(-1, 1).to(dtype)
    for module in (L.DiceLoss(phi="I", nonlinearity="sigmoid"), L.DiceCELoss(L.TverskyLoss(nonlinearity="sigmoid"))):
        leaf = logits.to(dtype).requires_grad_()
        loss = module(leaf, regions, annotated)
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(leaf.grad).all()
