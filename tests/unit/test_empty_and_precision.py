"""ε = 0 with empty subsets, all-empty and all-unannotated batches: finite in fp32 and under bf16 autocast."""

import pytest
import torch

from nnunet_dicephi.losses import (
    CrossEntropyLoss,
    DiceCELoss,
    DiceLoss,
    ExclusionLoss,
    GeneralizedDiceLoss,
    JaccardLoss,
    LeafDiceLoss,
    LovaszSoftmaxLoss,
    MarginalDiceLoss,
    MimeLoss,
    TverskyLoss,
    VNetDiceLoss,
    WeightedCrossEntropyLoss,
    soft_dice_loss,
)

PHIS = ["I", "CI", "BI", "BCI"]
ZERO = {"eps_nr": 0.0, "eps_dr": 0.0}


def _modules():
    for phi in PHIS:
        for include_background in (False, True):
            common = dict(phi=phi, include_background=include_background, **ZERO)
            yield f"dice-{phi}-bg{include_background}", DiceLoss(**common)
            yield f"vnet-{phi}-bg{include_background}", VNetDiceLoss(**common)
            yield f"leaf-{phi}-bg{include_background}", LeafDiceLoss(**common)
            yield f"gdl-{phi}-bg{include_background}", GeneralizedDiceLoss(**common)
            yield f"jaccard-{phi}-bg{include_background}", JaccardLoss(**common)
            yield f"tversky-{phi}-bg{include_background}", TverskyLoss(**common)
            yield f"marginal-{phi}-bg{include_background}", MarginalDiceLoss(**common)
            yield f"dicece-{phi}-bg{include_background}", DiceCELoss(DiceLoss(**common))
    for per_image in (True, False):
        for classes in ("present", "all"):
            yield f"lovasz-{per_image}-{classes}", LovaszSoftmaxLoss(per_image=per_image, classes=classes)
    yield "mime", MimeLoss(a=torch.tensor([0.0, 0.5, 0.2]), b=0.01)
    yield "exclusion", ExclusionLoss(eps=0.0)
    yield "ce", CrossEntropyLoss()
    yield "wce", WeightedCrossEntropyLoss(class_weights=torch.tensor([0.4, 1.5, 6.0]))


MODULES = dict(_modules())


def _batches():
    """(label map, annotated) pairs for the awkward cases."""
    g = torch.Generator().manual_seed(0)
    some = torch.randint(0, 3, (2, 1, 6, 5), generator=g)
    some[1] = 0  # batch element 1: everything background (foreground subsets empty)
    yield "one_image_empty", some, torch.tensor([[True, True, True], [True, True, False]])
    yield "all_empty", torch.zeros(2, 1, 6, 5, dtype=torch.long), None
    yield "all_unannotated", torch.randint(0, 3, (2, 1, 6, 5), generator=g), torch.zeros(2, 3, dtype=torch.bool)
    only_bg = torch.zeros(2, 1, 6, 5, dtype=torch.long)
    yield "only_background_annotated", only_bg, torch.tensor([[True, False, False], [True, False, False]])


BATCHES = {name: (labels, annotated) for name, labels, annotated in _batches()}


PRECISIONS = {"fp32": None, "bf16-autocast": torch.bfloat16, "fp16-autocast-gradscaler": torch.float16}
# fp16/bf16 logits round to 11/8 significant bits; the sums stay in float32
TOLERANCE = {"fp32": 0.0, "bf16-autocast": 3e-2, "fp16-autocast-gradscaler": 4e-3}


def _loss_and_gradient(module, logits, labels, annotated, precision, device):
    """One step as nnU-Net trains: half-precision network output under autocast, scaled backward."""
    logits = logits.detach().to(device, copy=True).requires_grad_()
    labels = labels.to(device)
    annotated = None if annotated is None else annotated.to(device)
    module = module.to(device)
    dtype = PRECISIONS[precision]
    if dtype is None:
        loss = module(logits, labels, annotated)
        loss.backward()
        return loss, logits.grad
    with torch.autocast(device.type, dtype=dtype):
        loss = module(logits.to(dtype), labels, annotated)
    if dtype == torch.float16:  # nnU-Net's GradScaler with its default initial scale 2**16
        scaler = torch.amp.GradScaler(device.type)
        scaler.scale(loss).backward()
        return loss, logits.grad / scaler.get_scale()
    loss.backward()
    return loss, logits.grad


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_finite_loss_and_gradient_close_to_fp32(name, batch, precision, device):
    labels, annotated = BATCHES[batch]
    g = torch.Generator().manual_seed(3)
    # saturated logits push probabilities of absent classes to exactly 0 in half precision
    saturated = torch.full((2, 3, 6, 5), -80.0).scatter_(1, labels, 80.0) + torch.randn(2, 3, 6, 5, generator=g)
    moderate = torch.randn(2, 3, 6, 5, generator=g)
    module = MODULES[name]
    for logits in (saturated, moderate):
        loss, grad = _loss_and_gradient(module, logits, labels, annotated, precision, device)
        assert loss.dtype == torch.float32
        assert torch.isfinite(loss), f"{name} on {batch}: {loss}"
        assert torch.isfinite(grad).all(), f"{name} on {batch}"
        if precision != "fp32":
            ref_loss, ref_grad = _loss_and_gradient(module, logits, labels, annotated, "fp32", device)
            tol = TOLERANCE[precision]
            assert abs(loss.item() - ref_loss.item()) <= tol * max(1.0, abs(ref_loss.item())), (name, batch)
            if name.startswith("lovasz"):
                continue  # its gradient follows the sort order of the errors, which rounding reorders
            scale = ref_grad.abs().max().item()
            assert (grad - ref_grad).abs().max().item() <= tol * max(scale, 1e-3) * 4, (name, batch)


@pytest.mark.parametrize("phi", PHIS)
def test_value_of_an_empty_subset(phi):
    """Documented: with ε_nr = ε_dr = 0, empty labels and zero probabilities count as a perfect match
    (contribute 0 to the loss); with ε > 0 an empty subset contributes 1 − ε_nr / (Σỹ + ε_dr)."""
    probs = torch.zeros(2, 2, 4, dtype=torch.float64)
    probs[:, 0] = 1.0
    labels = torch.zeros(2, 1, 4, dtype=torch.long)
    loss = soft_dice_loss(probs, labels, phi=phi, eps_nr=0.0, eps_dr=0.0, include_background=False)
    assert loss.item() == 0.0
    probs = torch.full((1, 2, 4), 0.5, dtype=torch.float64)
    loss = soft_dice_loss(
        probs[:, :], torch.zeros(1, 1, 4, dtype=torch.long), phi="I", eps_nr=3.0, eps_dr=3.0, include_background=False
    )
    assert loss.item() == pytest.approx(1 - 3.0 / (2.0 + 3.0))


def test_all_unannotated_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = DiceLoss()(logits, torch.randint(0, 3, (2, 1, 4, 4)), torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert logits.grad.abs().max() == 0.0


def test_bf16_autocast_matches_fp32_sums():
    """Sums stay in float32 under autocast, so a 64³ volume does not lose the loss to rounding."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 32, 32, 32, generator=g)
    labels = torch.randint(0, 4, (2, 1, 32, 32, 32), generator=g)
    for phi in PHIS:
        full = DiceLoss(phi=phi)(logits, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = DiceLoss(phi=phi)(logits.to(torch.bfloat16), labels)
        assert abs(full.item() - half.item()) < 5e-3
