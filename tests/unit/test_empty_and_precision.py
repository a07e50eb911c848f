"""Empty subsets, all-empty and all-unannotated batches, saturated logits: finite at every accepted ε and precision.

ε = 0, the default 1e-7 and a heuristic-sized per-class ε; float32, fp16 and bf16 logits, with and without
autocast. The losses compute in float32 whatever the logits' dtype; ε settings without a lower bound are refused.
"""

import pytest
import torch
import torch.nn.functional as F

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
    generalized_dice_loss,
    jaccard_loss,
    soft_dice_loss,
    tversky_loss,
)

PHIS = ["I", "CI", "BI", "BCI"]
ZERO = {"eps_nr": 0.0, "eps_dr": 0.0}
HEURISTIC = torch.tensor([40.0, 6.0, 0.5])  # an expected labelled volume per class and map, as the trainers'
EPS_SETTINGS = {
    "eps0": ZERO,
    "default": {},  # 1e-7: on an empty map predicted empty, ∂L/∂ỹ ≈ −1/ε, beyond fp16's range
    "heuristic": {"eps_nr": HEURISTIC, "eps_dr": HEURISTIC, "eps_per": "map"},
}


def _overlap_modules(eps: dict, phis=PHIS, include_background: bool = False):
    """Every overlap loss at one ε: each for every Φ given, background as given."""
    for phi in phis:
        common = dict(phi=phi, include_background=include_background, **eps)
        tag = f"{phi}-bg{include_background}"
        yield f"dice-{tag}", DiceLoss(**common)
        yield f"vnet-{tag}", VNetDiceLoss(**common)
        yield f"leaf-{tag}", LeafDiceLoss(**common)
        yield f"gdl-{tag}", GeneralizedDiceLoss(**common)
        yield f"jaccard-{tag}", JaccardLoss(**common)
        yield f"tversky-{tag}", TverskyLoss(**common)
        yield f"marginal-{tag}", MarginalDiceLoss(**common)
        yield f"dicece-{tag}", DiceCELoss(DiceLoss(**common))


def _other_modules():
    for per_image in (True, False):
        for classes in ("present", "all"):
            yield f"lovasz-{per_image}-{classes}", LovaszSoftmaxLoss(per_image=per_image, classes=classes)
    yield "mime", MimeLoss(a=torch.tensor([0.0, 0.5, 0.2]), b=0.01)
    yield "mime-numbers", MimeLoss(a=1.0, b=0.1)
    yield "exclusion", ExclusionLoss(eps=0.0)
    yield "exclusion-default-eps", ExclusionLoss()
    yield "ce", CrossEntropyLoss()
    yield "wce", WeightedCrossEntropyLoss(class_weights=torch.tensor([0.4, 1.5, 6.0]))


def _modules():
    for include_background in (False, True):
        yield from _overlap_modules(ZERO, include_background=include_background)
    for eps_name in ("default", "heuristic"):  # nnU-Net's step: fp16 autocast, GradScaler, the trainers' ε
        for phi in PHIS:
            yield f"dice-{phi}-{eps_name}", DiceLoss(phi=phi, **EPS_SETTINGS[eps_name])
    yield from _other_modules()


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


def _half_precision_modules():
    """Every loss at every ε setting: Dice for every Φ, the other overlap losses at Φ = I (one subset per map)."""
    for eps_name, eps in EPS_SETTINGS.items():
        for phi in PHIS:
            yield f"dice-{phi}-{eps_name}", DiceLoss(phi=phi, **eps)
        for name, module in _overlap_modules(eps, phis=("I",)):
            if not name.startswith("dice-"):
                yield f"{name}-{eps_name}", module
    yield from _other_modules()
    sigmoid = {"nonlinearity": "sigmoid"}
    for phi in PHIS:
        yield f"sigmoid-dice-{phi}", DiceLoss(phi=phi, **sigmoid)
    yield "sigmoid-dice-BI-heuristic", DiceLoss(phi="BI", **EPS_SETTINGS["heuristic"], **sigmoid)
    yield "sigmoid-dicece-I", DiceCELoss(DiceLoss(phi="I", **sigmoid))
    yield "sigmoid-gdl", GeneralizedDiceLoss(**sigmoid)
    yield "sigmoid-tversky-heuristic", TverskyLoss(**EPS_SETTINGS["heuristic"], **sigmoid)
    yield "sigmoid-ce", CrossEntropyLoss(**sigmoid)


