"""soft_dice_loss equals an explicit float64 implementation of Eq. 3 on every configuration."""

import itertools

import numpy as np
import pytest
import torch

from nnunet_dicephi.losses import EPS_PER, dice_from_sums, leaf_dice_loss, map_sums, soft_dice_loss, vnet_dice_loss
from tests import reference
from tests.conftest import random_case

PHIS = ["I", "CI", "BI", "BCI"]
PER_CLASS = torch.tensor([3.0, 0.5, 12.0, 1e-3], dtype=torch.float64)
EPS = {
    "tiny": (1e-7, 1e-7),
    "zero": (0.0, 0.0),
    "nr_above_dr": (2.5, 0.5),  # bounded: the loss lies in [1 - 2.5/0.5, 1]; eps_dr = 0 < eps_nr is refused
    "dr_only": (0.0, 40.0),
    "large": (30.0, 30.0),
    "per_class": (PER_CLASS, PER_CLASS),
    "per_class_dr": (1.0, PER_CLASS * 2),
}


def _masks(batch, spatial, seed):
    g = torch.Generator().manual_seed(seed + 1)
    voxel_mask = torch.rand(batch, 1, *spatial, generator=g) > 0.3
    annotated = torch.rand(batch, 4, generator=g) > 0.35
    annotated[0] = True
    return voxel_mask, annotated


@pytest.mark.parametrize("phi", PHIS)
@pytest.mark.parametrize("eps", list(EPS))
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dense", [False, True])
def test_equals_eq3(phi, eps, squared, weighted, masked, dense):
    probs, labels, onehot = random_case(empty=(2,))
    eps_nr, eps_dr = EPS[eps]
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64) if weighted else None
    voxel_mask, annotated = _masks(3, (5, 6), 0) if masked else (None, None)
    loss = soft_dice_loss(
        probs,
        onehot if dense else labels,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        squared=squared,
        class_weights=weights,
        voxel_mask=voxel_mask,
        annotated=annotated,
    )
    expected = reference.dice_loss(
        probs.numpy(),
        onehot.numpy(),
        phi,
        np.asarray(eps_nr),
        np.asarray(eps_dr),
        squared,
        None if weights is None else weights.numpy(),
        None if voxel_mask is None else voxel_mask.numpy(),
        None if annotated is None else annotated.numpy(),
    )
    assert loss.dtype == torch.float64
    assert abs(loss.item() - expected) < 1e-10


@pytest.mark.parametrize("phi", PHIS)
@pytest.mark.parametrize("include_background", [False, True])
def test_background_exclusion_and_batch_weights(phi, include_background):
    probs, labels, onehot = random_case(seed=3)
    weights = torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) + 0.1
    loss = soft_dice_loss(
        probs, labels, phi=phi, class_weights=weights, include_background=include_background, eps_nr=PER_CLASS
    )
    expected = reference.dice_loss(
        probs.numpy(),
        onehot.numpy(),
        phi,
        PER_CLASS.numpy(),
        1e-7,
        False,
        weights.numpy(),
        include_background=include_background,
    )
    assert abs(loss.item() - expected) < 1e-10


@pytest.mark.parametrize("spatial", [(7,), (4, 5), (3, 4, 5)])
@pytest.mark.parametrize("phi", PHIS)
def test_dimensions(spatial, phi):
    probs, labels, onehot = random_case(batch=2, classes=3, spatial=spatial, seed=5)
    loss = soft_dice_loss(probs, labels, phi=phi)
    assert abs(loss.item() - reference.dice_loss(probs.numpy(), onehot.numpy(), phi)) < 1e-10


def test_soft_targets():
    probs, _, _ = random_case(seed=6)
    soft = torch.rand_like(probs)
    for phi, squared in itertools.product(PHIS, [False, True]):
        loss = soft_dice_loss(probs, soft, phi=phi, squared=squared, eps_nr=0.3, eps_dr=0.7)
        expected = reference.dice_loss(probs.numpy(), soft.numpy(), phi, 0.3, 0.7, squared)
        assert abs(loss.item() - expected) < 1e-10


@pytest.mark.parametrize("phi", PHIS)
def test_vnet_and_leaf_are_choices_of_relaxation_and_phi(phi):
    probs, labels, onehot = random_case(empty=(1, 3), seed=7)
    vnet = vnet_dice_loss(probs, labels, phi=phi)
    assert abs(vnet.item() - reference.dice_loss(probs.numpy(), onehot.numpy(), phi, squared=True)) < 1e-10
    batch, classes = probs.shape[:2]
    subsets_of_phi = {"I": batch * classes, "CI": batch, "BI": classes, "BCI": 1}[phi]
    leaf = leaf_dice_loss(probs, labels, phi=phi)  # Fidon's: the mean over every subset of Φ
    expected = reference.dice_loss(probs.numpy(), onehot.numpy(), phi, drop_empty=True, subsets_counted=subsets_of_phi)
    assert abs(leaf.item() - expected) < 1e-10
    labelled = leaf_dice_loss(probs, labels, phi=phi, mean_over="labelled")  # over the labelled subsets only
    assert abs(labelled.item() - reference.dice_loss(probs.numpy(), onehot.numpy(), phi, drop_empty=True)) < 1e-10
    if phi == "I":  # empty maps exist, so emptying them changes the loss, and so does the count
        assert abs(leaf.item() - soft_dice_loss(probs, labels, phi=phi).item()) > 1e-3
        assert abs(leaf.item() - labelled.item()) > 1e-3


