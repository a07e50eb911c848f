"""The transition model of ``advise`` on hand-worked numbers, its statistics, and the verb end to end."""

import argparse
import functools
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from nnunet_dicephi.analysis import advise as A
from nnunet_dicephi.analysis.advise import schedule_factor
from nnunet_dicephi.analysis.eq4 import transition
from nnunet_dicephi.statistics import SamplingModel, expected_volumes


def _maps(empty_random, empty_forced=None, volumes=(16.0,), annotated=1.0, with_other=(0.0, 0.0)):
    """A class whose labelled maps hold ``volumes`` (equally likely) in random and forced slots."""
    empty_forced = empty_random if empty_forced is None else empty_forced

    def slot(empty, other):
        share = (1 - empty) / len(volumes)
        return A.SlotMaps(empty, other, tuple(volumes), (share,) * len(volumes))

    return A.ClassMaps("c", 1, annotated, slot(empty_random, with_other[0]), slot(empty_forced, with_other[1]))


def _sampling(batch_size=3, **kw):
    return A.Sampling(batch_size, 0.33, kw.pop("patch_voxels", 2304), kw.pop("output_channels", 2), **kw)


# --- Eq. 4 at the Eq. 5 state, by hand ---------------------------------------------------------------


def test_push_ratio_of_one_volume_by_hand_and_as_the_gradient_explorer_computes_it():
    # V = 16, e = 1/2: v̂ = 8; U = 32, I = 8; at ε = 8: [8/16²] / [(16 + 8)/(32 + 8)²] = 25/12
    assert float(A.push_ratio_I(8.0, v_hat=8.0, volumes=[16.0])) == pytest.approx(25 / 12, rel=1e-12)
    eps = np.array([1e-3, 1.0, 8.0, 100.0])
    explorer = transition(eps, volume=16.0, fp=8.0, phi="I", batch_size=2, empty_fraction=0.5)
    np.testing.assert_allclose(A.push_ratio_I(eps, v_hat=8.0, volumes=[16.0]), explorer.empty_to_background, 1e-12)


def test_push_ratio_averages_the_background_push_over_background_voxels():
    # V = 4 and 12 equally likely, v̂ = 2, ε = 4: empty 4/6² = 1/9; background 8/12² = 1/18 and 16/28² = 1/49,
    # weighted by V: (4/18 + 12/49)/16 = 103/3528, so ρ = (1/9)/(103/3528) = 392/103
    rho = A.push_ratio_I(4.0, v_hat=2.0, volumes=[4.0, 12.0], weights=[0.5, 0.5])
    assert float(rho) == pytest.approx(392 / 103, rel=1e-12)


def test_push_ratio_is_scale_free_so_every_deep_supervision_output_agrees():
    full = A.push_ratio_I(np.array([0.5, 5.0, 50.0]), v_hat=30.0, volumes=[20.0, 60.0], weights=[0.3, 0.7])
    quarter = A.push_ratio_I(np.array([0.5, 5.0, 50.0]) / 4, v_hat=7.5, volumes=[5.0, 15.0], weights=[0.3, 0.7])
    np.testing.assert_allclose(full, quarter, rtol=1e-12)


def test_retained_share_and_the_window_edges():
    assert A.retained(A.RHO_HALF) == pytest.approx(0.5)
    half = functools.partial(A.retained, rho_half=0.5)
    assert half(1.0) == pytest.approx(1 / 17)  # 1/(1 + 2⁴)
    assert half(0.25) == pytest.approx(16 / 17)
    # R = 0.9 and 0.1 at ρ = ½·9^(∓1/4) = 1/(2√3) and √3/2
    assert half(1 / (2 * math.sqrt(3))) == pytest.approx(0.9)
    assert half(math.sqrt(3) / 2) == pytest.approx(0.1)


def test_the_time_law_counts_the_training_past_the_onset():
    assert A.rho_half_at(1.0) == pytest.approx(A.RHO_HALF)
    # ρ½ · (f − f₀) is the same at every length: the push past the onset that leaves half
    for factor in (0.8, 2.917, 5.79, 27.3):
        assert A.rho_half_at(factor) * (factor - A.ONSET) == pytest.approx(A.RHO_HALF * (1 - A.ONSET))
    assert A.rho_half_at(3.0, 0.5, 0.0) == pytest.approx(0.5 / 3)  # no onset: the plain 1/f law
    # a training that ends before the onset: the ρ½ of one just past it, finite
    assert A.rho_half_at(0.1) == A.rho_half_at(A.ONSET) == pytest.approx(A.RHO_HALF * (1 - A.ONSET) / A.SHORTEST_SPAN)


@pytest.mark.parametrize(("batch", "forced"), [(1, 0), (2, 1), (3, 1), (4, 1), (12, 4)])
def test_forced_slots_follow_nnunets_rule(batch, forced):
    assert A.forced_slots(batch, 0.33) == forced