HALF_MODULES = dict(_half_precision_modules())


def _partial_batch():
    """Class 2 not annotated in image 0, where class 1 is labelled: the exclusion and marginal terms act."""
    labels = torch.randint(0, 3, (2, 1, 6, 5), generator=torch.Generator().manual_seed(6))
    labels[0][labels[0] == 2] = 0
    return labels, torch.tensor([[True, True, False], [True, True, True]])


HALF_BATCHES = {
    "one_image_empty": BATCHES["one_image_empty"],
    "all_empty": BATCHES["all_empty"],
    "partial": _partial_batch(),
}
HALF_PRECISIONS = {
    "fp16-logits": (torch.float16, False),  # half-precision logits passed straight in
    "bf16-logits": (torch.bfloat16, False),
    "fp16-autocast": (torch.float16, True),
    "bf16-autocast": (torch.bfloat16, True),
}


def _hard_logits(labels):
    """Logits that half precision cannot carry through a softmax, by name; label-map shaped ``(2, 3, 6, 5)``."""
    g = torch.Generator().manual_seed(5)

    def on_label(off: float, on: float):
        return torch.full((2, 3, 6, 5), off).scatter_(1, labels, on)

    return {
        "saturated": on_label(-80.0, 80.0) + torch.randn(2, 3, 6, 5, generator=g),
        "scaled-1e3": torch.randn(2, 3, 6, 5, generator=g) * 1e3,
        # off the label ỹ ≈ e^-69 ≈ 1e-30: a normal float32, 0 in fp16; at ε = 1e-7, ∂L/∂ỹ ≈ −1/ε there
        "tiny": on_label(-69.0, 0.0),
        "moderate": torch.randn(2, 3, 6, 5, generator=g),
    }


@pytest.mark.parametrize("precision", list(HALF_PRECISIONS))
@pytest.mark.parametrize("name", list(HALF_MODULES))
def test_half_precision_logits_are_computed_in_float32(name, precision, device):
    """fp16 and bf16 logits, with and without autocast, at every ε: the loss is the float32 loss of the
    same (rounded) logits, value and gradient, so finite wherever float32 is."""
    dtype, autocast = HALF_PRECISIONS[precision]
    module = HALF_MODULES[name].to(device)
    for batch, (labels, annotated) in HALF_BATCHES.items():
        target = labels
        if name.startswith("sigmoid"):  # region targets: one map per output channel
            target = F.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
        target = target.to(device)
        annotated = None if annotated is None else annotated.to(device)
        for kind, logits in _hard_logits(labels).items():
            half = logits.to(device, dtype)
            leaf = half.clone().requires_grad_()
            with torch.autocast(device.type, dtype=dtype, enabled=autocast):
                loss = module(leaf, target, annotated)
            loss.backward()
            reference = half.float().requires_grad_()
            expected = module(reference, target, annotated)
            expected.backward()
            where = f"{name} on {batch}, {kind} logits"
            assert loss.dtype == torch.float32, where
            assert torch.isfinite(loss), f"{where}: {loss}"
            assert torch.isfinite(leaf.grad).all(), where
            torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7, msg=where)
            torch.testing.assert_close(leaf.grad, reference.grad.to(dtype), rtol=0, atol=0, msg=where)


def test_float64_logits_stay_float64():
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    loss = DiceCELoss(DiceLoss(phi="BI"))(logits, torch.randint(0, 3, (2, 1, 4, 4)))
    loss.backward()
    assert loss.dtype == torch.float64 and logits.grad.dtype == torch.float64


