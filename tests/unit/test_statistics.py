"""The exact expected patch volume equals sampling with nnU-Net's own crop code."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

from nnunet_dicephi.statistics import SamplingModel, case_expected_volume, window_sums


def _nnunet_sampler(model: SamplingModel):
    """nnU-Net's real get_bbox and oversampling rule on a loader object built without a dataset."""
    loader = object.__new__(nnUNetDataLoader)
    loader.patch_size = model.initial_patch_size
    loader.final_patch_size = model.patch_size
    excess = np.array(model.initial_patch_size) - np.array(model.patch_size)
    loader.need_to_pad = (excess if model.need_to_pad is None else np.array(model.need_to_pad)).astype(int)
    loader.has_ignore = model.ignore_label is not None
    loader.batch_size = model.batch_size
    loader.oversample_foreground_percent = model.oversample_foreground_percent
    return loader


def _simulate(seg, labels, model, draws, seed):
    rng = np.random.default_rng(seed)
    np.random.seed(seed)
    loader = _nnunet_sampler(model)
    locations = {c: np.argwhere(seg == c) for c in labels}
    class_locations = {c: np.concatenate([np.zeros((len(v), 1), int), v], 1) for c, v in locations.items()}
    offset = (np.array(model.initial_patch_size) - np.array(model.patch_size)) // 2
    total = np.zeros(len(labels))
    for i in range(draws):
        forced = loader._oversample_last_XX_percent(i % model.batch_size)
        lbs, _ = loader.get_bbox(np.array(seg.shape), forced, class_locations)
        start = np.array(lbs) + offset
        window = tuple(slice(max(s, 0), max(s + p, 0)) for s, p in zip(start, model.patch_size))
        crop = seg[window]
        total += [(crop == c).sum() for c in labels]
    del rng
    return total / draws, class_locations


@pytest.mark.parametrize(
    "model",
    [
        SamplingModel((1, 12, 14), (1, 18, 20), batch_size=2, oversample_foreground_percent=0.33),
        SamplingModel((1, 12, 14), (1, 12, 14), batch_size=4, oversample_foreground_percent=0.5),
        SamplingModel((6, 8, 8), (8, 10, 12), batch_size=3, oversample_foreground_percent=0.33),
        SamplingModel((1, 40, 40), (1, 48, 48), batch_size=2, oversample_foreground_percent=0.33),  # patch > case
        # nnU-Net 2.6's 2d loader: no margin around the image
        SamplingModel((1, 12, 14), (1, 18, 20), 2, oversample_foreground_percent=0.33, need_to_pad=(0, 0, 0)),
    ],
)
def test_matches_nnunet_sampling(model):
    rng = np.random.default_rng(1)
    shape = (1, 24, 30) if model.patch_size[0] == 1 else (10, 16, 18)
    seg = np.zeros(shape, np.int16)
    seg[..., 2:7, 3:9] = 1
    seg[..., 15:20, 20:27] = 2
    seg[..., 11:13, 1:3] = 1
    seg[rng.random(shape) < 0.01] = 1
    simulated, class_locations = _simulate(seg, [1, 2], model, draws=6000, seed=2)
    exact = case_expected_volume(seg, [(1,), (2,)], model, class_locations)
    derived = case_expected_volume(seg, [(1,), (2,)], model)  # locations derived from seg: the same here
    assert np.allclose(exact, derived)
    assert np.allclose(exact, simulated, rtol=0.05, atol=0.3), (exact, simulated)


def test_window_sums_brute_force():
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 2, (5, 6, 7))
    window, starts = (2, 3, 4), [(-1, 4), (-2, 5), (0, 4)]
    sums = window_sums(volume, window, starts)
    padded = np.pad(volume, 10)
    for index in np.ndindex(sums.shape):
        s = [lo + i + 10 for (lo, _), i in zip(starts, index)]
        assert sums[index] == padded[s[0] : s[0] + 2, s[1] : s[1] + 3, s[2] : s[2] + 4].sum()


def test_case_without_foreground_falls_back_to_random_patches():
    seg = np.zeros((1, 10, 10), np.int16)
    model = SamplingModel((1, 4, 4), (1, 4, 4), batch_size=2, oversample_foreground_percent=1.0)
    assert case_expected_volume(seg, [(1,)], model).tolist() == [0.0]


def test_stored_locations_and_segmentation_give_the_same_result(monkeypatch):
    from nnunet_dicephi import statistics

    rng = np.random.default_rng(3)
    seg = np.zeros((1, 20, 22), np.int16)
    seg[0, 2:6, 3:9] = 1
    seg[0, 12:19, 14:20] = 2
    locations = {c: np.concatenate([np.zeros(((seg == c).sum(), 1), int), np.argwhere(seg[0] == c)], 1) for c in (1, 2)}
    model = SamplingModel((1, 8, 8), (1, 12, 12), batch_size=2, oversample_foreground_percent=0.33)
    read = []

    class Lazy:  # stands in for nnU-Net's blosc2 array: records whether it was decompressed
        shape = seg.shape

        def __getitem__(self, item):
            read.append(item)
            return seg[item]

    complete = case_expected_volume(Lazy(), [(1,), (2,)], model, locations)
    assert read == []  # every class below nnU-Net's 10,000-voxel cap: stored locations suffice
    monkeypatch.setattr(statistics, "LOCATION_CAP", 5)  # now they look subsampled
    subsampled = {c: v[rng.permutation(len(v))[:5]] for c, v in locations.items()}
    from_seg = case_expected_volume(Lazy(), [(1,), (2,)], model, subsampled)
    assert read != []
    forced_same_centres = case_expected_volume(seg, [(1,), (2,)], model, subsampled)
    assert np.allclose(from_seg, forced_same_centres)
    monkeypatch.setattr(statistics, "LOCATION_CAP", 0)  # read as maps, forced centres unchanged
    assert np.allclose(complete, case_expected_volume(seg, [(1,), (2,)], model, locations))
    monkeypatch.setattr(statistics, "LOCATION_CAP", 10000)
    assert np.allclose(complete, case_expected_volume(seg, [(1,), (2,)], model, None))


