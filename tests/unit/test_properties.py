"""Property tests on random shapes (1D to 3D): reference equality and invariances."""

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

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


@given(case=cases(), phi=st.sampled_from(["I", "CI", "BI", "BCI"]), eps_nr=EPS, eps_dr=EPS, squared=st.booleans())
def test_matches_reference(case, phi, eps_nr, eps_dr, squared):
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
