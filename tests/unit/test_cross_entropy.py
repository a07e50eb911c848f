"""The cross-entropy baselines: weighted marginal CE against torch and nnU-Net, weights, trainer names."""

import pytest
import torch
import torch.nn.functional as F
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss

from nnunet_dicephi import losses as L
from nnunet_dicephi.loss_config import PRESETS, LossConfig, TrainerNameError, parse_trainer_name, trainer_name

WEIGHTS = torch.tensor([0.37, 3.7, 33.3, 1.25], dtype=torch.float64)


def _batch(seed=0, ignore=False, partial=False, classes=4):
    g = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(3, classes, 5, 6, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (3, 1, 5, 6, 4), generator=g)
    annotated = None
    if partial:
        annotated = torch.tensor([[True, True, False, True], [True] * 4, [True, False, False, True]])
        for b, c in zip(*torch.nonzero(~annotated, as_tuple=True)):
            labels[b][labels[b] == c] = 0  # an unannotated class is never labelled
    if ignore:
        labels[:, :, :2] = classes  # nnU-Net's ignore label: one past the last class
    return logits, labels, annotated


def _value_and_grad(fn, logits):
    leaf = logits.detach().clone().requires_grad_()
    value = fn(leaf)
    value.backward()
    return value.detach(), leaf.grad


def _assert_same(ours, theirs, logits):
    value, grad = _value_and_grad(ours, logits)
    ref_value, ref_grad = _value_and_grad(theirs, logits)
    torch.testing.assert_close(value, ref_value, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-6)


def _weighted_marginal_reference(logits, labels, annotated, weights):
    """Float64, from the definition: Σ w_{b,y_i} ℓ_i / Σ w_{b,y_i}, ℓ_i = −log Σ_{c∈S_i} ỹ_c, S_i = M_b on label 0."""
    log_probs = logits.log_softmax(1)
    numerator, denominator = 0.0, 0.0
    for b in range(logits.shape[0]):
        w = weights[b] if weights.ndim == 2 else weights
        merged = [0] + [c for c in range(1, logits.shape[1]) if annotated is not None and not annotated[b, c]]
        for index in torch.cartesian_prod(*(torch.arange(n) for n in labels.shape[2:])):
            y = int(labels[(b, 0, *index)])
            if y == logits.shape[1]:
                continue  # the ignore label
            at = (b, slice(None), *index)
            target_set = merged if y == 0 else [y]
            nll = -torch.logsumexp(log_probs[at][target_set], 0)
            numerator = numerator + w[y] * nll
            denominator = denominator + w[y]
    return numerator / denominator


# --- values and gradients against torch and nnU-Net --------------------------------------------


@pytest.mark.parametrize("ignore", [False, True])
def test_weighted_marginal_ce_with_everything_annotated_is_torchs_weighted_cross_entropy(ignore):
    logits, labels, _ = _batch(seed=1, ignore=ignore)
    ignore_index = 4 if ignore else -100
    mask = labels != 4 if ignore else None
    clean = torch.where(labels == 4, 0, labels)
    for annotated in (None, torch.ones(3, 4, dtype=torch.bool)):  # the fused path and the marginal one
        _assert_same(
            lambda z, a=annotated: L.marginal_cross_entropy(z, clean, a, class_weights=WEIGHTS, voxel_mask=mask),
            lambda z: F.cross_entropy(z, labels[:, 0], weight=WEIGHTS, ignore_index=ignore_index),
            logits,
        )


def test_without_weights_or_with_unit_weights_it_is_the_plain_cross_entropy():
    logits, labels, _ = _batch(seed=2)
    for weights in (None, torch.ones(4, dtype=torch.float64)):
        _assert_same(
            lambda z, w=weights: L.marginal_cross_entropy(z, labels, class_weights=w),
            lambda z: F.cross_entropy(z, labels[:, 0]),
            logits,
        )
    # the modules too: TrainerCE's module, and TrainerWCE's with unit weights
    plain = L.CrossEntropyLoss()
    unit = L.WeightedCrossEntropyLoss(class_weights=torch.ones(4))
    for module in (plain, unit):
        _assert_same(lambda z, m=module: m(z, labels), lambda z: F.cross_entropy(z, labels[:, 0]), logits)