UNBOUNDED = r"eps_nr > 0 with eps_dr = 0|with eps_dr = 0 makes the loss unbounded below.*use eps_dr > 0, or eps_nr = 0"


@pytest.mark.parametrize("loss", [soft_dice_loss, jaccard_loss, tversky_loss, generalized_dice_loss])
def test_functions_refuse_eps_dr_zero_with_eps_nr_positive(loss):
    probs = torch.randn(2, 3, 4, 4).softmax(1)
    labels = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=UNBOUNDED):
        loss(probs, labels, eps_nr=1.0, eps_dr=0.0)
    per_class = torch.tensor([1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match=r"class index \[1\]"):  # the heuristic's form: one ε per class
        loss(probs, labels, eps_nr=torch.tensor([1.0, 1.0, 1.0]), eps_dr=per_class, eps_per="map")
    with pytest.raises(ValueError, match=r"class index \[0, 1, 2\]"):
        loss(probs, labels, eps_nr=1.0, eps_dr=torch.zeros(3))
    # where eps_nr is 0 too, or the class is left out with the background, the loss is bounded
    loss(probs, labels, eps_nr=torch.tensor([0.0, 0.0, 1.0]), eps_dr=per_class, eps_per="map")
    loss(probs, labels, eps_nr=torch.ones(3), eps_dr=torch.tensor([0.0, 1.0, 1.0]), include_background=False)


@pytest.mark.parametrize(
    "module", [DiceLoss, VNetDiceLoss, LeafDiceLoss, GeneralizedDiceLoss, JaccardLoss, TverskyLoss]
)
def test_modules_refuse_eps_dr_zero_with_eps_nr_positive_at_construction(module):
    with pytest.raises(ValueError, match=UNBOUNDED):
        module(eps_nr=1.0, eps_dr=0.0)
    with pytest.raises(ValueError, match=r"class index \[2\].*use eps_dr > 0, or eps_nr = 0"):
        module(eps_nr=torch.tensor([5.0, 3.0, 0.5]), eps_dr=torch.tensor([5.0, 3.0, 0.0]), eps_per="map")
    with pytest.raises(ValueError, match=UNBOUNDED):
        DiceCELoss(module(eps_nr=1e-5, eps_dr=0.0))
    module(eps_nr=torch.tensor([2.0, 0.0, 0.5]), eps_dr=torch.tensor([0.0, 0.0, 0.5]))  # background left out


def test_eps_nr_above_eps_dr_is_bounded_by_their_ratio():
    """Accepted: on an empty map predicted empty the ratio is ε_nr/ε_dr > 1, so the loss goes below 0,
    but never below 1 − ε_nr/ε_dr, and its gradient stays finite."""
    logits = torch.full((2, 3, 6, 5), -69.0)
    logits[:, 0] = 0.0  # every foreground map empty and predicted at ỹ ≈ 1e-30
    logits.requires_grad_()
    labels = torch.zeros(2, 1, 6, 5, dtype=torch.long)
    for phi in PHIS:
        loss = DiceLoss(phi=phi, eps_nr=3.0, eps_dr=1.0)(logits, labels)
        loss.backward()
        assert loss.item() == pytest.approx(1 - 3.0, rel=1e-6)
        assert torch.isfinite(logits.grad).all()


def test_mime_with_numbers_as_constants():
    """A number applies to every class; dropping the background leaves it whole."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 6, 5, generator=g, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 6, 5), generator=g)
    for include_background in (False, True):
        numbers = MimeLoss(a=1.0, b=0.1, include_background=include_background)
        tensors = MimeLoss(a=torch.full((3,), 1.0), b=torch.full((3,), 0.1), include_background=include_background)
        loss = numbers(logits, labels)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
        torch.testing.assert_close(loss, tensors(logits, labels))
    mixed = MimeLoss(a=torch.tensor([0.0, 0.5, 0.2]), b=0.1)
    torch.testing.assert_close(
        mixed(logits, labels), MimeLoss(a=torch.tensor([0.0, 0.5, 0.2]), b=torch.full((3,), 0.1))(logits, labels)
    )


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
