"""The demo's data, metrics and table, without nnU-Net."""

import json

import numpy as np
import pytest

from nnunet_dicephi import demo


def test_dice_of_two_empty_maps_is_one_and_partial_overlap_is_exact():
    empty = np.zeros((1, 4, 4), bool)
    assert demo.dice(empty, empty) == 1.0
    a, b = empty.copy(), empty.copy()
    a[0, :2, :2] = True  # 4 voxels
    b[0, :2, :1] = True  # 2 voxels, both inside a
    assert demo.dice(a, b) == pytest.approx(2 * 2 / 6)
    assert demo.dice(a, empty) == 0.0


def test_lesion_types_differ_only_by_stripes_and_are_seeded():
    image_a, label_a = demo.lesion_case(np.random.default_rng(3), "A", 48)
    image_b, label_b = demo.lesion_case(np.random.default_rng(3), "B", 48)
    assert np.array_equal(label_a, label_b) and label_a.sum() > 20
    changed = image_a != image_b
    assert changed.any() and not (changed & (label_a == 0)).any()  # stripes lie inside the lesion only
    again, _ = demo.lesion_case(np.random.default_rng(3), "B", 48)
    assert np.array_equal(image_b, again)


def test_training_labels_of_type_b_are_empty_and_test_labels_complete(tmp_path):
    import SimpleITK as sitk

    raw = demo.write_dataset(tmp_path, demo.SMOKE, seed=1)
    types = json.loads((raw / "lesion_types.json").read_text())
    for split, folder in (("train", "labelsTr"), ("test", "labelsTs")):
        for case, kind in types[split].items():
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / folder / f"{case}.nii.gz")))
            assert (label.sum() == 0) == (split == "train" and kind == "B")
    assert json.loads((raw / "dataset.json").read_text())["numTraining"] == demo.SMOKE.train_cases
    # the labelled type is the majority in training (one B in ``unlabelled_every``); the test set is balanced
    train_b = list(types["train"].values()).count("B")
    assert train_b == demo.SMOKE.train_cases // demo.SMOKE.unlabelled_every
    assert list(types["test"].values()).count("B") == demo.SMOKE.test_cases // 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_table_marks_each_behaviour_against_its_expectation():
    def scores(a, b):
        return {"A": {"dsc": a, "dv_ml": 0.0}, "B": {"dsc": b, "dv_ml": 0.1}}

    table = demo.results_table(
        {"TrainerDiceI": scores(0.9, 0.85), "TrainerDiceBI": scores(0.9, 0.5), "TrainerDiceIEps": scores(0.7, 0.0)}
    )
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert rows["TrainerDiceI"].rstrip().endswith("| yes |")
    assert rows["TrainerDiceBI"].rstrip().endswith("| NO |")  # B kept although labels were empty
    assert rows["TrainerDiceIEps"].rstrip().endswith("| NO |")  # A lost