@pytest.mark.parametrize("ignore", [False, True])
def test_weighted_module_equals_nnunets_robust_cross_entropy_with_weight(ignore):
    logits, labels, _ = _batch(seed=3, ignore=ignore)
    theirs = RobustCrossEntropyLoss(weight=WEIGHTS, ignore_index=4 if ignore else -100)
    ours = L.WeightedCrossEntropyLoss(class_weights=WEIGHTS, ignore_label=4 if ignore else None).double()
    # nnU-Net's target is a float label map (B, 1, ...)
    _assert_same(lambda z: ours(z, labels), lambda z: theirs(z, labels.double()), logits)


@pytest.mark.parametrize("ignore", [False, True])
def test_weighted_marginal_ce_with_partial_labels_equals_its_definition(ignore):
    logits, labels, annotated = _batch(seed=4, ignore=ignore, partial=True)
    mask = labels != 4 if ignore else None
    clean = torch.where(labels == 4, 0, labels)
    _assert_same(
        lambda z: L.marginal_cross_entropy(z, clean, annotated, class_weights=WEIGHTS, voxel_mask=mask),
        lambda z: _weighted_marginal_reference(z, labels, annotated, WEIGHTS),
        logits,
    )


def test_weighted_marginal_ce_gradcheck():
    logits, labels, annotated = _batch(seed=5, partial=True)
    logits = logits[:2, :, :3, :2, :2].clone().requires_grad_()
    labels, annotated = labels[:2, :, :3, :2, :2], annotated[:2]
    assert torch.autograd.gradcheck(
        lambda z: L.marginal_cross_entropy(z, labels, annotated, class_weights=WEIGHTS), (logits,)
    )


def test_weights_per_image_are_gathered_per_batch_element():
    logits, labels, annotated = _batch(seed=6, partial=True)
    per_image = torch.stack([WEIGHTS, WEIGHTS.flip(0), 2 * WEIGHTS])
    _assert_same(
        lambda z: L.marginal_cross_entropy(z, labels, annotated, class_weights=per_image),
        lambda z: _weighted_marginal_reference(z, labels, annotated, per_image),
        logits,
    )


# --- partial labels: no background taught on an unannotated class ------------------------------


