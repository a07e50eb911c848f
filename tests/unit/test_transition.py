"""The measured transition in the report, from hand-made nnU-Net results folders.

Seven trainer folders of one dataset: Φ = I at four ε (1e-7, 1, 100, the heuristic), Φ = BI with
the batch-size plans variants B = 1, 2, 4, and one unrelated trainer. Their validation predictions
segment less of class 1 as ε grows (made so), and the training maps in nnUNet_preprocessed have the
class empty in one case in three.
"""

import json

import numpy as np
import pytest

from nnunet_dicephi.analysis.eq4 import batch_gradients
from nnunet_dicephi.analysis.report import build_report
from nnunet_dicephi.analysis.transition import find_sweeps

sitk = pytest.importorskip("SimpleITK")

DATASET = "Dataset951_Sweep"
SHAPE = (1, 12, 12)
DATASET_JSON = {
    "channel_names": {"0": "MR"},
    "labels": {"background": 0, "lesion": 1},
    "numTraining": 6,
    "file_ending": ".nii.gz",
}
TRAIN = ["t0", "t1", "t2", "t3", "t4", "t5"]  # t2 and t5: empty lesion maps
VAL = ["v0", "v1"]
HEURISTIC = 24.0
LESION = 36  # voxels of a labelled training map


def labels(voxels: int) -> np.ndarray:
    flat = np.zeros(int(np.prod(SHAPE)), np.uint8)
    flat[:voxels] = 1
    return flat.reshape(SHAPE)


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


def trainer(results, name, plans, batch, predicted_voxels, eps_per_class=None):
    folder = results / DATASET / f"{name}__{plans}__2d"
    plans_json = {
        "dataset_name": DATASET,
        "plans_name": plans,
        "image_reader_writer": "SimpleITKIO",
        "configurations": {"2d": {"batch_size": batch, "patch_size": [12, 12]}},
    }
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans_json))
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON))
    (folder / "fold_0" / "dicephi_loss.json").write_text(json.dumps({"eps_per_class": eps_per_class}))
    for case in VAL:
        write(folder / "fold_0" / "validation" / f"{case}.nii.gz", labels(predicted_voxels))
    return folder


@pytest.fixture
def sweep_results(tmp_path, monkeypatch):
    results, preprocessed = tmp_path / "nnUNet_results", tmp_path / "nnUNet_preprocessed"
    gt = preprocessed / DATASET / "gt_segmentations"
    for case in TRAIN:
        write(gt / f"{case}.nii.gz", labels(0 if case in ("t2", "t5") else LESION))
    for case in VAL:
        write(gt / f"{case}.nii.gz", labels(20))
    (preprocessed / DATASET / "splits_final.json").write_text(json.dumps([{"train": TRAIN, "val": VAL}]))
    folders = [
        trainer(results, "TrainerDiceI", "nnUNetPlans", 3, 20),  # ε = 1e-7: all of the lesion
        trainer(results, "TrainerDiceI_eps1", "nnUNetPlans", 3, 15),
        trainer(results, "TrainerDiceI_eps1e2", "nnUNetPlans", 3, 5),
        trainer(results, "TrainerDiceIEps", "nnUNetPlans", 3, 10, eps_per_class=[120.0, HEURISTIC]),
        trainer(results, "TrainerDiceBI", "nnUNetPlans_bs1", 1, 20),
        trainer(results, "TrainerDiceBI", "nnUNetPlans_bs2", 2, 2),
        trainer(results, "TrainerDiceBI", "nnUNetPlans_bs4", 4, 0),
        trainer(results, "TrainerLovasz", "nnUNetPlans", 3, 20),
        trainer(results, "TrainerCE", "nnUNetPlans", 3, 20),  # no ε: in no ε sweep
    ]
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    monkeypatch.setenv("nnUNet_results", str(results))
    return folders