def test_empty_share_and_mixed_shares_by_hand():
    # B = 3: two random slots (empty 1/2), one forced (empty 1/4)
    maps = _maps(0.5, 0.25, with_other=(0.2, 0.1))
    sampling = _sampling(3, none_labelled=(0.3, 0.1))
    assert A.slot_counts(sampling) == (2, 1)
    assert A.empty_share(maps, sampling) == pytest.approx(5 / 12)
    assert A.mixed_share("I", maps, sampling) == 0
    # empty in a random slot: the others unlabelled with 1/2 · 1/4 → 7/8; in the forced one: (1/2)² → 3/4;
    # weighted by the empty maps, 2 · 1/2 and 1/4: (7/8 + 3/16) / (5/4) = 17/20
    assert A.mixed_share("BI", maps, sampling) == pytest.approx(17 / 20)
    # half the cases unannotated: a slot is unlabelled with 3/4 (random) or 5/8 (forced) → 41/80
    half = _maps(0.5, 0.25, annotated=0.5, with_other=(0.2, 0.1))
    assert A.mixed_share("BI", half, sampling) == pytest.approx(41 / 80)
    # CI: another class labelled beside an empty map in 0.2/0.5 and 0.1/0.25 of them
    assert A.mixed_share("CI", maps, sampling) == pytest.approx(0.4)
    assert A.mixed_share("CI", maps, sampling, include_background=True) == 1.0
    # BCI: random 1 − 0.6·0.3·0.1 = 0.982, forced 1 − 0.6·0.3² = 0.946 → (0.982 + 0.2365)/1.25
    assert A.mixed_share("BCI", maps, sampling) == pytest.approx(1.2185 / 1.25)


def test_push_ratio_of_a_shared_subset():
    maps, sampling = _maps(0.5, 0.25), _sampling(3)
    alone = A.push_ratio_I(1e-7 / 3, v_hat=(1 - 5 / 12) * 16.0, volumes=[16.0])
    expected = A.MIXED_PUSH * 17 / 20 + 3 / 20 * float(alone)  # a named ε is once per subset: ε/3 per map under BI
    assert float(A.push_ratio("BI", 1e-7, maps, sampling)) == pytest.approx(expected, rel=1e-12)
    # the heuristic is per map: an all-empty subset of m maps pushes like one map at ε = v̂
    v_hat = (1 - 5 / 12) * 16.0
    per_map = A.MIXED_PUSH * 17 / 20 + 3 / 20 * float(A.push_ratio_I(v_hat, v_hat=v_hat, volumes=[16.0]))
    assert float(A.push_ratio("BI", v_hat, maps, sampling, eps_per_map=True)) == pytest.approx(per_map, rel=1e-12)


def test_the_demos_numbers():
    # the demo's data: one map in three empty in every slot (patch = image), V̄ = 140.72, v̂ = 93.8125
    maps, sampling = _maps(1 / 3, volumes=(93.8125 * 1.5,)), _sampling(3)
    rho = [float(A.push_ratio("I", e, maps, sampling)) for e in (1.0, 10.0, 100.0)]
    assert rho == pytest.approx([0.0626, 0.5229, 1.6091], abs=1e-4)  # docs/studies.md: 0.06, 0.52, 1.6
    low, half, high = A.eps_window(maps, sampling, rho_half=0.5)
    assert A.push_ratio_I(np.array([low, half, high]), v_hat=93.8125, volumes=[140.71875]) == pytest.approx(
        [1 / (2 * math.sqrt(3)), 0.5, math.sqrt(3) / 2], rel=1e-9
    )
    assert (round(low, 2), round(half, 2), round(high, 2)) == (5.01, 9.46, 19.76)
    # at the model's own ρ½ the window moves up with it, its edges at ρ½·9^(∓1/4)
    edges = A.eps_window(maps, sampling)
    assert A.push_ratio_I(np.array(edges), v_hat=93.8125, volumes=[140.71875]) == pytest.approx(
        [A.RHO_HALF * 9**-0.25, A.RHO_HALF, A.RHO_HALF * 9**0.25], rel=1e-9
    )
    assert edges[1] > 1.3 * half
    # Φ = BI: ρ = 1 − (1/3)^(B − 1); R = 81/337 at B = 2, 6561/72097 at B = 3 (learned), 1 at B = 1 (ignored)
    assert A.retained(A.push_ratio("BI", 1e-7, maps, sampling, 2)) == pytest.approx(81 / 337, rel=1e-7)
    assert A.retained(A.push_ratio("BI", 1e-7, maps, sampling, 3)) == pytest.approx(6561 / 72097, rel=1e-7)
    assert A.batch_window(maps, sampling) == (1, 3)