@settings(max_examples=80)
@given(
    shape=st.tuples(st.integers(1, 7), st.integers(1, 9), st.integers(1, 9)),
    patch=st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12)),
    seed=st.integers(0, 10_000),
    k=st.sampled_from([1, 25, 400]),
)
def test_box_counts_equal_brute_force(shape, patch, seed, k):
    """Both voxel representations, boxes that hold all, some or none of the voxels along each axis.

    With 400 starts the offsets repeat, so the weights are summed per distinct box first; starts
    merged beforehand (``_merge_repeated``) give the same count.
    """
    from nnunet_dicephi.statistics import _bounding_box, _box_counts, _Labelled, _merge_repeated

    rng = np.random.default_rng(seed)
    volume = np.zeros(shape, bool)
    volume[tuple(rng.integers(0, n, 6) for n in shape)] = True
    starts = np.stack([rng.integers(-p - 1, n + 1, k) for n, p in zip(shape, patch)])
    weights = rng.random(k)
    patch = np.array(patch)
    padded = np.pad(volume, [(p + 2, p + 2) for p in patch])
    expected = sum(
        w * padded[tuple(slice(s + p + 2, s + 2 * p + 2) for s, p in zip(start, patch))].sum()
        for start, w in zip(starts.T, weights)
    )
    box = _bounding_box(volume)
    origin = np.array([b.start for b in box])
    as_points = _Labelled.from_points(np.array(np.nonzero(volume)))
    as_map = _Labelled(origin, origin + volume[box].shape, dense=volume[box])
    assert np.isclose(_box_counts(as_points, starts, weights, patch), expected)
    assert np.isclose(_box_counts(as_map, starts, weights, patch), expected)
    merged, merged_weights = _merge_repeated(starts, weights)
    assert merged.shape[1] <= starts.shape[1] and np.isclose(merged_weights.sum(), weights.sum())
    assert np.isclose(_box_counts(as_map, merged, merged_weights, patch), expected)


def test_no_margin_leaves_the_border_out_of_random_patches():
    """nnU-Net 2.6's 2d crop (no margin): a random patch never reaches a voxel closer to the border than
    half the initial patch's excess; 2.7's does."""
    seg = np.zeros((1, 24, 24), np.int16)
    seg[0, 0, 0] = 1
    margin = SamplingModel((1, 8, 8), (1, 12, 12), batch_size=2, oversample_foreground_percent=0.0)
    none = SamplingModel((1, 8, 8), (1, 12, 12), batch_size=2, oversample_foreground_percent=0.0, need_to_pad=(0, 0, 0))
    assert case_expected_volume(seg, [(1,)], margin)[0] > 0
    assert case_expected_volume(seg, [(1,)], none)[0] == 0


class _Labels:  # the part of nnU-Net's LabelManager that the statistics read
    has_regions = False
    all_labels = [0, 1, 2]


def test_each_class_is_averaged_over_the_cases_that_annotate_it():
    """Hand-worked: random patches only, each the whole 4×4 image, so each case contributes its voxel count."""
    from nnunet_dicephi.statistics import compute_statistics

    def case(a, b):
        seg = np.zeros((1, 4, 4), np.int16)
        seg.reshape(-1)[:a] = 1
        seg.reshape(-1)[a : a + b] = 2
        return seg, None

    cases = [case(2, 0), case(4, 6), case(6, 2)]  # case 0 holds b, unannotated: its empty map is not "empty"
    model = SamplingModel((1, 4, 4), (1, 4, 4), batch_size=2, oversample_foreground_percent=0.0)
    every = compute_statistics(cases, _Labels(), model)
    assert every.expected_volume == pytest.approx((16 - 20 / 3, 12 / 3, 8 / 3))
    assert every.annotated_cases == (3, 3, 3)
    annotated = np.array([[False, True, False], [True, True, True], [True, True, True]])
    seen = compute_statistics(cases, _Labels(), model, annotated)
    # b over cases 1 and 2 only; background where every label is annotated (cases 1 and 2)
    assert seen.expected_volume == pytest.approx(((6 + 8) / 2, 12 / 3, (6 + 2) / 2))
    assert seen.annotated_cases == (2, 3, 2)
    nobody = np.array([[False, True, False], [False, True, True], [False, False, True]])
    partial = compute_statistics(cases, _Labels(), model, nobody)
    # no case is fully annotated: background is what the per-class means leave
    assert partial.expected_volume == pytest.approx((16 - 3 - 4, (2 + 4) / 2, (6 + 2) / 2))
    crowded = compute_statistics([case(12, 0), case(0, 12)], _Labels(), model, np.array([[0, 1, 0], [0, 0, 1]], bool))
    assert crowded.expected_volume == (0.0, 12.0, 12.0)  # 12 + 12 > 16 voxels: no negative background
    never = compute_statistics(cases, _Labels(), model, np.array([[True, True, False]] * 3))
    assert never.expected_volume[2] == 0 and never.annotated_cases[2] == 0  # no map of b is seen: no ε needed
    with pytest.raises(ValueError, match="expected .cases, channels."):
        compute_statistics(cases, _Labels(), model, annotated[:, :2])
