"""Small examples worked by hand (values in the comments), one per loss."""

import math

import pytest
import torch

from nnunet_dicephi.losses import (
    exclusion_loss,
    generalized_dice_loss,
    jaccard_loss,
    leaf_dice_loss,
    lovasz_softmax_loss,
    marginal_cross_entropy,
    marginal_dice_loss,
    mime_constants,
    mime_loss,
    soft_dice_loss,
    tversky_loss,
)

# one image, background + one class, four voxels: ỹ_1 = [.9, .6, .2, .1], y_1 = [1, 1, 0, 0]
P1 = torch.tensor([0.9, 0.6, 0.2, 0.1], dtype=torch.float64)
PROBS = torch.stack((1 - P1, P1)).unsqueeze(0)  # (1, 2, 4)
LABELS = torch.tensor([[[1, 1, 0, 0]]])
EXACT = {"eps_nr": 0.0, "eps_dr": 0.0}


def test_dice():
    # I = 1.5, U = 2 + 1.8 = 3.8: 1 − 3 / 3.8
    assert soft_dice_loss(PROBS, LABELS, include_background=False, **EXACT).item() == pytest.approx(1 - 3 / 3.8)


def test_jaccard():
    # I / (U − I) = 1.5 / 2.3
    assert jaccard_loss(PROBS, LABELS, include_background=False, **EXACT).item() == pytest.approx(1 - 1.5 / 2.3)


def test_tversky():
    # FP = .2 + .1 = .3, FN = .1 + .4 = .5: 1.5 / (1.5 + .3·.3 + .7·.5) = 1.5 / 1.94
    loss = tversky_loss(PROBS, LABELS, alpha=0.3, beta=0.7, include_background=False, **EXACT)
    assert loss.item() == pytest.approx(1 - 1.5 / 1.94)
    # α = β = ½ is the Dice loss
    half = tversky_loss(PROBS, LABELS, alpha=0.5, beta=0.5, include_background=False, **EXACT)
    assert half.item() == pytest.approx(1 - 3 / 3.8)


def test_generalized_dice():
    # y_1 = [1, 0, 0, 0], y_0 = [0, 1, 1, 1]: weights 1/1² and 1/3²
    # I_1 = .9, U_1 = 2.8; I_0 = .4 + .8 + .9 = 2.1, U_0 = 3 + 2.2 = 5.2
    labels = torch.tensor([[[1, 0, 0, 0]]])
    expected = 1 - 2 * (0.9 + 2.1 / 9) / (2.8 + 5.2 / 9)
    assert generalized_dice_loss(PROBS, labels, phi="CI", **EXACT).item() == pytest.approx(expected)
    # with equal volumes the weights are equal and GDL is the all-class Dice of the image
    assert generalized_dice_loss(PROBS, LABELS, phi="CI", **EXACT).item() == pytest.approx(
        1 - 2 * (1.5 + 1.7) / (3.8 + 4.2)
    )


def test_generalized_dice_empty_class_takes_the_largest_weight():
    # class 1 empty: it gets the weight of class 0 (1/4²), i.e. the plain all-class Dice of the image
    labels = torch.zeros(1, 1, 4, dtype=torch.long)
    expected = 1 - 2 * (0.1 + 0.4 + 0.8 + 0.9) / (4 + 2.2 + 1.8)
    assert generalized_dice_loss(PROBS, labels, phi="CI", **EXACT).item() == pytest.approx(expected)


def test_leaf_dice_empties_the_empty_image():
    # second image: no label, ỹ = .5 everywhere: Dice Φ=I counts it as sDSC 0 (loss 1); leaf Dice
    # empties it: loss 0, still counted in the mean over both maps (Fidon's), or left out of it
    probs = torch.cat((PROBS, torch.full((1, 2, 4), 0.5, dtype=torch.float64)))
    labels = torch.cat((LABELS, torch.zeros(1, 1, 4, dtype=torch.long)))
    dice = soft_dice_loss(probs, labels, include_background=False, **EXACT)
    leaf = leaf_dice_loss(probs, labels, include_background=False, **EXACT)
    labelled = leaf_dice_loss(probs, labels, include_background=False, mean_over="labelled", **EXACT)
    assert dice.item() == pytest.approx(((1 - 3 / 3.8) + 1) / 2)
    assert leaf.item() == pytest.approx(((1 - 3 / 3.8) + 0) / 2)
    assert labelled.item() == pytest.approx(1 - 3 / 3.8)


