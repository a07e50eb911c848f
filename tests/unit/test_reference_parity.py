"""The same number as MONAI, segmentation_models_pytorch (SMP) and kornia for the same setting.

Values and gradients in float64, to 1e-6, on random batches with a class absent from one image.
Where a convention differs, the test maps our arguments to the reference's and says how:

* MONAI's ``jaccard=True`` keeps Dice's factor 2 in numerator and denominator, so its smoothing
  counts twice: MONAI ``smooth_nr, smooth_dr`` = our ``2 ε_nr, 2 ε_dr``;
* MONAI's Generalized Dice adds its smoothing to the weighted sums, ours to sums whose weights have
  mean 1 per subset (ε stays a voxel count); with ε = 0 the two are equal, empty classes included
  (both give them the largest weight of the image);
* SMP's Lovász takes B×C×H×W logits, applies the softmax itself and runs in float32 only.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from nnunet_dicephi import losses as L

with warnings.catch_warnings():  # they import modules that warn about deprecated torch APIs
    warnings.simplefilter("ignore")
    import kornia.losses as kornia_losses
    import monai.losses as monai_losses
    import segmentation_models_pytorch.losses as smp_losses

CLASSES = 4


def _batch(seed: int = 0, spatial=(6, 7, 5)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, CLASSES, *spatial, generator=g, dtype=torch.float64)
    labels = torch.randint(0, CLASSES, (3, 1, *spatial), generator=g)
    labels[1][labels[1] == 2] = 0  # class 2 absent from image 1
    return logits, labels


def _value_and_grad(loss_fn, logits, *args):
    leaf = logits.detach().clone().requires_grad_()
    value = loss_fn(leaf, *args)
    value.backward()
    return value.detach(), leaf.grad


def _assert_same(ours, theirs):
    torch.testing.assert_close(ours[0], theirs[0].to(ours[0].dtype), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("phi", ["I", "BI"])
@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize(("eps_nr", "eps_dr"), [(1e-5, 1e-5), (0.0, 1.0), (2.0, 3.0)])
def test_dice_equals_monai(phi, include_background, eps_nr, eps_dr):
    logits, labels = _batch()
    ours = L.DiceLoss(phi=phi, eps_nr=eps_nr, eps_dr=eps_dr, include_background=include_background)
    theirs = monai_losses.DiceLoss(
        softmax=True,
        to_onehot_y=True,
        include_background=include_background,
        smooth_nr=eps_nr,
        smooth_dr=eps_dr,
        batch=phi == "BI",
    )
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels))


@pytest.mark.parametrize("phi", ["I", "BI"])
@pytest.mark.parametrize("include_background", [False, True])
def test_class_weights_equal_monai_weight(phi, include_background):
    """Each subset's term weighed by its class's weight; MONAI's weight lists the classes it keeps."""
    logits, labels = _batch(11)
    weights = torch.tensor([0.7, 1.5, 0.25, 2.0], dtype=torch.float64)
    ours = L.DiceLoss(phi=phi, eps_nr=1e-5, class_weights=weights, include_background=include_background)
    theirs = monai_losses.DiceLoss(
        softmax=True,
        to_onehot_y=True,
        include_background=include_background,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        batch=phi == "BI",
        weight=weights if include_background else weights[1:],
    )
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels))
    inside = L.DiceLoss(phi=phi, eps_nr=1e-5, class_weights=weights, weighting="inside")
    assert abs(_value_and_grad(inside, logits, labels)[0] - _value_and_grad(theirs, logits, labels)[0]) > 1e-3


@pytest.mark.parametrize("smooth", [0.0, 1.0, 5.0])
def test_smp_dice_is_leaf_dice_over_the_batch(smooth):
    """SMP's multiclass ``DiceLoss`` is Φ = BI with absent classes zeroed but counted: leaf Dice Φ = BI
    averaged over every class, background included, ε = 2·smooth (its Tversky form halves the sums)."""
    logits, labels = _batch(12)
    labels[labels == 3] = 1  # class 3 absent from the whole batch
    ours = L.LeafDiceLoss(phi="BI", eps_nr=2 * smooth, eps_dr=2 * smooth, include_background=True)
    theirs = smp_losses.DiceLoss(mode="multiclass", smooth=smooth, eps=0.0)
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels[:, 0]))