def test_flood_and_collapse_ratios_by_hand():
    # N = 100 predicted ½ everywhere: F₀ = 50; V = 10, ε = 10: (10/60²) / ((10 + 10)/70²) = 49/72
    assert A.flood_ratio(10.0, volume=10.0, patch_voxels=100, start_prediction=0.5) == pytest.approx(49 / 72)
    assert A.flood_ratio(10.0, volume=10.0, patch_voxels=100, start_prediction=0.5, mixed=0.5) == pytest.approx(
        0.5 * A.MIXED_PUSH + 49 / 144
    )
    assert A.collapse_ratio(0.5, 1.0) == 1.0  # the tie of docs/trainers.md at half the maps empty
    assert A.collapse_ratio(1 / 3, 1.0) == pytest.approx(0.5)
    assert A.collapse_ratio(0.5, 0.5, mixed=0.5) == pytest.approx(0.25)
    assert A.collapse_ratio(0.5, 0.0) == 0.0  # ignored empty maps push nothing


def test_verdicts_on_the_demo_and_on_a_rare_class():
    demo = A.predict_class(_maps(1 / 3, volumes=(140.71875,)), _sampling(3))
    by = {v.trainer: v for v in demo.verdicts}
    assert by["TrainerDiceI"].state == "ignored" and by["TrainerDiceIEps"].state == "learned"
    assert by["TrainerDiceBI"].state == "learned" and by["TrainerDiceBI"].margin == 1.0  # B = 3 = min_batch_BI
    eps_h = by["TrainerDiceIEps"]  # χ = e/(1 − e) · (1 − R) = ½ · (1 − R)
    assert eps_h.collapse == pytest.approx(0.5 * (1 - eps_h.retained)) and by["TrainerDiceI"].flood == "low"
    suggested = A._round_up(2 * demo.eps_window_I[1])  # the suggested name: 2·ε_high rounded up
    assert by[f"TrainerDiceI_eps{A._eps_name(suggested)}"].state == "learned"
    assert demo.intents["missing"]["trainers"][0] == "TrainerDiceI"
    assert demo.intents["empty"]["advice"].startswith("TrainerDiceIEps learns")
    # Kervadec's rare class: in 1 map of 5, 17 voxels in a 64² patch, three softmax channels
    rare = A.predict_class(
        _maps(0.8, volumes=(17.0,), with_other=(0.8, 0.8)), _sampling(2, patch_voxels=4096, output_channels=3)
    )
    by = {v.trainer: v for v in rare.verdicts}
    assert by["TrainerDiceI"].flood == "high" and by["TrainerDiceIEps"].flood == "high"
    assert by["TrainerDiceI_bg"].flood == "none" and by["TrainerDiceI_bg"].state == "ignored"
    # the background's own term pushes whatever ε is: the margin is the ρ window's lower edge over ρ
    bg = by["TrainerDiceI_bg"]
    assert bg.margin_of == "rho" and bg.margin == pytest.approx(A.RHO_HALF * 9**-0.25 / bg.push_ratio)
    assert bg.push_ratio == pytest.approx(2 * 17 / 4096, rel=0.01)  # 2V̄/N, the empty maps' own push ≈ 0
    assert by["TrainerDiceIEps"].collapse == pytest.approx(4.0, rel=0.02)  # e/(1 − e) = 4
    assert rare.intents["missing"]["trainers"][0] == "TrainerDiceI_bg"


def test_a_span_of_speeds_widens_the_window_and_the_rho_margins_and_may_leave_it_open_above():
    maps, sampling = _maps(1 / 3, volumes=(140.71875,)), _sampling(3)
    mean = A.predict_class(maps, sampling)
    slow, fast = (A.predict_class(maps, sampling, rho_half=A.RHO_HALF * s) for s in (0.5, 1.2))
    spanned = A.predict_class(maps, sampling, rho_half_span=(A.RHO_HALF * 0.5, A.RHO_HALF * 1.2))
    assert spanned.eps_window_I == (slow.eps_window_I[0], fast.eps_window_I[1])
    assert spanned.eps_half_I == mean.eps_half_I and spanned.rho_half == mean.rho_half  # R at the mean
    bg = {v.trainer: v for v in spanned.verdicts}["TrainerDiceI_bg"]  # a margin in ρ: the slowest lower edge
    assert bg.margin == pytest.approx(0.5 * A.RHO_HALF * 9**-0.25 / bg.push_ratio)
    # ρ never reaches the fastest upper edge (ρ½ ten times the demo's): no window, the half-way ε stays
    beyond = A.predict_class(maps, sampling, rho_half_span=(A.RHO_HALF * 0.5, A.RHO_HALF * 10.0))
    assert beyond.eps_window_I is None and beyond.eps_half_I == mean.eps_half_I
    header = {"model": {"rho_half": A.RHO_HALF, "steepness": 4.0}, "schedule": None, "pilots": []}
    header |= {"dataset": "Dataset977_X", "configuration": "2d", "fold": "0", "plans": "nnUNetPlans"}
    header |= {"level_scales": [1.0], "batch_size": 3, "forced_slots": 1, "patch_voxels": 2304, "training_cases": 9}
    text = A.table_text(header, [replace(beyond, speed_span=(0.5, 10.0))])
    assert "no ε leaves all of a hidden structure out at this training (the window is open above)" in text


