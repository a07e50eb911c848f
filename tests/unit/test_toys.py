"""The toy datasets of ``nnunet-dicephi toy``: each scenario's properties, seeding, the verb's refusals."""

import json
import os

import numpy as np
import pytest

from nnunet_dicephi import demo, toys
from nnunet_dicephi.cli import main
from tests.conftest import raw_arrays


def _generate(name, train, test, seed=0):
    return toys.SCENARIOS[name].generate(np.random.default_rng(seed), train, test)


def _area(case, value):
    return int(np.count_nonzero(case.label == value))


def test_every_image_is_one_channel_2d_float32_with_uint8_labels():
    flat = [name for name, scenario in toys.SCENARIOS.items() if scenario.dimensions == 2]
    regimes = [f"transition-{name}" for name, _, options in toys.TRANSITION_REGIMES if "dimensions" not in options]
    assert flat == ["missing-vs-empty", "rare-class", "imbalanced", *regimes]  # the 3D ones: test_toys_3d.py
    for name in flat:
        for split, cases in _generate(name, 4, 3).splits.items():
            for case in cases:
                assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
                assert case.image.ndim == 3 and case.image.shape[0] == 1 and case.image.shape[1] == case.image.shape[2]
                assert case.label.shape == case.image.shape
                assert case.test == (split == "test")
                assert set(np.unique(case.label)) <= set(toys.SCENARIOS[name].labels.values())


@pytest.mark.parametrize(("train", "test"), [(10, 5), (50, 20), (7, 3)])
def test_rare_class_is_present_in_exactly_its_share_of_each_split(train, test):
    data = _generate("rare-class", train, test)
    for split, count in (("train", train), ("test", test)):
        cases = data.splits[split]
        assert len(cases) == count
        assert all(_area(case, 1) > 0 for case in cases)  # the common class is everywhere
        assert sum(_area(case, 2) > 0 for case in cases) == round(toys.RARE_SHARE * count)


def test_rare_class_is_far_smaller_than_the_common_one_and_darker():
    data = _generate("rare-class", 60, 20)
    cases = [case for split in data.splits.values() for case in split]
    common = np.mean([_area(case, 1) for case in cases])
    rare = np.mean([_area(case, 2) for case in cases if _area(case, 2)])
    assert rare < 0.1 * common
    assert min(_area(case, 2) for case in cases if _area(case, 2)) >= 9  # a radius of 2 voxels at least
    for case in cases:
        if _area(case, 2):
            assert (
                case.image[case.label == 2].mean()
                < case.image[case.label == 0].mean()
                < case.image[case.label == 1].mean()
            )


def test_which_images_hold_the_rare_class_is_seeded_not_the_first_ones():
    holders = [
        [i for i, case in enumerate(_generate("rare-class", 20, 5, seed).splits["train"]) if _area(case, 2)]
        for seed in (0, 1)
    ]
    assert holders[0] != holders[1]
    assert holders[0] != list(range(4))


def test_imbalanced_classes_are_all_in_every_image_of_very_different_sizes_and_never_touch():
    from scipy.ndimage import binary_dilation, label

    data = _generate("imbalanced", 30, 10)
    cases = [case for split in data.splits.values() for case in split]
    areas = {value: [] for value in (1, 2, 3)}
    for case in cases:
        for value in areas:
            mask = case.label[0] == value
            assert label(mask)[1] == 1  # one whole disc, nothing cut away by another
            assert not (binary_dilation(mask) & (case.label[0] != value) & (case.label[0] != 0)).any()
            areas[value].append(int(mask.sum()))
    size = cases[0].image.shape[-1]
    large, medium, small = (np.mean(areas[v]) for v in (1, 2, 3))
    assert large == pytest.approx(np.pi * (size / 4) ** 2, rel=0.15)
    assert medium == pytest.approx(np.pi * (size / 10) ** 2, rel=0.2)
    assert small == pytest.approx(np.pi * max(2.0, size / 25) ** 2, rel=0.3)
    assert large > 4 * medium > 16 * small
    intensities = [np.mean([case.image[case.label == v].mean() for case in cases]) for v in (0, 1, 2, 3)]
    assert min(abs(a - b) for i, a in enumerate(intensities) for b in intensities[i + 1 :]) > 0.5


def test_discs_that_cannot_be_placed_are_a_clear_error():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"could not place a disc of radius 8.0 beside 1 others .* in 200 tries"):
        toys.place_discs(rng, 20, [8.0, 8.0])
    with pytest.raises(ValueError, match=r"does not fit in a 10×10 image"):
        toys.place_discs(rng, 10, [4.0])