@pytest.mark.parametrize("phi", ["I", "BI"])
def test_squared_denominator_equals_monai_squared_pred(phi):
    logits, labels = _batch(1)
    ours = L.VNetDiceLoss(phi=phi, eps_nr=1e-5, eps_dr=1e-5)
    theirs = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=True, include_background=False, squared_pred=True, batch=phi == "BI"
    )
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels))


@pytest.mark.parametrize("phi", ["I", "BI"])
def test_jaccard_equals_monai_with_half_its_smoothing(phi):
    logits, labels = _batch(2)
    ours = L.JaccardLoss(phi=phi, eps_nr=0.5, eps_dr=1.5)
    theirs = monai_losses.DiceLoss(
        softmax=True,
        to_onehot_y=True,
        include_background=False,
        jaccard=True,
        smooth_nr=1.0,
        smooth_dr=3.0,
        batch=phi == "BI",
    )
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels))


@pytest.mark.parametrize("phi", ["I", "BI"])
def test_sigmoid_regions_equal_monai(phi):
    logits, _ = _batch(3)
    g = torch.Generator().manual_seed(3)
    regions = (torch.rand(logits.shape, generator=g) > 0.7).double()
    ours = L.DiceLoss(phi=phi, eps_nr=1e-5, nonlinearity="sigmoid")
    theirs = monai_losses.DiceLoss(sigmoid=True, include_background=True, batch=phi == "BI")
    _assert_same(_value_and_grad(ours, logits, regions), _value_and_grad(theirs, logits, regions))


@pytest.mark.parametrize("phi", ["I", "BI"])
def test_ignore_label_equals_monai_ignore_index(phi):
    """nnU-Net's ignore label is the value C; MONAI's ``ignore_index`` outside [0, C) masks those voxels."""
    logits, labels = _batch(4)
    labels[:, :, :2] = CLASSES
    ours = L.DiceLoss(phi=phi, eps_nr=1e-5, ignore_label=CLASSES)
    theirs = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=True, include_background=False, batch=phi == "BI", ignore_index=CLASSES
    )
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels))


@pytest.mark.parametrize("phi", ["CI", "BCI"])
def test_generalized_dice_equals_monai_at_zero_smoothing(phi):
    logits, labels = _batch(5)
    ours = L.GeneralizedDiceLoss(phi=phi, eps_nr=0.0, eps_dr=0.0, include_background=True)
    theirs = monai_losses.GeneralizedDiceLoss(
        softmax=True, to_onehot_y=True, include_background=True, smooth_nr=0.0, smooth_dr=0.0, batch=phi == "BCI"
    )
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels))


def test_generalized_dice_smoothing_is_per_mean_weight():
    """The documented mapping: MONAI's smoothing is ours times the mean of the image's raw weights
    (ours adds ε to sums whose weights have mean 1, MONAI to the raw weighted sums)."""
    logits, labels = _batch(6)
    logits, labels = logits[1:2], labels[1:2]  # one image: MONAI takes one smoothing for all images
    volumes = torch.stack([(labels == c).sum() for c in range(CLASSES)]).double()
    raw = torch.where(volumes > 0, 1.0 / volumes.clamp_min(1) ** 2, 0.0)
    raw = torch.where(volumes > 0, raw, raw.max())  # MONAI's (and our) weight of an absent class
    eps = 3.0
    ours = L.GeneralizedDiceLoss(phi="CI", eps_nr=eps, eps_dr=eps, include_background=True)
    smooth = eps * raw.mean().item()
    theirs = monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, smooth_nr=smooth, smooth_dr=smooth)
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels))
    same_number = monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, smooth_nr=eps, smooth_dr=eps)
    assert abs(ours(logits, labels).item() - same_number(logits, labels).item()) > 1e-3


def test_generalized_dice_on_an_image_without_labels_differs_from_monai():
    """Background left out, an image with no foreground label: MONAI's weights are all zero, so the
    image adds 0 and no gradient (NaN at smoothing 0); ours weighs its classes equally, so it is the
    plain Dice of the image and pushes its false positives down (an empty map is learnt)."""
    logits, labels = _batch(7)
    labels[1] = 0
    image = slice(1, 2)
    theirs = monai_losses.GeneralizedDiceLoss(
        softmax=True, to_onehot_y=True, include_background=False, smooth_nr=1e-5, smooth_dr=1e-5
    )
    value, grad = _value_and_grad(theirs, logits[image], labels[image])
    assert value.item() == 0.0 and grad.abs().max().item() == 0.0
    ours = L.GeneralizedDiceLoss(phi="CI", eps_nr=1e-5, eps_dr=1e-5)
    plain = L.DiceLoss(phi="CI", eps_nr=1e-5, eps_dr=1e-5)
    _assert_same(
        _value_and_grad(ours, logits[image], labels[image]), _value_and_grad(plain, logits[image], labels[image])
    )
    assert ours(logits[image], labels[image]).item() > 0.99
    # images with labels agree at ε = 0 (test_generalized_dice_equals_monai_at_zero_smoothing)