def test_settings_from_trainer_names():
    assert A.Setting.from_trainer("TrainerDiceIEps_CE") == A.Setting("TrainerDiceIEps_CE", "I", "H", ce=True)
    assert A.Setting.from_trainer("TrainerDiceBI_eps2e3_bg").eps == 2000.0
    assert A.Setting.from_trainer("TrainerLeafDice").leaf
    assert A.Setting.from_trainer("TrainerMime") is None  # not the Dice loss of Eq. 3
    assert A.Setting.from_trainer("TrainerDiceI_epsnr1_epsdr2") is None


def test_a_class_never_labelled_has_no_window():
    never = A.ClassMaps("c", 1, 1.0, A.SlotMaps(1.0, 0.0), A.SlotMaps(1.0, 0.0))
    prediction = A.predict_class(never, _sampling(2))
    assert (
        prediction.eps_window_I is None and prediction.min_batch_BI is None and "never labelled" in prediction.notes[0]
    )
    assert prediction.to_json()["eps_window_I"] is None


# --- the statistics, against hand counts and nnU-Net's own sampling ------------------------------------


def _two_squares():
    seg = np.zeros((1, 6, 6), np.int8)
    seg[0, 0:2, 0:2] = 1  # 4 voxels in the corner
    seg[0, 5, 5] = 2  # one voxel in the opposite corner
    return seg


@pytest.mark.parametrize("stored", [False, True])
def test_case_slot_maps_by_hand(stored):
    seg = _two_squares()
    # patch 4×4 in a 6×6 image, no margin: 3×3 random starts; class 1 counts [[4,2,0],[2,1,0],[0,0,0]]
    model = SamplingModel((1, 4, 4), (1, 4, 4), batch_size=2, oversample_foreground_percent=0.33)
    locations = None
    if stored:  # nnU-Net's stored locations, channel first
        locations = {
            c: np.concatenate([np.zeros(((seg == c).sum(), 1), int), np.argwhere(seg == c)], 1) for c in (1, 2)
        }
    maps = A.case_slot_maps(seg, locations, [(1,), (2,)], model)
    one, two = maps["random"]["classes"]
    assert one["empty"] == pytest.approx(5 / 9) and one["empty_with_other"] == pytest.approx(1 / 9)
    bins = {k: (w, wv) for k, (w, wv) in one["bins"].items()}
    pairs = sorted((wv / w, w) for w, wv in bins.values())
    np.testing.assert_allclose(pairs, [(1, 1 / 9), (2, 2 / 9), (4, 1 / 9)], rtol=1e-12)
    assert two["empty"] == pytest.approx(8 / 9) and two["empty_with_other"] == pytest.approx(4 / 9)
    assert maps["random"]["none_labelled"] == pytest.approx(4 / 9)
    # forced: class 1 or 2 (½ each); class 1's voxels start the patch at (0, 0), class 2's at (3, 3), past
    # the image (padded)
    one, two = maps["forced"]["classes"]
    assert (one["empty"], one["empty_with_other"], two["empty"]) == pytest.approx((0.5, 0.5, 0.5))
    assert [wv / w for w, wv in one["bins"].values()] == [4] and [wv / w for w, wv in two["bins"].values()] == [1]
    assert maps["forced"]["none_labelled"] == 0


@pytest.mark.parametrize(
    "model",
    [
        SamplingModel((1, 8, 10), (1, 12, 14), batch_size=3, oversample_foreground_percent=0.33),
        SamplingModel((4, 8, 8), (6, 10, 12), batch_size=2, oversample_foreground_percent=0.5),
    ],
)
def test_slot_statistics_give_the_trainers_expected_volume(model):
    rng = np.random.default_rng(0)
    seg = np.zeros((8, 20, 24) if model.patch_size[0] > 1 else (1, 20, 24), np.int8)
    seg[..., 3:8, 2:9] = 1
    seg[..., 12:15, 15:22] = 2
    seg[rng.random(seg.shape) < 0.02] = 2
    share = A.forced_slots(model.batch_size, model.oversample_foreground_percent) / model.batch_size
    maps = A.case_slot_maps(seg, None, [(1,), (2,)], model)
    ours = [
        sum(
            (share if kind == "forced" else 1 - share) * sum(wv for _, wv in maps[kind]["classes"][c]["bins"].values())
            for kind in ("random", "forced")
        )
        for c in range(2)
    ]
    np.testing.assert_allclose(ours, expected_volumes([(seg, None)], [(1,), (2,)], model), rtol=1e-10)