def test_missing_vs_empty_is_the_demos_data(nnunet_folders, tmp_path):
    folder = toys.write_toy("missing-vs-empty", 11, seed=5, train_cases=6, test_cases=4)
    reference = demo.write_dataset(tmp_path / "demo", demo.DemoSize(train_cases=6, test_cases=4), seed=5)
    ours, theirs = raw_arrays(folder), raw_arrays(reference)
    assert sorted(ours) == sorted(theirs) and len(ours) == 2 * (6 + demo.DemoSize().validation_cases + 4)
    for key, array in theirs.items():
        assert ours[key].dtype == array.dtype and np.array_equal(ours[key], array), key
    assert (folder / "lesion_types.json").read_text() == (reference / "lesion_types.json").read_text()
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "lesion": 1} and "dicephi_partial_labels" not in dataset
    record = json.loads((folder / toys.RECORD_FILE).read_text())
    assert record["classes"]["lesion"]["train"]["present"] == 6 - 6 // demo.DemoSize().unlabelled_every
    assert record["classes"]["lesion"]["test"]["share"] == 1.0
    splits = json.loads((folder / "splits_final.json").read_text())
    types = json.loads((folder / "lesion_types.json").read_text())
    # the demo's split as each of nnU-Net's five folds: no fold falls back to a random split that
    # would train on the (fully labelled) validation images
    assert splits == [{"train": sorted(types["train"]), "val": sorted(types["val"])}] * 5


def test_the_defaults_are_the_demos_sizes():
    scenario, size = toys.SCENARIOS["missing-vs-empty"], demo.DemoSize()
    assert (scenario.train_cases, scenario.test_cases) == (size.train_cases, size.test_cases)


def test_same_seed_same_files_other_seed_other_files(nnunet_folders):
    for index, name in enumerate(toys.SCENARIOS):
        first = raw_arrays(toys.write_toy(name, 100 + index, "A", seed=3, train_cases=5, test_cases=3))
        again = raw_arrays(toys.write_toy(name, 200 + index, "B", seed=3, train_cases=5, test_cases=3))
        other = raw_arrays(toys.write_toy(name, 300 + index, "C", seed=4, train_cases=5, test_cases=3))
        assert all(np.array_equal(first[key], again[key]) for key in first), name
        assert not all(np.array_equal(first[key], other[key]) for key in first), name


def test_the_record_quotes_what_the_labels_measure(nnunet_folders):
    folder = toys.write_toy("rare-class", 21, seed=2, train_cases=10, test_cases=5)
    record = json.loads((folder / toys.RECORD_FILE).read_text())
    from nnunet_dicephi import __version__

    assert (record["scenario"], record["seed"], record["version"]) == ("rare-class", 2, __version__)
    assert record["counts"] == {"train": 10, "test": 5} and record["image_shape"] == [1, 64, 64]
    arrays = raw_arrays(folder)
    rare_train = [a for key, a in arrays.items() if key.startswith("labelsTr/") and (a == 2).any()]
    assert record["classes"]["rare"]["train"] == {
        "cases": 10,
        "present": 2,
        "share": 0.2,
        "mean_area": pytest.approx(np.mean([(a == 2).sum() for a in rare_train]), abs=0.01),
    }
    assert record["classes"]["common"]["test"]["present"] == 5


def test_unknown_scenario_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown toy scenario 'rare' \(did you mean 'rare-class'\?\); known: "):
        toys.write_toy("rare", 1)
    with pytest.raises(ValueError, match=r"known: missing-vs-empty, rare-class, imbalanced"):
        toys.write_toy("zebra", 1)


def test_the_verb_writes_a_dataset_nnunet_accepts(nnunet_folders, capsys):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    assert main(["toy", "imbalanced", "-d", "31", "--train-cases", "3", "--test-cases", "2", "--seed", "1"]) == 0
    folder = nnunet_folders["nnUNet_raw"] / "Dataset031_ToyImbalanced"
    out = capsys.readouterr().out
    assert f"wrote {folder}: 3 cases in imagesTr (train 3), 2 in imagesTs" in out
    assert "next: nnUNetv2_plan_and_preprocess -d 31 --verify_dataset_integrity" in out
    verify_dataset_integrity(str(folder), num_processes=1)
    assert len(list((folder / "imagesTs").glob("*_0000.nii.gz"))) == 2


def _refused(capsys, argv):
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and err.count("nnunet-dicephi toy: error:") == 1, err
    return err


def test_the_verb_refuses_bad_input_with_one_message(nnunet_folders, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["toy", "zebra", "-d", "5"])
    assert exit_info.value.code == 2 and "invalid choice: 'zebra'" in capsys.readouterr().err
    assert "dataset id must be an integer from 1 to 999" in _refused(capsys, ["toy", "rare-class", "-d", "0"])
    assert "dataset name 'a b' is not allowed" in _refused(capsys, ["toy", "rare-class", "-d", "5", "--name", "a b"])
    assert not any(nnunet_folders["nnUNet_raw"].iterdir())


