"""Bad arguments raise ValueError naming the argument and what is accepted."""

import pytest
import torch

from nnunet_dicephi.losses import (
    DiceCELoss,
    DiceLoss,
    ExclusionLoss,
    MarginalDiceLoss,
    MimeLoss,
    TverskyLoss,
    exclusion_loss,
    lovasz_softmax_loss,
    marginal_cross_entropy,
    marginal_dice_loss,
    soft_dice_loss,
)

PROBS = torch.rand(2, 3, 4, 4).softmax(1)
LABELS = torch.randint(0, 3, (2, 1, 4, 4))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"phi": "B"}, r"phi must be one of 'I', 'CI', 'BI', 'BCI'.*got 'B'"),
        ({"phi": "bi"}, r"phi must be one of"),
        ({"eps_nr": -1.0}, r"eps_nr must be a finite number >= 0"),
        ({"eps_dr": float("nan")}, r"eps_dr must be a finite number >= 0"),
        ({"eps_dr": float("inf")}, r"eps_dr must be a finite number >= 0"),
        ({"eps_nr": torch.tensor([1.0, 2.0])}, r"eps_nr as a tensor must have shape \(C,\) = \(3,\)"),
        ({"eps_nr": torch.tensor([1.0, -2.0, 0.0])}, r"eps_nr must hold finite values >= 0"),
        ({"eps_nr": "small"}, r"eps_nr must be a non-negative number or a \(C,\) tensor"),
        ({"annotated": torch.ones(3, 2, dtype=torch.bool)}, r"annotated must have shape \(B, C\) = \(2, 3\)"),
        ({"annotated": torch.ones(2, 3)}, r"annotated must have dtype torch.bool"),
        ({"voxel_mask": torch.ones(2, 4, 4)}, r"voxel_mask must be a tensor of shape \(B, 1, \*spatial\)"),
        ({"class_weights": torch.ones(4)}, r"class_weights must be a tensor of shape \(C,\) = \(3,\)"),
        ({"class_weights": torch.tensor([1.0, -1.0, 1.0])}, r"class_weights must be finite and >= 0"),
    ],
)
def test_soft_dice_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        soft_dice_loss(PROBS, LABELS, **kwargs)


def test_target_shape_and_values():
    with pytest.raises(ValueError, match=r"target must have the same shape as probs"):
        soft_dice_loss(PROBS, torch.rand(2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"integer label map target must have shape \(B, 1, \*spatial\)"):
        soft_dice_loss(PROBS, torch.randint(0, 3, (2, 4, 4)))
    with pytest.raises(ValueError, match=r"label values in \[0, 3\].*must lie in \[0, 2\]"):
        soft_dice_loss(PROBS, torch.where(LABELS == 2, 3, LABELS))
    with pytest.raises(ValueError, match=r"label values in \[-1, 2\]"):
        soft_dice_loss(PROBS, torch.where(LABELS == 1, -1, LABELS))
    with pytest.raises(ValueError, match=r"probs must be a floating-point tensor"):
        soft_dice_loss(LABELS, LABELS)
    with pytest.raises(ValueError, match=r"at least one spatial axis"):
        soft_dice_loss(torch.rand(2, 3), torch.rand(2, 3))


def test_module_arguments():
    with pytest.raises(ValueError, match=r"phi must be one of"):
        DiceLoss(phi="IB")
    with pytest.raises(ValueError, match=r"nonlinearity must be one of 'softmax', 'sigmoid'"):
        DiceLoss(nonlinearity="relu")
    with pytest.raises(ValueError, match=r"sigmoid \(region\) outputs have none"):
        DiceLoss(nonlinearity="sigmoid", include_background=False)
    with pytest.raises(ValueError, match=r"ignore_label must be an int or None"):
        DiceLoss(ignore_label=2.5)
    with pytest.raises(ValueError, match=r"alpha must be a number >= 0"):
        TverskyLoss(alpha=-0.1)
    with pytest.raises(ValueError, match=r"a must be a finite number >= 0"):
        MimeLoss(a=torch.tensor([1.0, -1.0]), b=torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"MarginalDiceLoss needs nonlinearity='softmax'"):
        MarginalDiceLoss(nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"ExclusionLoss needs nonlinearity='softmax'"):
        ExclusionLoss(nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"region_loss must be one of this package's"):
        DiceCELoss(torch.nn.MSELoss())


def test_module_call_arguments():
    logits = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"target must be nnU-Net's label map of shape \(B, 1, \*spatial\)"):
        DiceLoss()(logits, LABELS[:, 0])
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\]"):
        DiceLoss()(logits, LABELS + 1)
    with pytest.raises(ValueError, match=r"one-hot region tensor of shape \(2, 4, 4, 4\)"):
        DiceLoss(nonlinearity="sigmoid", ignore_label=1)(logits, torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"annotated must have shape"):
        DiceLoss()(logits, LABELS, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"eps_nr has 4 per-class values but the network has 3 output channels"):
        DiceLoss(eps_nr=torch.ones(4))(logits, LABELS)


def test_other_functions():
    with pytest.raises(ValueError, match=r"classes must be one of 'present', 'all'"):
        lovasz_softmax_loss(PROBS, LABELS, classes="some")
    with pytest.raises(ValueError, match=r"annotated must be a \(B, C\) bool tensor for marginal_dice_loss"):
        marginal_dice_loss(PROBS, LABELS, None)
    with pytest.raises(ValueError, match=r"annotated must be a \(B, C\) bool tensor for exclusion_loss"):
        exclusion_loss(PROBS, LABELS, None)
    with pytest.raises(ValueError, match=r"marginal_cross_entropy needs an integer label map"):
        marginal_cross_entropy(torch.randn(2, 3, 4, 4), PROBS)