def test_empty_shares_match_nnunets_own_sampling():
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    model = SamplingModel((1, 10, 12), (1, 16, 18), batch_size=2, oversample_foreground_percent=0.5)
    seg = np.zeros((1, 30, 34), np.int8)
    seg[0, 2:6, 3:8] = 1
    seg[0, 22:26, 25:31] = 2
    locations = {c: np.concatenate([np.zeros(((seg == c).sum(), 1), int), np.argwhere(seg == c)], 1) for c in (1, 2)}
    loader = object.__new__(nnUNetDataLoader)
    loader.patch_size, loader.final_patch_size = model.initial_patch_size, model.patch_size
    loader.need_to_pad = np.array(model.initial_patch_size) - np.array(model.patch_size)
    loader.has_ignore, loader.batch_size = False, model.batch_size
    loader.oversample_foreground_percent = model.oversample_foreground_percent
    offset = (np.array(model.initial_patch_size) - np.array(model.patch_size)) // 2
    np.random.seed(3)
    empty = {False: [], True: []}
    for i in range(4000):
        forced = loader._oversample_last_XX_percent(i % 2)
        lbs, _ = loader.get_bbox(np.array(seg.shape), forced, locations)
        start = np.array(lbs) + offset
        crop = seg[tuple(slice(max(s, 0), max(s + p, 0)) for s, p in zip(start, model.patch_size))]
        empty[bool(forced)].append(not (crop == 1).any())
    maps = A.case_slot_maps(seg, locations, [(1,), (2,)], model)
    assert maps["random"]["classes"][0]["empty"] == pytest.approx(np.mean(empty[False]), abs=0.03)
    assert maps["forced"]["classes"][0]["empty"] == pytest.approx(np.mean(empty[True]), abs=0.03)


def test_cases_combine_over_the_cases_that_annotate_a_class():
    model = SamplingModel((1, 4, 4), (1, 4, 4), batch_size=2, oversample_foreground_percent=0.33)
    empty = np.zeros((1, 6, 6), np.int8)
    per_case = [A.case_slot_maps(s, None, [(1,), (2,)], model) for s in (_two_squares(), empty, empty)]
    annotated = np.array([[True, True], [True, False], [False, False]])
    combined = A.combine_cases(per_case, annotated)
    assert combined["annotated_cases"] == [2, 1] and combined["cases"] == 3
    # class 1: the two annotating cases, 5/9 and 1 empty; class 2: case 0 alone
    assert combined["random"]["classes"][0]["empty"] == pytest.approx((5 / 9 + 1) / 2)
    assert combined["random"]["classes"][1]["empty"] == pytest.approx(8 / 9)
    one, two = A.class_maps_from(combined, ["a", "b"], [1, 2])
    assert (one.annotated, two.annotated) == pytest.approx((2 / 3, 1 / 3))
    assert one.random.mean_volume == pytest.approx(9 / 4)  # (4 + 2·2 + 1)/9 over 4/9 labelled
    assert sum(one.random.weights) == pytest.approx(1 - one.random.empty)


# --- the verb, end to end on a tiny 2d toy ---------------------------------------------------------------


