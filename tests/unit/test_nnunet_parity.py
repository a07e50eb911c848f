"""Equality with nnU-Net v2's own losses (value up to nnU-Net's constant offset, and gradients)."""

import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1

from nnunet_dicephi.losses import DiceCELoss, DiceLoss

# nnU-Net's Dice returns −mean(sDSC); ours is 1 − mean(sDSC), the paper's DL. Same gradient.


def _assert_same(theirs, ours, logits, target):
    """Same gradient, and our value is nnU-Net's plus 1."""
    x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    a, b = theirs(x1, target), ours(x2, target)
    a.backward()
    b.backward()
    assert abs((a.item() + 1.0) - b.item()) < 1e-6
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-5, atol=1e-9)


def _case(classes=4, ignore=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, classes, 9, 10, 6, generator=g)
    labels = torch.randint(0, classes + int(ignore), (3, 1, 9, 10, 6), generator=g).float()
    return logits, labels


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("do_bg", [False, True])
@pytest.mark.parametrize("smooth", [0.0, 1e-5, 1.0, 100.0])
@pytest.mark.parametrize("ignore", [False, True])
def test_dice_and_ce_equal_nnunet(batch_dice, do_bg, smooth, ignore):
    logits, labels = _case(ignore=ignore, seed=int(smooth * 7) + 2 * batch_dice + do_bg)
    ignore_label = 4 if ignore else None
    theirs = DC_and_CE_loss(
        {"batch_dice": batch_dice, "smooth": smooth, "do_bg": do_bg, "ddp": False},
        {},
        weight_ce=1,
        weight_dice=1,
        ignore_label=ignore_label,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
    ours = DiceCELoss(
        DiceLoss(phi="BI" if batch_dice else "I", eps_nr=smooth, include_background=do_bg, ignore_label=ignore_label)
    )
    _assert_same(theirs, ours, logits, labels)


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("do_bg", [False, True])
@pytest.mark.parametrize("smooth", [0.0, 1e-5, 1.0])
def test_dice_alone_equals_memory_efficient_soft_dice(batch_dice, do_bg, smooth):
    logits, labels = _case(classes=3, seed=5)
    theirs = MemoryEfficientSoftDiceLoss(
        apply_nonlin=softmax_helper_dim1, batch_dice=batch_dice, do_bg=do_bg, smooth=smooth, ddp=False
    )
    ours = DiceLoss(phi="BI" if batch_dice else "I", eps_nr=smooth, include_background=do_bg)
    _assert_same(theirs, ours, logits, labels)


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("ignore", [False, True])
def test_region_training_equals_dc_and_bce(batch_dice, ignore):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 8, 9, generator=g)
    regions = (torch.rand(2, 3, 8, 9, generator=g) > 0.6).float()
    target = regions
    if ignore:
        ignore_channel = (torch.rand(2, 1, 8, 9, generator=g) > 0.8).float()
        target = torch.cat((regions, ignore_channel), 1)
    theirs = DC_and_BCE_loss(
        {},
        {"batch_dice": batch_dice, "do_bg": True, "smooth": 1e-5, "ddp": False},
        use_ignore_label=ignore,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
    # With an ignore channel nnU-Net divides the masked BCE sum by the number of voxels, not of
    # (region, voxel) pairs, so its CE is R times a mean; ours is a mean in both cases.
    ours = DiceCELoss(
        DiceLoss(
            phi="BI" if batch_dice else "I", eps_nr=1e-5, nonlinearity="sigmoid", ignore_label=1 if ignore else None
        ),
        weight_ce=3.0 if ignore else 1.0,
    )
    _assert_same(theirs, ours, logits, target)
