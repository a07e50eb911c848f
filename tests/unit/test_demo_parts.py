"""The demo's data, metrics and table, without nnU-Net."""

import json

import numpy as np
import pytest

from nnunet_dicephi import demo
from nnunet_dicephi.analysis.metrics import case_metrics
from nnunet_dicephi.synthetic import lesion_case


def _dice(prediction, reference):
    return case_metrics(reference.astype(np.uint8), prediction.astype(np.uint8), [demo.LESION])[0].dsc


def test_dice_of_two_empty_maps_is_one_and_partial_overlap_is_exact():
    empty = np.zeros((1, 4, 4), bool)
    assert _dice(empty, empty) == 1.0
    a, b = empty.copy(), empty.copy()
    a[0, :2, :2] = True  # 4 voxels
    b[0, :2, :1] = True  # 2 voxels, both inside a
    assert _dice(a, b) == pytest.approx(2 * 2 / 6)
    assert _dice(a, empty) == 0.0


def test_lesion_types_differ_only_by_stripes_and_are_seeded():
    image_a, label_a = lesion_case(np.random.default_rng(3), "A", 48)
    image_b, label_b = lesion_case(np.random.default_rng(3), "B", 48)
    assert np.array_equal(label_a, label_b) and label_a.sum() > 20
    changed = image_a != image_b
    assert changed.any() and not (changed & (label_a == 0)).any()  # stripes lie inside the lesion only
    assert (image_b <= image_a).all() and (image_a - image_b).max() == pytest.approx(1.05)  # darker stripes
    again, _ = lesion_case(np.random.default_rng(3), "B", 48)
    assert np.array_equal(image_b, again)


def test_training_labels_of_type_b_are_empty_and_test_labels_complete(tmp_path):
    import SimpleITK as sitk

    raw = demo.write_dataset(tmp_path, demo.SMOKE, seed=1)
    types = json.loads((raw / "lesion_types.json").read_text())
    for split, folder in (("train", "labelsTr"), ("val", "labelsTr"), ("test", "labelsTs")):
        for case, kind in types[split].items():
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / folder / f"{case}.nii.gz")))
            assert (label.sum() == 0) == (split == "train" and kind == "B")
    size = demo.SMOKE
    assert json.loads((raw / "dataset.json").read_text())["numTraining"] == size.train_cases + size.validation_cases
    assert sorted(types["val"].values()) == ["A", "B"] * (size.validation_cases // 2) or size.validation_cases < 2
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


def _trend(epochs, a, b, va=None, vb=None):
    n = len(epochs)
    return {
        "epochs": list(epochs),
        "A": {"dsc": a, "volume": va or [1.0] * n},
        "B": {"dsc": b, "volume": vb or [1.0] * n},
    }


def _scores(a, b):
    return {"A": {"dsc": a, "dv_ml": 0.0}, "B": {"dsc": b, "dv_ml": 0.0}}


PHI_I, BI, IEPS = demo.EXPECTATIONS


def test_validation_trend_pools_counts_per_type_and_epoch():
    record = {
        0: {"v0": np.array([[8.0, 2.0, 0.0]]), "v1": np.array([[0.0, 5.0, 10.0]])},
        1: {"v0": np.array([[9.0, 0.0, 1.0]])},  # no B case drawn in this epoch
    }
    trend = demo.validation_trend(record, {"v0": "A", "v1": "B"})
    assert trend["epochs"] == [0, 1]
    assert trend["A"]["dsc"] == pytest.approx([16 / 18, 18 / 19])
    assert trend["A"]["volume"] == pytest.approx([10 / 8, 9 / 10])
    assert trend["B"]["dsc"][0] == 0.0 and trend["B"]["volume"][0] == pytest.approx(0.5)
    assert np.isnan(trend["B"]["dsc"][1]) and np.isnan(trend["B"]["volume"][1])


def test_a_miss_is_explained_by_the_end_of_training():
    epochs = range(12)
    falling = [0.9] * 8 + [0.9, 0.85, 0.75, 0.65]
    still = demo.explain(IEPS, _scores(0.97, 0.6), _trend(epochs, [0.97] * 12, falling, vb=falling))
    assert still.startswith("NOT reproduced") and "still learning the empty maps" in still
    assert "falling from 0.80 to 0.70" in still and "over the last 3 epochs" in still

    flat = demo.explain(BI, _scores(0.97, 0.6), _trend(epochs, [0.97] * 12, [0.6] * 12, vb=[0.7] * 12))
    assert "does not learn the empty maps" in flat and "70 %" in flat

    empty = [0.0] * 12
    collapsed = demo.explain(IEPS, _scores(0.0, 0.0), _trend(epochs, empty, empty, va=empty, vb=empty))
    assert "empty maps for the labelled type too" in collapsed

    partial = demo.explain(PHI_I, _scores(0.97, 0.7), _trend(epochs, [0.97] * 12, [0.7] * 12, vb=[0.6] * 12))
    assert "segments B only partly" in partial and "60 %" in partial
    over = demo.explain(PHI_I, _scores(0.97, 0.5), _trend(epochs, [0.97] * 12, [0.5] * 12, vb=[2.0] * 12))
    assert "over-segments B" in over and "200 %" in over

    assert demo.explain(PHI_I, _scores(0.97, 0.9), {}).startswith("as expected")
    assert "no validation record" in demo.explain(BI, _scores(0.97, 0.5), {})


def test_the_epoch_from_which_b_stays_left_out():
    trend = _trend(range(6), [0.9] * 6, [0.9, 0.05, 0.3, 0.08, float("nan"), 0.0])
    assert demo.left_out_since(trend) == 3  # the dip at epoch 1 came back; NaN epochs drew no B case
    assert demo.left_out_since(_trend(range(3), [0.9] * 3, [0.9, 0.8, 0.2])) is None
    said = demo.explain(BI, _scores(0.97, 0.0), trend)
    assert said == "as expected: leaves B out (test DSC A 0.97, B 0.00; on the validation images from epoch 4 of 6)"


def test_a_miss_ends_with_what_it_means():
    line = demo.miss_line(["TrainerDiceIEps"], 9)
    assert line.startswith("Not reproduced with training seed 9: TrainerDiceIEps;")
    assert demo.MEASURED_SEEDS in line and "--train-seed" in line and "train longer" in line


def test_the_seed_script_prints_the_readme_table():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "demo_seeds.py"
    spec = importlib.util.spec_from_file_location("demo_seeds", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    left_out_from_4 = _trend(range(6), [0.9] * 6, [0.9, 0.9, 0.5, 0.05, 0.0, 0.0])
    kept = _trend(range(6), [0.9] * 6, [0.9] * 6)
    rows = [
        {"train_seed": 7, "trainer": "TrainerDiceI", "holds": True, **_scores(0.99, 0.94), "trend": kept},
        {"train_seed": 7, "trainer": "TrainerDiceBI", "holds": True, **_scores(0.98, 0.0), "trend": left_out_from_4},
        {"train_seed": 7, "trainer": "TrainerDiceIEps", "holds": False, **_scores(0.97, 0.4), "trend": kept},
    ]
    table = script.per_seed_table(rows).splitlines()
    assert table[2] == "| 7 | 0.99 / 0.94 | 0.98 / 0.00 | 4 | 0.97 / 0.40 | – | no |"