def _plans(dataset: str, patch: int, batch: int) -> dict:
    conv = {
        "n_stages": 3,
        "features_per_stage": [8, 16, 32],
        "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3]] * 3,
        "strides": [[1, 1], [2, 2], [2, 2]],
        "n_conv_per_stage": [2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": "nnUNetPlans_2d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch,
        "patch_size": [patch, patch],
        "median_image_size_in_voxels": [patch, patch],
        "spacing": [1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": conv,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": True,
    }
    return {
        "dataset_name": dataset,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [1, patch, patch],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"2d": configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 3.0,
                "mean": 1.0,
                "median": 1.0,
                "min": -1.0,
                "percentile_00_5": -1.0,
                "percentile_99_5": 3.0,
                "std": 0.5,
            }
        },
    }


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """nnUNet_preprocessed/Dataset977_AdviseToy: the demo's lesions (synthetic.lesion_case) as nnU-Net's 2d data.

    12 training cases of 32×32: every third holds type B with an empty label; a manifest says cases 0
    and 1 do not annotate the lesion (their labels are 0). 3 validation cases.
    """
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from nnunet_dicephi.synthetic import lesion_case

    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / key).mkdir()
        monkeypatch.setenv(key, str(tmp_path / key))
    base = tmp_path / "nnUNet_preprocessed" / "Dataset977_AdviseToy"
    folder = base / "nnUNetPlans_2d"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train, val, volumes = [f"toy_{i:03d}" for i in range(12)], [f"val_{i:03d}" for i in range(3)], {}
    for index, case in enumerate(train + val):
        image, label = lesion_case(rng, "B" if index % 3 == 2 else "A", 32)
        if (index % 3 == 2 and case in train) or index < 2:
            label[:] = 0  # type B's label is an empty map; cases 0 and 1 do not annotate the lesion
        seg = label.astype(np.int8)[None]
        volumes[case] = int(seg.sum())
        voxels = np.argwhere(seg[0] == 1)
        properties = {"class_locations": {1: np.concatenate([np.zeros((len(voxels), 1), int), voxels], 1)}}
        nnUNetDatasetBlosc2.save_case(
            image[None].astype(np.float32), seg, properties, str(folder / case), chunks=seg.shape, blocks=seg.shape
        )
    dataset_json = {
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": len(train) + len(val),
        "file_ending": ".nii.gz",
        "dicephi_partial_labels": {"cases": {"toy_000": [], "toy_001": []}},
    }
    (base / "dataset.json").write_text(json.dumps(dataset_json))
    (base / "nnUNetPlans.json").write_text(json.dumps(_plans("Dataset977_AdviseToy", 32, 3)))
    (base / "splits_final.json").write_text(json.dumps([{"train": train, "val": val}]))
    return base, {case: volumes[case] for case in train}


def _run(argv):
    parser = argparse.ArgumentParser(prog="nnunet-dicephi")
    verbs = parser.add_subparsers(dest="verb", required=True)
    A.add_parser(verbs)
    args = parser.parse_args(["advise", *argv])
    return args.func(args)