@pytest.mark.parametrize("phi", ["I", "BI"])
@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.5, 0.5), (0.9, 0.1)])
def test_tversky_equals_monai(phi, alpha, beta):
    logits, labels = _batch(7)
    ours = L.TverskyLoss(phi=phi, alpha=alpha, beta=beta, eps_nr=1e-5, eps_dr=1e-5)
    theirs = monai_losses.TverskyLoss(
        softmax=True, to_onehot_y=True, include_background=False, alpha=alpha, beta=beta, batch=phi == "BI"
    )
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels))


@pytest.mark.parametrize("phi", ["I", "BI"])
def test_dice_ce_equals_monai(phi):
    """MONAI's CE is over every class, its Dice without background here: ours the same way."""
    logits, labels = _batch(8)
    ours = L.DiceCELoss(L.DiceLoss(phi=phi, eps_nr=1e-5, eps_dr=1e-5))
    theirs = monai_losses.DiceCELoss(softmax=True, to_onehot_y=True, include_background=False, batch=phi == "BI")
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels))


def test_lovasz_defaults_and_preset_equal_smp_defaults():
    """The function's defaults and the TrainerLovasz module are Berman's (SMP's) default loss."""
    from nnunet_dicephi.loss_config import parse_trainer_name
    from nnunet_dicephi.trainers.base import build_level_loss

    logits, labels = _batch(10, spatial=(9, 11))
    logits = logits.float()
    theirs = _value_and_grad(smp_losses.LovaszLoss(mode="multiclass"), logits, labels[:, 0])
    preset = build_level_loss(
        parse_trainer_name("TrainerLovasz"), eps_nr=1e-7, eps_dr=1e-7, has_regions=False, ignore_label=None
    )
    _assert_same(_value_and_grad(preset, logits, labels), theirs)
    function = _value_and_grad(lambda z, y: L.lovasz_softmax_loss(z.softmax(1), y), logits, labels)
    _assert_same(function, theirs)


@pytest.mark.parametrize("per_image", [True, False])
def test_lovasz_equals_smp(per_image):
    """SMP's ``LovaszLoss`` is Berman's algorithm: background counted, classes present."""
    logits, labels = _batch(9, spatial=(9, 11))
    logits = logits.float()  # SMP's Lovász gradient is float32 only
    ours = L.LovaszSoftmaxLoss(per_image=per_image, include_background=True, classes="present")
    theirs = smp_losses.LovaszLoss(mode="multiclass", per_image=per_image)
    ours_result = _value_and_grad(ours, logits, labels)
    theirs_result = _value_and_grad(theirs, logits, labels[:, 0])
    _assert_same(ours_result, theirs_result)


@pytest.mark.parametrize("weighted", [False, True])
def test_kornia_micro_dice_is_phi_ci_with_weights_inside(weighted):
    """kornia's default ``average="micro"``: one Dice per image over all classes, weights inside the
    sums, ε on the denominator only: Φ = CI, background included, ``weighting="inside"``, ε_nr = 0."""
    logits, labels = _batch(13, spatial=(7, 6))
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64) if weighted else None
    ours = L.DiceLoss(
        phi="CI", eps_nr=0.0, eps_dr=1e-3, include_background=True, class_weights=weights, weighting="inside"
    )
    theirs = lambda z, y: kornia_losses.dice_loss(z, y[:, 0], average="micro", eps=1e-3, weight=weights)  # noqa: E731
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels))


def test_kornia_lovasz_is_per_image_over_every_class():
    """kornia's ``lovasz_softmax_loss`` sorts each image alone and counts absent classes too."""
    logits, labels = _batch(14, spatial=(9, 11))
    logits = logits.float()
    ours = L.LovaszSoftmaxLoss(per_image=True, classes="all", include_background=True)
    theirs = lambda z, y: kornia_losses.lovasz_softmax_loss(z, y[:, 0])  # noqa: E731
    _assert_same(_value_and_grad(ours, logits, labels), _value_and_grad(theirs, logits, labels))