def test_mime():
    # ω_1 = −2·y + .5·(1 − y): −2·1.5 + .5·.3 = −2.85
    loss = mime_loss(PROBS, LABELS, torch.tensor([0.0, 2.0]), torch.tensor([0.0, 0.5]), include_background=False)
    assert loss.item() == pytest.approx(-2.85)
    probs = PROBS.clone().requires_grad_()
    mime_loss(probs, LABELS, torch.tensor([0.0, 2.0]), torch.tensor([0.0, 0.5]), include_background=False).backward()
    assert probs.grad[0, 1].tolist() == [-2.0, -2.0, 0.5, 0.5]


def test_mime_constants():
    a, b = mime_constants(torch.tensor([90.0, 10.0, 0.0]), 100)
    assert a.tolist() == pytest.approx([1 / 90, 1 / 10, 0.0])
    assert b.tolist() == pytest.approx([1 / 10, 1 / 90, 1 / 100])


def test_lovasz():
    # errors |y − ỹ| = [.1, .4, .2, .1]; sorted: .4 (y1), .2 (y0), .1, .1
    # Jaccard losses of the growing sets: 1/2, 2/3, 1, 1 → .4·.5 + .2·(1/6) + .1·(1/3) + .1·0
    loss = lovasz_softmax_loss(PROBS, LABELS, include_background=False)
    assert loss.item() == pytest.approx(0.2 + 0.2 / 6 + 0.1 / 3)


def test_marginal_cross_entropy():
    # logits [0, 1, 2], class 2 unannotated: a background voxel scores log((1 + e²) / (1 + e + e²))
    logits = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64).reshape(1, 3, 1).expand(1, 3, 2).contiguous()
    labels = torch.tensor([[[0, 1]]])
    annotated = torch.tensor([[True, True, False]])
    norm = 1 + math.e + math.e**2
    expected = (-math.log((1 + math.e**2) / norm) - math.log(math.e / norm)) / 2
    assert marginal_cross_entropy(logits, labels, annotated).item() == pytest.approx(expected)
    plain = (-math.log(1 / norm) - math.log(math.e / norm)) / 2
    assert marginal_cross_entropy(logits, labels).item() == pytest.approx(plain)


def test_marginal_cross_entropy_is_stable_for_huge_logits():
    logits = torch.tensor([[[-1e4], [0.0], [1e4]]])
    loss = marginal_cross_entropy(logits, torch.zeros(1, 1, 1, dtype=torch.long), torch.tensor([[True, True, False]]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_marginal_dice():
    # classes: 0, 1 (annotated), 2 (unannotated); ỹ_2 moves into background
    probs = torch.tensor([[[0.1, 0.2], [0.6, 0.1], [0.3, 0.7]]], dtype=torch.float64)  # (1, 3, 2)
    labels = torch.tensor([[[1, 0]]])
    annotated = torch.tensor([[True, True, False]])
    # merged background [.4, .9], y_0 = [0, 1]: 2·.9 / (1 + 1.3); class 1: 2·.6 / (1 + .7)
    expected = 1 - (1.8 / 2.3 + 1.2 / 1.7) / 2
    assert marginal_dice_loss(probs, labels, annotated, **EXACT).item() == pytest.approx(expected)


def test_exclusion():
    # class 2 unannotated, labelled region of annotated class 1: voxels 0, 1
    # ỹ_2 = [.5, .1, .3, 0]: 2·.6 / (2 + .9)
    p2 = torch.tensor([0.5, 0.1, 0.3, 0.0], dtype=torch.float64)
    p1 = torch.tensor([0.4, 0.8, 0.1, 0.2], dtype=torch.float64)
    probs = torch.stack((1 - p1 - p2, p1, p2)).unsqueeze(0)
    annotated = torch.tensor([[True, True, False]])
    assert exclusion_loss(probs, LABELS, annotated, eps=0.0).item() == pytest.approx(1.2 / 2.9)
    # nothing to exclude when every class is annotated
    assert exclusion_loss(probs, LABELS, torch.ones(1, 3, dtype=torch.bool)).item() == 0.0