def test_advise_end_to_end(toy, tmp_path, capsys):
    base, volumes = toy
    figure = tmp_path / "advice.png"
    # at the reference training (22 × 40 at 1e-2, where ρ½ = ½ was read)
    assert _run(["977", "2d", "0", "-tr", "TrainerDiceIEps_ep22_it40_lr1e-2", "--json", "-o", str(figure)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["schedule"] == {"epochs": 22, "iterations": 40, "initial_lr": 0.01, "factor": 1.0, "checked": True}
    assert result["model"]["rho_half"] == result["model"]["rho_half_reference"] == A.RHO_HALF
    assert result["model"]["onset"] == A.ONSET
    assert figure.is_file() and figure.stat().st_size > 0
    assert result["batch_size"] == 3 and result["forced_slots"] == 1 and result["patch_voxels"] == 32 * 32
    (lesion,) = result["classes"]
    assert lesion["name"] == "lesion" and lesion["channel"] == 1
    # patch = image: the 10 annotating cases' maps, 4 of them empty (toy_002, 005, 008, 011)
    annotated = [v for case, v in volumes.items() if case not in ("toy_000", "toy_001")]
    assert lesion["annotated"] == pytest.approx(10 / 12)
    assert lesion["empty"] == pytest.approx(0.4)
    assert lesion["v_hat"] == pytest.approx(np.mean(annotated), rel=1e-9)
    assert lesion["v_hat"] == pytest.approx(result["heuristic_eps"][1], rel=1e-9)  # the trainers' own ε
    low, high = lesion["eps_window_I"]
    assert 0 < low < lesion["eps_half_I"] < high < lesion["v_hat"]
    # a slot holds a labelled map with (10/12)·0.6 = ½: ρ = 1 − ½^(B − 1) reaches √3/2 (R = 0.1) at B = 4
    assert lesion["min_batch_BI"] == 4 and lesion["max_batch_ignoring_BI"] == 1
    assert set(lesion["curve"]) == {"eps", "push_ratio_I", "retained_I", "batch_size", "retained_BI"}
    assert len(lesion["curve"]["eps"]) == len(lesion["curve"]["retained_I"])
    assert lesion["intents"]["missing"]["advice"].startswith("the manifest declares")
    assert list((base / "dicephi_statistics").glob("nnUNetPlans_2d_fold0_maps_*.json"))  # cached

    # a folder gets the figure, the JSON and the table; the table names the trainers. nnU-Net's
    # 1000 × 250 iterations at the Dice presets' 1e-3: ρ½ over that many times the reference training
    out = tmp_path / "advice"
    assert _run(["977", "2d", "0", "-tr", "TrainerDiceI_eps3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"advise.png", "advise.json", "advise.txt"}
    assert "TrainerDiceI_eps3 " in printed and "to learn maps that are truly empty" in printed
    longer = json.loads((out / "advise.json").read_text())
    factor = (250 * 1e-3 * sum((1 - t / 1000) ** 0.9 for t in range(1000))) / (
        40 * 1e-2 * sum((1 - t / 22) ** 0.9 for t in range(22))
    )
    assert longer["schedule"]["factor"] == pytest.approx(factor) and not longer["schedule"]["checked"]
    scale = (factor - A.ONSET) / (1 - A.ONSET)  # the time law: the training past the onset
    assert longer["model"]["rho_half"] == pytest.approx(A.RHO_HALF / scale)
    assert "here an extrapolation" in printed and "1000 epochs × 250 iterations at 0.001" in printed
    longer_low, longer_high = longer["classes"][0]["eps_window_I"]
    assert longer_high < low  # the whole window moved below the reference one (ρ ≈ linear in ε there)
    # ρ is about linear in ε at the low edge; at the high one it grows slower, so the edge moved further
    assert longer_low * scale == pytest.approx(low, rel=0.15) and longer_high * scale < high
    assert _run(["977", "2d", "0", "-o", str(out)]) == 2  # an earlier output needs --force
    assert "--force" in capsys.readouterr().err


def test_advise_refuses_bad_input_in_one_line(toy, capsys):
    assert _run(["977", "2d", "x"]) == 2
    assert "fold must be" in capsys.readouterr().err
    assert _run(["977", "2d", "0", "-tr", "TrainerDiceQ"]) == 2
    assert _run(["978", "2d", "0"]) == 2
    assert "cannot read dataset 978" in capsys.readouterr().err


def test_the_schedule_factor_weighs_iterations_by_nnunets_poly_learning_rate():
    assert A.schedule_factor(22, 40, 1e-2) == pytest.approx(1.0)
    assert A.schedule_factor(22, 80, 1e-2) == pytest.approx(2.0) == A.schedule_factor(22, 40, 2e-2)
    poly = [sum((1 - t / e) ** 0.9 for t in range(e)) for e in (22, 66)]
    assert A.schedule_factor(66, 40, 1e-2) == pytest.approx(poly[1] / poly[0]) == pytest.approx(2.917, abs=1e-3)
    # the first epochs of a training: the poly rate of those epochs alone, never past the end
    first = 40 * 1e-2 * sum((1 - t / 66) ** 0.9 for t in range(5))
    assert A.lr_weighted_steps(66, 40, 1e-2, 5) == pytest.approx(first)
    assert A.lr_weighted_steps(66, 40, 1e-2, 500) == A.lr_weighted_steps(66, 40, 1e-2)


def _pilot(folder, fingerprint, dsc, *, phi="I", eps=20.0):
    """A pilot's fold folder: its loss record and a validation record whose DSC on every case is ``dsc``."""
    folder.mkdir(parents=True, exist_ok=True)
    loss = {
        "trainer_name": f"TrainerDice{phi}_eps20_ep6_it10_lr1e-2",
        "epochs": 6,
        "iterations": 10,
        "initial_lr": 0.01,
        "eps_per_level": [{"scale": 1.0, "eps_nr": eps, "eps_dr": eps}],
        "data_fingerprint": {"fingerprint": fingerprint},
        "loss": "Dice",
        "phi": phi,
        "include_background": False,
        "ce": False,
        "exclusion": False,
        "mime": None,
    }
    (folder / "dicephi_loss.json").write_text(json.dumps(loss))
    lines = []
    for epoch, value in enumerate(dsc):
        tp = 100 * value / (2 - value)  # fp = 0, fn = 100 − tp
        cases = {case: [[tp, 0.0, 100 - tp]] for case in ("val_000", "val_001", "val_002")}
        lines.append(json.dumps({"epoch": epoch, "cases": cases}))
    (folder / "dicephi_validation.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_advise_calibrates_each_class_with_a_pilots_speed(toy, tmp_path, capsys):
    reference = ["977", "2d", "0", "-tr", "TrainerDiceIEps_ep22_it40_lr1e-2", "--json"]
    assert _run(reference) == 0
    plain = json.loads(capsys.readouterr().out)
    (lesion,) = plain["classes"]
    assert plain["pilot"] is None and lesion["pilot"] is None and lesion["rho_half"] == A.RHO_HALF
    # the suggested pilot's ε: ρ times the pilot's training reaches the pilot push (on the class's curve)
    curve = lesion["curve"]
    rho = np.interp(math.log(lesion["pilot_eps"]), np.log(curve["eps"]), curve["push_ratio_I"])
    assert rho * schedule_factor(60, 40, 1e-2) == pytest.approx(2.0, rel=0.05)

    # segmented after 2 epochs, left after 5 (of 6 at 10 iterations): the push between, over the demo's
    folder = _pilot(tmp_path / "pilot" / "fold_0", plain["data_fingerprint"], [0.5, 0.95, 0.96, 0.9, 0.2, 0.1])
    assert _run([*reference, "--pilot", str(folder)]) == 0
    calibrated = json.loads(capsys.readouterr().out)
    (read,) = calibrated["classes"]
    pilot = read["pilot"]
    assert (pilot["segmented_epoch"], pilot["left_epoch"], pilot["cases"], pilot["eps"]) == (2, 5, 3, 20.0)
    assert pilot["rho"] == pytest.approx(
        np.interp(math.log(20.0), np.log(curve["eps"]), curve["push_ratio_I"]), rel=0.02
    )
    push = (
        10
        * 0.01
        * sum((1 - t / 6) ** 0.9 for t in (2, 3, 4))
        / (40 * 1e-2 * sum((1 - t / 22) ** 0.9 for t in range(22)))
    )
    assert pilot["amount"] == pytest.approx(pilot["rho"] * push)
    assert read["rho_half"] == pytest.approx(A.RHO_HALF * pilot["amount"] / 0.72)
    assert calibrated["pilot"]["trainer"] == "TrainerDiceI_eps20_ep6_it10_lr1e-2"
    # a slower regime (speed < 1 here: a weak pilot push) leaves at a smaller ρ: the window moves down
    assert pilot["speed"] < 1 and read["eps_half_I"] < lesion["eps_half_I"]
    assert _run(reference[:-1] + ["--pilot", str(folder)]) == 0
    shown = capsys.readouterr().out
    assert "left out from epoch 5" in shown and "is shorter than the pilot" not in shown  # 22 × 40 against 6 × 10
    assert _run(["977", "2d", "0", "-tr", "TrainerDiceIEps_ep2_it10_lr1e-2", "--pilot", str(folder)]) == 0
    shown = capsys.readouterr().out
    assert "this training (0.032 × the reference) is shorter than the pilot (0.076 ×)" in shown
    assert "ρ½ = 0.68 · 0.6 / 0.05 (a training that ends before the onset counts as one just past it)" in shown

    # one case only (--pilot-cases), a pilot on other data, of another Φ, and cases without a pilot
    cases = tmp_path / "cases.txt"
    cases.write_text("val_001\n")
    assert _run([*reference, "--pilot", str(folder), "--pilot-cases", str(cases)]) == 0
    assert json.loads(capsys.readouterr().out)["classes"][0]["pilot"]["cases"] == 1
    other = _pilot(tmp_path / "other" / "fold_0", "0" * 64, [0.9, 0.1])
    assert _run([*reference, "--pilot", str(other)]) == 2
    assert "trained on other data" in capsys.readouterr().err

    # two pilots (another seed, here four times the push): the class takes the geometric mean of their speeds
    again = _pilot(tmp_path / "again" / "fold_0", plain["data_fingerprint"], [0.5, 0.95, 0.96, 0.9, 0.2, 0.1], eps=80.0)
    assert _run([*reference, "--pilot", str(folder), "--pilot", str(again)]) == 0
    both = json.loads(capsys.readouterr().out)
    (two,) = both["classes"]
    first, second = two["pilots"]
    assert two["pilot"] == first == pilot and second["eps"] == 80.0 and len(both["pilots"]) == 2
    assert two["speed"] == pytest.approx(math.sqrt(first["speed"] * second["speed"])) and not two["speed_bound"]
    assert two["rho_half"] == pytest.approx(A.RHO_HALF * two["speed"])
    assert first["speed"] < two["speed"] < second["speed"]
    # ... and its Φ = I window spans both: the slower pilot's lower edge, the faster's upper edge
    assert two["speed_span"] == [pytest.approx(first["speed"]), pytest.approx(second["speed"])]
    assert _run([*reference, "--pilot", str(again)]) == 0
    alone = json.loads(capsys.readouterr().out)["classes"][0]
    assert two["eps_window_I"] == [pytest.approx(read["eps_window_I"][0]), pytest.approx(alone["eps_window_I"][1])]
    assert read["eps_half_I"] < two["eps_half_I"] < alone["eps_half_I"]
    assert _run(reference[:-1] + ["--pilot", str(folder), "--pilot", str(again)]) == 0
    shown = capsys.readouterr().out
    assert "the geometric mean of 2 pilots" in shown and "from the slowest pilot's lower edge" in shown
    assert _run([*reference, "--pilot", str(folder), "--pilot", str(other)]) == 2  # one on other data: refused
    assert "trained on other data" in capsys.readouterr().err
    batch = _pilot(tmp_path / "bi" / "fold_0", plain["data_fingerprint"], [0.9, 0.1], phi="BI")
    assert _run([*reference, "--pilot", str(batch)]) == 2
    assert "not a pilot the model reads" in capsys.readouterr().err
    assert _run([*reference, "--pilot-cases", str(cases)]) == 2
    assert "give the pilot with --pilot" in capsys.readouterr().err
