"""Autograd equals Eq. 4, the L1 gradient is two-valued per subset, and gradcheck passes."""

import math

import numpy as np
import pytest
import torch

from nnunet_dicephi.losses import (
    generalized_dice_loss,
    jaccard_loss,
    lovasz_softmax_loss,
    marginal_cross_entropy,
    marginal_dice_loss,
    mime_loss,
    soft_dice_loss,
    tversky_loss,
)
from tests import reference
from tests.conftest import random_case

PHIS = ["I", "CI", "BI", "BCI"]


def _grad(fn, probs, *args, **kwargs):
    probs = probs.clone().requires_grad_()
    fn(probs, *args, **kwargs).backward()
    return probs.grad


@pytest.mark.parametrize("phi", PHIS)
@pytest.mark.parametrize("eps", [(1e-7, 1e-7), (0.0, 0.0), (5.0, 20.0)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dense", [False, True])
def test_autograd_equals_eq4(phi, eps, masked, dense):
    probs, labels, onehot = random_case(empty=(3,), seed=11)
    g = torch.Generator().manual_seed(2)
    voxel_mask = (torch.rand(3, 1, 5, 6, generator=g) > 0.3) if masked else None
    annotated = (torch.rand(3, 4, generator=g) > 0.3) if masked else None
    target = onehot if dense else labels
    grad = _grad(
        soft_dice_loss, probs, target, phi=phi, eps_nr=eps[0], eps_dr=eps[1], voxel_mask=voxel_mask, annotated=annotated
    )
    expected = reference.dice_gradient(
        probs.numpy(),
        onehot.numpy(),
        phi,
        eps[0],
        eps[1],
        None if voxel_mask is None else voxel_mask.numpy(),
        None if annotated is None else annotated.numpy(),
    )
    np.testing.assert_allclose(grad.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("phi", PHIS)
def test_l1_gradient_is_two_valued_within_every_subset(phi):
    probs, labels, onehot = random_case(batch=2, classes=3, spatial=(6, 7), seed=12)
    grad = _grad(soft_dice_loss, probs, labels, phi=phi)
    # group the (b, c) maps by subset, then check each subset's gradient has at most two values,
    # one on labelled and one on unlabelled voxels
    groups = {"I": lambda b, c: (b, c), "CI": lambda b, c: b, "BI": lambda b, c: c, "BCI": lambda b, c: 0}[phi]
    by_subset = {}
    for b in range(2):
        for c in range(3):
            by_subset.setdefault(groups(b, c), []).append((b, c))
    for maps in by_subset.values():
        values = torch.cat([grad[b, c].flatten() for b, c in maps])
        labels_here = torch.cat([onehot[b, c].flatten() for b, c in maps])
        for y in (0.0, 1.0):
            chosen = values[labels_here == y]
            assert chosen.numel() > 0
            assert torch.allclose(chosen, chosen[0].expand_as(chosen), rtol=0, atol=1e-15)
        assert not torch.isclose(values[labels_here == 0][0], values[labels_here == 1][0])


def test_squared_gradient_is_not_two_valued():
    probs, labels, _ = random_case(batch=1, classes=2, spatial=(8,), seed=13)
    grad = _grad(soft_dice_loss, probs, labels, squared=True)
    assert torch.unique(grad[0, 0]).numel() > 2


def test_empty_map_gets_negligible_gradient_with_tiny_eps_and_a_push_with_heuristic_eps():
    """Sect. 2.2/2.3 of the paper: Φ=I ignores an empty map unless ε is of the order of a volume."""
    probs, labels, _ = random_case(batch=2, classes=2, spatial=(10, 10), seed=14)
    labels[0] = 0  # class 1 empty in image 0
    tiny = _grad(soft_dice_loss, probs, labels, phi="I")
    heuristic = _grad(soft_dice_loss, probs, labels, phi="I", eps_nr=25.0, eps_dr=25.0)
    batch = _grad(soft_dice_loss, probs, labels, phi="BI")
    assert tiny[0, 1].abs().max() < 1e-8
    assert heuristic[0, 1].min() > 1e-4
    assert batch[0, 1].min() > 1e-4


GRADCHECK = {
    "dice": lambda p, lab, oh: soft_dice_loss(p, lab, phi="CI", eps_nr=0.5, eps_dr=1.0),
    "dice_perclass_masked": lambda p, lab, oh: soft_dice_loss(
        p,
        oh,
        phi="BI",
        eps_nr=torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64),
        squared=True,
        voxel_mask=lab != 2,
    ),
    "gdl": lambda p, lab, oh: generalized_dice_loss(p, lab, phi="BCI", eps_nr=0.1, eps_dr=0.1),
    "jaccard": lambda p, lab, oh: jaccard_loss(p, lab, phi="BI", eps_nr=0.1, eps_dr=0.1),
    "tversky": lambda p, lab, oh: tversky_loss(p, lab, alpha=0.2, beta=0.8, phi="I", eps_nr=0.1, eps_dr=0.1),
    "mime": lambda p, lab, oh: mime_loss(p, lab, torch.tensor([0.1, 0.2, 0.3]), 0.05),
    "marginal_dice": lambda p, lab, oh: marginal_dice_loss(
        p,
        torch.where(lab == 2, 0, lab),
        torch.tensor([[True, True, False], [True, True, True]]),
        eps_nr=0.1,
        eps_dr=0.1,
    ),
    "lovasz": lambda p, lab, oh: lovasz_softmax_loss(p, lab, per_image=False),
}


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_gradcheck(name):
    _, labels, onehot = random_case(batch=2, classes=3, spatial=(3, 4), seed=15)
    logits = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: GRADCHECK[name](z.softmax(1), labels, onehot), (logits,))


def test_gradcheck_marginal_cross_entropy():
    _, labels, _ = random_case(batch=2, classes=3, spatial=(3, 4), seed=16)
    labels = torch.where(labels == 2, 0, labels)
    annotated = torch.tensor([[True, True, False], [True, True, True]])
    logits = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: marginal_cross_entropy(z, labels, annotated), (logits,))