def test_an_existing_folder_needs_force_and_force_replaces_only_a_toy(nnunet_folders, capsys):
    raw = nnunet_folders["nnUNet_raw"]
    argv = ["toy", "rare-class", "-d", "41", "--train-cases", "3", "--test-cases", "2"]
    assert main(argv) == 0
    folder = raw / "Dataset041_ToyRareClass"
    before = raw_arrays(folder)
    assert "exists; pass --force" in _refused(capsys, [*argv, "--seed", "1"])
    assert [p.name for p in raw.iterdir()] == [folder.name]  # nothing half-written, no staging folder left
    assert all(np.array_equal(before[key], a) for key, a in raw_arrays(folder).items())
    assert main([*argv, "--seed", "1", "--force"]) == 0
    assert json.loads((folder / toys.RECORD_FILE).read_text())["seed"] == 1
    assert [p.name for p in raw.iterdir()] == [folder.name]

    converted = raw / "Dataset042_Converted"
    converted.mkdir()
    (converted / "dataset.json").write_text("{}")
    err = _refused(capsys, ["toy", "imbalanced", "-d", "42", "--name", "Converted", "--force"])
    assert "holds no dicephi_toy.json, so it is not a toy dataset" in err
    assert [p.name for p in converted.iterdir()] == ["dataset.json"]


def test_the_published_folder_is_readable_by_others_as_mkdir_would_make_it(nnunet_folders):
    before = os.umask(0o022)
    try:
        folder = toys.write_toy("imbalanced", 61, train_cases=1, test_cases=1)
    finally:
        os.umask(before)
    modes = {path.name: path.stat().st_mode & 0o777 for path in [folder, *folder.iterdir()]}
    assert modes[folder.name] == modes["imagesTr"] == 0o755 and modes["dataset.json"] == 0o644, modes


def test_an_id_taken_by_another_dataset_is_refused(nnunet_folders, capsys):
    (nnunet_folders["nnUNet_preprocessed"] / "Dataset051_Other").mkdir()
    assert "dataset id 51 is taken by" in _refused(capsys, ["toy", "imbalanced", "-d", "51"])


def test_no_nnunet_raw_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    assert "nnUNet_raw is not set" in _refused(capsys, ["toy", "imbalanced", "-d", "52"])


def test_the_verb_has_a_one_line_summary_and_a_description():
    import argparse

    verbs = argparse.ArgumentParser().add_subparsers()
    toys.add_parser(verbs)
    parser = verbs.choices["toy"]
    assert parser.description and "dicephi_toy.json" in parser.description
    summary = next(a.help for a in verbs._choices_actions if a.dest == "toy")
    assert summary == "Write a seeded toy dataset for a study into nnUNet_raw"
    args = parser.parse_args(["imbalanced", "-d", "7"])
    assert (args.seed, args.train_cases, args.test_cases, args.force, args.func) == (0, None, None, False, toys.run_toy)


# --- the transition's regimes: the demo's data with one thing changed ------------------------------


def _lesion_areas(data, split="train"):
    return np.array([_area(case, 1) for case in data.splits[split]])


def test_missing_vs_empty_is_the_regime_with_every_default():
    demo_data, regime = _generate("missing-vs-empty", 12, 4), toys.lesion_regime(np.random.default_rng(0), 12, 4)
    assert regime.extra_files == demo_data.extra_files
    for split, cases in demo_data.splits.items():
        for a, b in zip(cases, regime.splits[split], strict=True):
            assert a.case_id == b.case_id and np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)


@pytest.mark.parametrize(("name", "low", "high"), [("transition-small", 0.2, 0.32), ("transition-large", 3.5, 4.5)])
def test_the_size_regimes_scale_the_lesion_area_and_nothing_else(name, low, high):
    demo_data, regime = _generate("missing-vs-empty", 24, 6), _generate(name, 24, 6)
    for split in ("train", "val", "test"):
        base, scaled = _lesion_areas(demo_data, split), _lesion_areas(regime, split)
        assert np.array_equal(base == 0, scaled == 0)  # the same images hold an empty map
        assert low <= scaled[scaled > 0].mean() / base[base > 0].mean() <= high


@pytest.mark.parametrize(("name", "every"), [("transition-empty-1in6", 6), ("transition-empty-1in2", 2)])
def test_the_empty_share_regimes_empty_one_training_map_in_n(name, every):
    data = _generate(name, 48, 6)
    types = json.loads(data.extra_files["lesion_types.json"])
    assert list(types["train"].values()).count("B") == 48 // every
    assert np.mean(_lesion_areas(data) == 0) == pytest.approx(1 / every)
    assert (_lesion_areas(data, "test") > 0).all() and list(types["test"].values()).count("B") == 3


def test_among_others_labels_two_more_structures_in_every_image_and_empties_only_the_lesion():
    data = _generate("transition-among-others", 12, 4)
    types = json.loads(data.extra_files["lesion_types.json"])
    for split, cases in data.splits.items():
        for case in cases:
            assert _area(case, 2) > 0 and _area(case, 3) > 0
            hidden = split == "train" and types[split][case.case_id] == "B"
            assert (_area(case, 1) == 0) == hidden
            assert (
                case.image[case.label == 2].mean()
                < case.image[case.label == 0].mean()
                < case.image[case.label == 3].mean()
            )