@pytest.mark.parametrize("phi", PHIS)
@pytest.mark.parametrize("eps", ["tiny", "per_class", "per_class_dr"])
@pytest.mark.parametrize("weighting", ["term", "inside"])
@pytest.mark.parametrize("eps_per", ["subset", "map"])
@pytest.mark.parametrize("masked", [False, True])
def test_weighting_and_eps_per_equal_eq3(phi, eps, weighting, eps_per, masked):
    """Both placements of the class weights and of ε, against the explicit subsets."""
    probs, labels, onehot = random_case(empty=(2,), seed=11)
    eps_nr, eps_dr = EPS[eps]
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    voxel_mask, annotated = _masks(3, (5, 6), 4) if masked else (None, None)
    loss = soft_dice_loss(
        probs,
        labels,
        phi=phi,
        eps_nr=eps_nr,
        eps_dr=eps_dr,
        class_weights=weights,
        weighting=weighting,
        eps_per=eps_per,
        voxel_mask=voxel_mask,
        annotated=annotated,
    )
    expected = reference.dice_loss(
        probs.numpy(),
        onehot.numpy(),
        phi,
        np.asarray(eps_nr),
        np.asarray(eps_dr),
        False,
        weights.numpy(),
        None if voxel_mask is None else voxel_mask.numpy(),
        None if annotated is None else annotated.numpy(),
        weighting=weighting,
        eps_per=eps_per,
    )
    assert abs(loss.item() - expected) < 1e-10


def test_eps_per_subset_and_per_map_differ_where_a_subset_holds_several_maps():
    probs, labels, _ = random_case(seed=12)
    for phi in PHIS:
        subset, per_map = (
            soft_dice_loss(probs, labels, phi=phi, eps_nr=PER_CLASS, eps_dr=PER_CLASS, eps_per=per).item()
            for per in ("subset", "map")
        )
        if phi in ("I", "CI"):  # one map of each class per subset: the same ε
            assert subset == pytest.approx(per_map, abs=1e-12)
        else:  # three maps of each class per subset: ε once or three times
            assert abs(subset - per_map) > 1e-4
        # a number is added once per subset either way
        scalar = [soft_dice_loss(probs, labels, phi=phi, eps_nr=5.0, eps_dr=5.0, eps_per=p).item() for p in EPS_PER]
        assert scalar[0] == scalar[1]


def test_sums_compose_across_a_split_batch():
    """Sums of two half batches, concatenated, give the loss of the whole batch (distributed callers)."""
    probs, labels, _ = random_case(batch=5, seed=8)
    whole = soft_dice_loss(probs, labels, phi="BI", eps_nr=PER_CLASS, eps_dr=PER_CLASS)
    parts = [map_sums(probs[s], labels[s]) for s in (slice(0, 2), slice(2, 5))]
    joined = type(parts[0])(*(torch.cat(fields) for fields in zip(*parts)))
    assert abs(dice_from_sums(joined, phi="BI", eps_nr=PER_CLASS, eps_dr=PER_CLASS).item() - whole.item()) < 1e-12


def test_label_map_and_dense_paths_agree_in_float32():
    probs, labels, onehot = random_case(batch=2, classes=5, spatial=(16, 16, 8), dtype=torch.float32, seed=4)
    voxel_mask = torch.rand(2, 1, 16, 16, 8) > 0.2
    for phi in PHIS:
        a = soft_dice_loss(probs, labels, phi=phi, voxel_mask=voxel_mask)
        b = soft_dice_loss(probs, onehot, phi=phi, voxel_mask=voxel_mask)
        assert abs(a.item() - b.item()) < 1e-6


def test_leaf_dice_is_fidons_mean_dice_up_to_a_constant():
    """Fidon's leaf Dice: per map 2 Σ ỹ y / (Σ ỹ² + Σ y² + 1e-5), the mean over all B·C maps, so a map
    without labels counts dice 0 (loss 1) with no gradient. Ours with ``squared=True, eps_nr=0,
    eps_dr=1e-5`` has the same gradient, and its value is smaller by (label-free maps) / (B·C)."""
    probs, labels, onehot = random_case(empty=(1, 3), seed=13)
    p, y = probs.detach().clone().requires_grad_(), onehot
    per_map = 2 * (p * y).sum((2, 3)) / ((p * p).sum((2, 3)) + (y * y).sum((2, 3)) + 1e-5)
    fidon = 1 - per_map.mean()
    fidon.backward()
    ours_p = probs.detach().clone().requires_grad_()
    ours = leaf_dice_loss(ours_p, labels, phi="I", squared=True, eps_nr=0.0, eps_dr=1e-5)
    ours.backward()
    label_free = int((y.sum((2, 3)) == 0).sum())
    assert label_free > 0
    assert ours.item() + label_free / per_map.numel() == pytest.approx(fidon.item(), abs=1e-12)
    torch.testing.assert_close(ours_p.grad, p.grad, rtol=0, atol=1e-12)