def _marginal_reference(logits, labels, annotated):
    """Float64 marginal CE with explicit target sets: logsumexp over M_b of the log-softmax."""
    log_probs = logits.double().log_softmax(1)
    per_image = []
    for b in range(logits.shape[0]):
        merged = [0] + [c for c in range(1, logits.shape[1]) if not annotated[b, c]]
        log_merged = torch.logsumexp(log_probs[b, merged], 0)
        log_label = log_probs[b].gather(0, labels[b]).squeeze(0)
        per_image.append(-torch.where(labels[b, 0] == 0, log_merged, log_label))
    return torch.stack(per_image).mean()


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_marginal_cross_entropy_equals_the_reference_with_the_shared_softmax(scale):
    g = torch.Generator().manual_seed(4)
    logits = (scale * torch.randn(3, 4, 5, 6, generator=g)).requires_grad_()
    labels = torch.randint(0, 4, (3, 1, 5, 6), generator=g)
    annotated = torch.tensor([[True, True, False, True], [True] * 4, [True, False, False, True]])
    for b, c in zip(*torch.nonzero(~annotated, as_tuple=True)):
        labels[b][labels[b] == c] = 0
    reference = logits.detach().clone().requires_grad_()
    _marginal_reference(reference, labels, annotated).backward()
    for probs in (None, logits.softmax(1)):  # computed inside, or the Dice term's softmax
        logits.grad = None
        value = marginal_cross_entropy(logits, labels, annotated, probs=probs)
        value.backward()
        assert value.item() == pytest.approx(_marginal_reference(logits, labels, annotated).item(), rel=1e-5)
        torch.testing.assert_close(logits.grad, reference.grad.float(), rtol=1e-4, atol=1e-6)


def test_marginal_cross_entropy_is_exact_where_every_merged_probability_underflows():
    """A confident false positive of an annotated class on a background voxel, 200 nats over the
    merged classes: their probabilities are 0 in float32, the loss and its gradient are still exact."""
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 1] = 200.0  # class 1 (annotated); background and class 2 (unannotated) at 0
    labels = torch.zeros(1, 1, 1, 2, dtype=torch.long)
    annotated = torch.tensor([[True, True, False]])
    logits.requires_grad_()
    value = marginal_cross_entropy(logits, labels, annotated)
    value.backward()
    assert value.item() == pytest.approx(200.0 - math.log(2.0), rel=1e-6)
    # ∂/∂z = ỹ − [c ∈ M] ỹ_c / q, averaged over the two voxels: (−1/2, 1, −1/2) / 2
    expected = torch.tensor([-0.25, 0.5, -0.25]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    torch.testing.assert_close(logits.grad, expected, rtol=0, atol=1e-6)