def test_an_unannotated_class_is_never_pushed_down_on_background_voxels():
    """Image 0 does not annotate class 2: its background voxels may be class 2, so the weighted
    marginal CE never lowers z_2 there (∂ℓ/∂z_2 = ỹ_2 (1 − 1/q) ≤ 0), where the plain weighted CE does."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    logits[0, 2] += 4.0  # the network sees class 2 where image 0 says background
    labels = torch.zeros(2, 1, 6, 6, dtype=torch.long)
    labels[:, :, :2] = 1
    annotated = torch.tensor([[True, True, False], [True, True, True]])
    weights = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64)
    background = labels[0, 0] == 0
    _, marginal = _value_and_grad(
        lambda z: L.marginal_cross_entropy(z, labels, annotated, class_weights=weights), logits
    )
    _, plain = _value_and_grad(lambda z: F.cross_entropy(z, labels[:, 0], weight=weights), logits)
    assert (marginal[0, 2][background] <= 0).all()
    assert (plain[0, 2][background] > 0).all()
    # where class 2 is annotated (image 1) both push it down alike
    torch.testing.assert_close(marginal[1], plain[1], rtol=0, atol=1e-12)


def test_no_weighted_voxel_gives_zero_loss_and_zero_gradient():
    logits, labels, _ = _batch(seed=8)
    only_class_3 = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    labels = torch.where(labels == 3, 0, labels)  # no voxel of the only weighted class
    value, grad = _value_and_grad(lambda z: L.marginal_cross_entropy(z, labels, class_weights=only_class_3), logits)
    assert value.item() == 0.0 and grad.abs().max().item() == 0.0
    assert torch.isnan(F.cross_entropy(logits, labels[:, 0], weight=only_class_3))  # torch's: 0/0


# --- the weights ---------------------------------------------------------------------------------


def test_inverse_frequency_weights_by_hand():
    weights = L.inverse_frequency_weights(torch.tensor([900.0, 90.0, 10.0]))
    # f = 0.9, 0.09, 0.01; K = 3; w = 1/(3 f)
    torch.testing.assert_close(weights, torch.tensor([1 / 2.7, 1 / 0.27, 1 / 0.03]), rtol=1e-6, atol=0)
    frequency = torch.tensor([0.9, 0.09, 0.01])
    assert (frequency * weights).sum().item() == pytest.approx(1.0, rel=1e-6)  # a voxel weighs 1 on average
    # an absent class weighs 0 and does not count in K; only ratios of the volumes matter
    torch.testing.assert_close(
        L.inverse_frequency_weights(torch.tensor([3.0, 0.0, 1.0])), torch.tensor([2 / 3, 0.0, 2.0]), rtol=1e-6, atol=0
    )
    torch.testing.assert_close(
        L.inverse_frequency_weights(torch.tensor([0.75, 0.0, 0.25])), L.inverse_frequency_weights([300.0, 0.0, 100.0])
    )
    for bad in ([0.0, 0.0], [1.0, -1.0], [[1.0, 2.0]], [1.0, float("inf")]):
        with pytest.raises(ValueError, match="class_volumes must be"):
            L.inverse_frequency_weights(torch.tensor(bad))


def test_inverse_frequency_weights_are_sklearns_balanced_weights():
    from sklearn.utils.class_weight import compute_class_weight

    g = torch.Generator().manual_seed(9)
    labels = torch.randint(0, 4, (5000,), generator=g) ** 2 % 5  # uneven: values 0, 1, 4 → classes 0, 1, 4
    counts = torch.bincount(labels, minlength=5).double()
    present = counts > 0
    sklearn = compute_class_weight("balanced", classes=torch.nonzero(present)[:, 0].numpy(), y=labels.numpy())
    ours = L.inverse_frequency_weights(counts)
    torch.testing.assert_close(ours[present].double(), torch.from_numpy(sklearn), rtol=1e-6, atol=0)
    assert ours[~present].tolist() == [0.0, 0.0]


def test_weighted_module_arguments():
    with pytest.raises(ValueError, match="nonlinearity='softmax'"):
        L.WeightedCrossEntropyLoss(class_weights=torch.ones(3), nonlinearity="sigmoid")
    for bad in (torch.zeros(3), torch.tensor([1.0, -1.0, 1.0]), torch.ones(2, 3)):
        with pytest.raises(ValueError, match="class_weights must be"):
            L.WeightedCrossEntropyLoss(class_weights=bad)
    with pytest.raises(ValueError, match="class_weights has 2 values but the network has 3 output channels"):
        L.WeightedCrossEntropyLoss(class_weights=torch.ones(2))(torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="class_weights must be a tensor of shape"):
        L.marginal_cross_entropy(
            torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long), class_weights=torch.ones(4)
        )


# --- the trainer names -------------------------------------------------------------------------


def test_cross_entropy_trainer_names():
    assert PRESETS["TrainerCE"] == parse_trainer_name("TrainerCE") == LossConfig(loss="CE", phi=None)
    wce = parse_trainer_name("TrainerWCE")
    assert wce.loss == "WCE" and wce.phi is None and wce.include_background and not wce.ce
    assert wce.initial_lr == 1e-2  # nnU-Net's rate, as its own nnUNetTrainerCELoss
    short = parse_trainer_name("TrainerWCE_ep5_it3_lr1e-3_seed1")
    assert trainer_name(short) == "TrainerWCE_ep5_it3_lr1e-3_seed1" and short.initial_lr == 1e-3


@pytest.mark.parametrize(
    ("name", "problem", "closest"),
    [
        ("TrainerCEI", "CE takes no Φ", "TrainerCE"),
        ("TrainerWCEBI", "WCE takes no Φ", "TrainerWCE"),
        ("TrainerWCE_CE", "WCE is a cross-entropy already; it takes no CE term", "TrainerWCE"),
        ("TrainerCE_CE", "CE is a cross-entropy already", "TrainerCE"),
        ("TrainerCE_eps1e-5", "CE has no ε", "TrainerCE"),
        ("TrainerWCE_epsH", "WCE has no ε", "TrainerWCE"),
        ("TrainerWCE_nobg", "counts every class, background included", "TrainerWCE"),
        ("TrainerCE_bg", "spelled differently", "TrainerCE"),
        ("TrainerWCE_alpha5e-1_beta5e-1", "alpha and beta apply to Tversky only", "TrainerWCE"),
    ],
)
def test_options_without_meaning_for_a_cross_entropy_are_refused(name, problem, closest):
    with pytest.raises(TrainerNameError, match="Grammar:") as error:
        parse_trainer_name(name)
    assert problem in str(error.value)
    assert f"Closest valid name: {closest}\n" in str(error.value)


def test_the_grammar_names_the_cross_entropies_and_what_they_refuse():
    from nnunet_dicephi.loss_config import GRAMMAR

    assert "| CE | WCE" in GRAMMAR
    assert "Lovasz, Mime, CE, WCE take none" in GRAMMAR
    assert "CE, WCE are a cross-entropy alone, over every class: no eps, CE, bg or nobg option." in GRAMMAR