def test_sweeps_are_the_configurations_that_differ_only_in_eps_or_in_b(sweep_results, tmp_path):
    report = build_report(sweep_results, tmp_path / "report", n_resamples=50, workers=1)
    sweeps = find_sweeps(report.configurations)
    assert sorted((s.axis, len(s.members)) for s in sweeps) == [("batch", 3), ("eps", 4)]
    table = __import__("pandas").read_csv(tmp_path / "report" / "transition.csv")
    assert (tmp_path / "report" / f"transition_{DATASET}.png").is_file()
    assert "transition_" in (tmp_path / "report" / "report.md").read_text()
    eps = table[table["sweep_axis"] == "eps"].sort_values("sweep_value")
    # the heuristic sits at the ε its run recorded for the class, between 1 and 100
    assert list(eps["sweep_value"]) == [1e-7, 1.0, HEURISTIC, 100.0]
    assert list(eps["heuristic_eps"]) == [False, False, True, False]
    assert list(eps["dsc_mean"]) == pytest.approx([1.0, 2 * 15 / 35, 2 * 10 / 30, 2 * 5 / 25])
    assert list(eps["delta_ml_mean"]) == pytest.approx([0.0, -0.005, -0.01, -0.015])
    # Eq. 4 from the training maps: f = 1/3 empty, V = 36, N = 144: from ignored (≈ 0) at ε ≈ 0 to
    # learned (≥ 1, overshooting on the way) from the heuristic ε on
    push = eps["eq4_empty_to_background"].to_numpy(float)
    assert push[0] < 1e-6 and push[0] < push[1] < push[2] and min(push[2:]) > 1
    f, volume = 1 / 3, float(LESION)
    expected = batch_gradients(
        volume, (1 - f) * volume, batch_size=3, empty_fraction=f, phi="I", eps_nr=1.0, eps_dr=1.0
    )
    assert push[1] == pytest.approx(float(expected.empty_to_background))
    batch = table[table["sweep_axis"] == "batch"].sort_values("sweep_value")
    assert list(batch["sweep_value"]) == [1.0, 2.0, 4.0]
    b_push = batch["eq4_empty_to_background"].to_numpy(float)
    assert b_push[0] < 1e-6 and b_push[1:] == pytest.approx([1.0, 1.0])  # Φ = BI, B ≥ 2: one subset
    assert not {"TrainerLovasz", "TrainerCE"} & set(table["configuration"])


def test_without_the_training_maps_the_prediction_is_left_out_with_a_note(sweep_results, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "elsewhere"))
    report = build_report(
        sweep_results,
        tmp_path / "report",
        reference=tmp_path / "nnUNet_preprocessed" / DATASET / "gt_segmentations",
        n_resamples=50,
        workers=1,
    )
    table = __import__("pandas").read_csv(tmp_path / "report" / "transition.csv")
    assert table["eq4_empty_to_background"].isna().all() and len(table) == 7
    assert any("Eq. 4's prediction left out" in note for note in report.notes)


def test_a_report_without_sweeps_writes_no_transition(sweep_results, tmp_path):
    build_report(sweep_results[:1] + sweep_results[-1:], tmp_path / "report", n_resamples=50, workers=1)
    assert not (tmp_path / "report" / "transition.csv").exists()
    assert not list((tmp_path / "report").glob("transition_*.png"))


@pytest.mark.parametrize("value, dsc", [(0.0, 0.5), (40.0, np.nan)])
def test_the_figure_skips_a_class_with_nothing_to_place(tmp_path, value, dsc):
    """No heuristic ε (a class never labelled in the training patches), or no DSC (never labelled
    in the cases scored): the class's panel says so instead of failing the report."""
    import pandas as pd

    from nnunet_dicephi.analysis.transition import write_transition_figure

    rows = [
        {
            "dataset": "D",
            "class": name,
            "sweep": "Dice, Φ = I: ε",
            "sweep_axis": "eps",
            "sweep_value": x,
            "eq4_empty_to_background": np.nan,
            "heuristic_eps": heuristic,
            "dsc_mean": y,
            "delta_ml_mean": 0.0,
        }
        for name, x, heuristic, y in [("a", 1e-7, False, 0.9), ("a", 40.0, True, 0.5), ("b", value, True, dsc)]
    ]
    assert write_transition_figure(pd.DataFrame(rows), "D", tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0
