"""``nnunet-dicephi report`` on hand-made nnU-Net results folders, against numbers worked out by hand.

The toy: 120-voxel images (4 × 5 × 6), spacing 0.5 × 2 × 3 mm, so one voxel is 3 mm³ = 0.003 ml.
Labels are written as flat index ranges; classes A = 1 and B = 2. Cases c1, c2 are validated in
fold_0, c3, c4 in fold_1.
"""

import argparse
import json
import math
import statistics

import numpy as np
import pytest

from nnunet_dicephi.analysis import report
from nnunet_dicephi.analysis.report import ReportError, build_report

sitk = pytest.importorskip("SimpleITK")

SHAPE = (4, 5, 6)
SPACING = (0.5, 2.0, 3.0)  # SimpleITK order (x, y, z)
ML = 0.003
DATASET = "Dataset950_Toy"
DATASET_JSON = {
    "channel_names": {"0": "MR"},
    "labels": {"background": 0, "A": 1, "B": 2},
    "numTraining": 4,
    "file_ending": ".nii.gz",
}
PLANS = {"dataset_name": DATASET, "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO"}
FOLDS = {"c1": 0, "c2": 0, "c3": 1, "c4": 1}

REFERENCE = {"c1": {1: (0, 20), 2: (60, 70)}, "c2": {1: (0, 10)}, "c3": {2: (60, 80)}, "c4": {}}
TRAINER_A = {"c1": {1: (0, 20), 2: (65, 75)}, "c2": {1: (5, 15)}, "c3": {1: (30, 34), 2: (60, 80)}, "c4": {}}
TRAINER_B = {"c1": {1: (10, 30)}, "c2": {}, "c3": {2: (70, 90)}, "c4": {1: (100, 110)}}

# by hand, per case c1..c4
DSC = {
    ("TrainerA", "A"): [1.0, 0.5, 0.0, 1.0],  # exact; 5 of 10 overlap; empty ref + 4 voxels; empty/empty
    ("TrainerA", "B"): [0.5, 1.0, 1.0, 1.0],
    ("TrainerB", "A"): [0.5, 0.0, 1.0, 0.0],
    ("TrainerB", "B"): [0.0, 1.0, 0.5, 1.0],
}
DELTA_VOXELS = {
    ("TrainerA", "A"): [0, 0, 4, 0],
    ("TrainerA", "B"): [0, 0, 0, 0],
    ("TrainerB", "A"): [0, -10, 0, 10],
    ("TrainerB", "B"): [-10, 0, 0, 0],
}


def label_map(ranges, shape=SHAPE):
    flat = np.zeros(int(np.prod(shape)), np.uint8)
    for value, (start, stop) in ranges.items():
        flat[start:stop] = value
    return flat.reshape(shape)


def write(path, ranges, shape=SHAPE, spacing=SPACING):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(label_map(ranges, shape))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def trainer_folder(root, trainer, predictions, dataset_json=DATASET_JSON, folds=FOLDS):
    folder = root / DATASET / f"{trainer}__nnUNetPlans__2d"
    for case, ranges in predictions.items():
        write(folder / f"fold_{folds[case]}" / "validation" / f"{case}.nii.gz", ranges)
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    (folder / "plans.json").write_text(json.dumps(PLANS))
    return folder


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """nnUNet_results with TrainerA and TrainerB, and nnUNet_preprocessed/…/gt_segmentations."""
    results = tmp_path / "nnUNet_results"
    trainer_folder(results, "TrainerA", TRAINER_A)
    trainer_folder(results, "TrainerB", TRAINER_B)
    gt = tmp_path / "nnUNet_preprocessed" / DATASET / "gt_segmentations"
    for case, ranges in REFERENCE.items():
        write(gt / f"{case}.nii.gz", ranges)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "nnUNet_preprocessed"))
    return results / DATASET


def row(table, configuration, name):
    rows = table[(table["configuration"] == configuration) & (table["class"] == name)]
    assert len(rows) == 1
    return rows.iloc[0]


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- per-case metrics without files ---------------------------------------------------------


def test_empty_maps_dsc_convention_and_volumes():
    classes, _ = report.dataset_classes(DATASET_JSON)
    empty = label_map({})
    a, b = report.case_metrics(empty, label_map({1: (0, 4)}), classes, voxel_ml=ML)
    assert a.dsc == 0.0  # empty reference, 4 voxels predicted
    assert a.predicted_ml == pytest.approx(4 * ML) and a.delta_ml == pytest.approx(4 * ML)
    assert b.dsc == 1.0 and b.delta_ml == 0.0  # empty reference, empty prediction
    missed, _ = report.case_metrics(label_map({1: (0, 4)}), empty, classes, voxel_ml=ML)
    assert missed.dsc == 0.0 and missed.delta_ml == pytest.approx(-4 * ML)
    partial, _ = report.case_metrics(label_map({1: (0, 4)}), label_map({1: (2, 8)}), classes, voxel_ml=ML)
    assert partial.dsc == pytest.approx(2 * 2 / (4 + 6)) and partial.reference_ml == pytest.approx(4 * ML)


def test_ignore_label_and_regions_as_nnunet_does():
    dataset_json = {"labels": {"background": 0, "whole": [1, 2], "core": 2, "ignore": 3}}
    classes, ignore = report.dataset_classes(dataset_json)
    assert [(c.name, c.values, c.label) for c in classes] == [("whole", (1, 2), "(1, 2)"), ("core", (2,), "(2,)")]
    assert ignore == 3 and all(c.channel is None for c in classes)
    reference = label_map({1: (0, 10), 2: (10, 20), 3: (20, 40)})
    prediction = label_map({2: (5, 15), 1: (20, 40)})  # voxels 20..39 are ignored in the reference
    whole, core = report.case_metrics(reference, prediction, classes, ignore_label=ignore)
    assert (whole.reference_voxels, whole.predicted_voxels, whole.overlap_voxels) == (20, 10, 10)
    assert whole.dsc == pytest.approx(2 * 10 / 30)
    assert (core.reference_voxels, core.predicted_voxels, core.overlap_voxels) == (10, 10, 5)


def test_values_outside_the_labels_and_non_integer_maps():
    classes, _ = report.dataset_classes(DATASET_JSON)
    reference = label_map({1: (0, 10), 7: (10, 20)})
    (a, _) = report.case_metrics(reference, label_map({7: (0, 10)}), classes)
    assert (a.reference_voxels, a.predicted_voxels, a.overlap_voxels) == (10, 0, 0)
    with pytest.raises(ValueError, match="non-integer"):
        report.case_metrics(reference.astype(np.float32) * 0.5, reference.astype(np.float32), classes)


def test_voxel_volume_from_nnunet_spacing_2d_counts_1mm():
    assert report.voxel_volume_ml([3.0, 2.0, 0.5], (1, 4, 5, 6)) == pytest.approx(ML)
    # nnU-Net's readers give 2D images a dummy spacing of 999 × the largest in-plane spacing
    assert report.voxel_volume_ml([999 * 2.0, 2.0, 0.5], (1, 1, 5, 6)) == pytest.approx(1.0 / 1000)


def test_dsc_agrees_with_nnunet_where_nnunet_defines_it(toy, tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    classes, _ = report.dataset_classes(DATASET_JSON)
    gt = tmp_path / "nnUNet_preprocessed" / DATASET / "gt_segmentations"
    for case in REFERENCE:
        prediction = toy / "TrainerB__nnUNetPlans__2d" / f"fold_{FOLDS[case]}" / "validation" / f"{case}.nii.gz"
        theirs = compute_metrics(str(gt / f"{case}.nii.gz"), str(prediction), SimpleITKIO(), [1, 2])["metrics"]
        ours = report.case_metrics(
            sitk.GetArrayFromImage(sitk.ReadImage(str(gt / f"{case}.nii.gz"))),
            sitk.GetArrayFromImage(sitk.ReadImage(str(prediction))),
            classes,
        )
        for label, mine in zip((1, 2), ours):
            if math.isnan(theirs[label]["Dice"]):
                assert mine.reference_voxels == mine.predicted_voxels == 0 and mine.dsc == 1.0
            else:
                assert mine.dsc == pytest.approx(theirs[label]["Dice"])
                assert mine.reference_voxels == theirs[label]["n_ref"]


# --- bootstrap ------------------------------------------------------------------------------


def test_bootstrap_clearly_better_identical_and_reproducible():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.5, 0.7, 15)
    a = b + 0.2 + rng.normal(0, 0.02, 15)
    better = report.paired_bootstrap(a, b, n_resamples=5000, seed=3)
    assert better.p_value < 1e-3 and 0 < better.ci_low < better.mean_difference < better.ci_high
    assert better.mean_difference == pytest.approx(np.mean(a - b))
    assert report.paired_bootstrap(a, b, n_resamples=5000, seed=3) == better
    same = report.paired_bootstrap(b, b, n_resamples=5000, seed=3)
    assert same.p_value == 1.0 and same.ci_low == same.ci_high == 0.0
    mixed = report.paired_bootstrap([0.1, -0.1, 0.2, -0.2], [0, 0, 0, 0], n_resamples=5000, seed=0)
    assert 0.5 < mixed.p_value <= 1.0
    single = report.paired_bootstrap([0.9], [0.1])
    assert math.isnan(single.p_value) and "at least 2" in single.note


def test_detection_auc_separating_tied_and_undefined():
    assert report.detection_auc(np.array([False, False, True, True]), np.array([5.0, 1.0, 0.5, 0.0]))[0] == 1.0
    assert report.detection_auc(np.array([False, True, False, True]), np.ones(4))[0] == 0.5
    auc, why = report.detection_auc(np.array([False, False]), np.array([1.0, 2.0]))
    assert math.isnan(auc) and "no annotated case has an empty reference" in why


# --- the report over folders ----------------------------------------------------------------


def test_report_numbers_on_toy_results(toy, tmp_path):
    out = tmp_path / "out"
    result = build_report([toy], out, n_resamples=2000, workers=1)

    per_case, summary = result.per_case, result.summary
    assert sorted(c.name for c in result.configurations) == ["TrainerA", "TrainerB"]
    assert len(per_case) == 2 * 4 * 2 and per_case["annotated"].all()
    assert set(per_case["fold"]) == {"0", "1"}
    for (trainer, name), expected in DSC.items():
        cases = per_case[(per_case["configuration"] == trainer) & (per_case["class"] == name)].sort_values("case")
        assert cases["dsc"].tolist() == pytest.approx(expected)
        assert cases["delta_ml"].tolist() == pytest.approx([v * ML for v in DELTA_VOXELS[trainer, name]])
        s = row(summary, trainer, name)
        assert s["n"] == 4 and s["n_unannotated"] == 0
        assert s["dsc_mean"] == pytest.approx(sum(expected) / 4)
        assert s["dsc_std"] == pytest.approx(statistics.stdev(expected))
        assert s["delta_ml_mean"] == pytest.approx(sum(DELTA_VOXELS[trainer, name]) * ML / 4)
        assert s["abs_delta_ml_mean"] == pytest.approx(sum(map(abs, DELTA_VOXELS[trainer, name])) * ML / 4)

    a = row(summary, "TrainerA", "A")
    assert a["n_empty_reference"] == 2  # c3, c4
    assert a["dsc_nonempty_reference_mean"] == pytest.approx(0.75)  # c1, c2
    assert a["dsc_nnunet_mean"] == pytest.approx(0.5)  # c4 (empty/empty) left out, as nnU-Net's NaN
    assert a["dsc_pooled"] == pytest.approx(50 / (30 + 34))  # overlaps 20, 5; references 20, 10; predicted 20, 10, 4
    assert a["reference_ml_mean"] == pytest.approx(30 * ML / 4)
    assert a["auc"] == 1.0  # predicted 20, 10 voxels where present; 4, 0 where empty
    b = row(summary, "TrainerB", "A")
    assert b["dsc_nnunet_mean"] == pytest.approx((0.5 + 0.0 + 0.0) / 3)  # c3: empty/empty left out
    assert b["dsc_pooled"] == pytest.approx(2 * 10 / (30 + 30))  # c1 half overlapping, c4's 10 false positives
    assert b["auc"] == pytest.approx(0.625)  # (1 + 1 + ½ + 0) / 4
    assert row(summary, "TrainerA", "B")["auc"] == 1.0

    pair = result.pairwise
    assert len(pair) == 2 * 2  # one pair of configurations × two classes × (DSC, ΔV)
    dsc_a = pair[(pair["class"] == "A") & (pair["metric"] == "dsc")].iloc[0]
    assert (dsc_a["configuration_a"], dsc_a["configuration_b"], dsc_a["n_common"]) == ("TrainerA", "TrainerB", 4)
    assert dsc_a["mean_difference"] == pytest.approx(0.625 - 0.375)
    assert dsc_a["ci_low"] <= dsc_a["mean_difference"] <= dsc_a["ci_high"] and 0 < dsc_a["p_value"] <= 1

    expected_files = {"per_case.csv", "summary.csv", "pairwise.csv", "report.md"} | {
        f"{kind}_{DATASET}.png" for kind in ("dsc", "roc", "delta_volume")
    }
    assert set(result.files) == expected_files and {p.name for p in out.iterdir()} == expected_files
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    for text in (
        f"## {DATASET}",
        "### A (label 1)",
        "| TrainerA | 4 | 0 | 2 | 0.625 ± 0.479 | 0.750 | 0.500 | 0.781 | 0.003 | 0.003 | 1.000 |",
        "| ΔV [ml] | \\|ΔV\\| [ml] | AUC |",
        "| TrainerB | 4 | 0 | 2 | 0.375 ± 0.479 | 0.250 | 0.167 | 0.333 | 0 | 0.015 | 0.625 |",
        "Empty reference and empty prediction → DSC = 1",
        f"![DSC per class and configuration](dsc_{DATASET}.png)",
    ):
        assert text in markdown
    summary_csv = (out / "summary.csv").read_text().splitlines()
    assert summary_csv[0].startswith("dataset,class,label,configuration,n,n_unannotated")
    assert len(summary_csv) == 1 + 4
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_bootstrap_in_report_is_seeded_and_identical_configurations_give_p_1(toy, tmp_path):
    trainer_folder(toy.parent, "TrainerC", TRAINER_A)  # the same predictions as TrainerA
    first = build_report([toy], tmp_path / "one", n_resamples=500, seed=7, workers=1)
    again = build_report([toy], tmp_path / "two", n_resamples=500, seed=7, workers=1)
    assert first.pairwise.equals(again.pairwise)
    same = first.pairwise[
        (first.pairwise["configuration_a"] == "TrainerA") & (first.pairwise["configuration_b"] == "TrainerC")
    ]
    assert len(same) == 4 and (same["p_value"] == 1.0).all() and (same["mean_difference"] == 0).all()
    other_seed = build_report([toy], tmp_path / "three", n_resamples=500, seed=8, workers=1)
    assert not other_seed.pairwise["ci_low"].equals(first.pairwise["ci_low"])


def test_partial_manifest_leaves_out_unannotated_pairs(toy, tmp_path):
    manifest = {**DATASET_JSON, "dicephi_partial_labels": {"complete": False, "cases": {"c1": ["A"]}}}
    for folder in toy.iterdir():
        (folder / "dataset.json").write_text(json.dumps(manifest))
    result = build_report([toy], tmp_path / "out", n_resamples=500, workers=1)
    unannotated = result.per_case[~result.per_case["annotated"]]
    assert sorted(zip(unannotated["case"], unannotated["class"])) == [("c1", "B"), ("c1", "B")]
    b_a, b_b = row(result.summary, "TrainerA", "B"), row(result.summary, "TrainerB", "B")
    assert (b_a["n"], b_a["n_unannotated"]) == (3, 1)
    assert b_a["dsc_mean"] == pytest.approx(1.0)  # 0.5 of c1 left out of (0.5 + 1 + 1 + 1) / 4
    assert b_b["dsc_mean"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)  # was (0 + 1 + 0.5 + 1) / 4
    assert b_b["delta_ml_mean"] == 0.0  # c1's −10 voxels left out
    assert row(result.summary, "TrainerA", "A")["dsc_mean"] == pytest.approx(0.625)  # A annotated everywhere
    pair = result.pairwise
    assert set(pair.loc[pair["class"] == "B", "n_common"]) == {3}
    assert "| TrainerA | 3 | 1 | 2 |" in (tmp_path / "out" / "report.md").read_text()
    everything = build_report([toy], tmp_path / "all", n_resamples=500, workers=1, all_pairs=True)
    assert row(everything.summary, "TrainerB", "B")["dsc_mean"] == pytest.approx(0.625)


def test_prediction_folder_with_reference_and_tied_volumes(toy, tmp_path):
    raw = tmp_path / "nnUNet_raw" / DATASET
    raw.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps(DATASET_JSON))
    constant = tmp_path / "constant"
    for case in REFERENCE:
        write(constant / f"{case}.nii.gz", {1: (0, 10)})  # the same volume everywhere: no detection
    gt = tmp_path / "nnUNet_preprocessed" / DATASET / "gt_segmentations"
    result = build_report(
        [toy / "TrainerA__nnUNetPlans__2d", constant],
        tmp_path / "out",
        reference=gt,
        dataset_json=raw / "dataset.json",
        n_resamples=500,
        workers=1,
    )
    assert [c.name for c in result.configurations] == ["TrainerA", "constant"]
    assert {c.dataset for c in result.configurations} == {DATASET}  # one section, compared pairwise
    tied = row(result.summary, "constant", "A")
    assert tied["auc"] == 0.5
    assert tied["dsc_mean"] == pytest.approx((2 * 10 / 30 + 1.0 + 0.0 + 0.0) / 4)  # c1, c2, then 10 voxels too many
    b = row(result.summary, "constant", "B")
    assert b["dsc_mean"] == pytest.approx(0.5) and b["auc"] == 0.5  # predicts no B at all
    assert len(result.pairwise) == 4


def test_undefined_auc_is_explained(toy, tmp_path):
    gt = tmp_path / "nnUNet_preprocessed" / DATASET / "gt_segmentations"
    for case in REFERENCE:
        write(gt / f"{case}.nii.gz", {1: (0, 20)})  # A everywhere, B nowhere
    result = build_report([toy / "TrainerA__nnUNetPlans__2d"], tmp_path / "out", n_resamples=100, workers=1)
    a, b = row(result.summary, "TrainerA", "A"), row(result.summary, "TrainerA", "B")
    assert math.isnan(a["auc"]) and "no annotated case has an empty reference" in a["auc_note"]
    assert math.isnan(b["auc"]) and "every annotated reference is empty" in b["auc_note"]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "AUC undefined: every annotated reference is empty." in markdown
    # no AUC defined anywhere: no empty ROC figure, and the report does not link one
    assert not list((tmp_path / "out").glob("roc_*.png")) and "roc_" not in markdown
    assert len(result.pairwise) == 0 and (tmp_path / "out" / "pairwise.csv").read_text().startswith("dataset,class")


def test_parallel_workers_give_the_same_tables(toy, tmp_path):
    one = build_report([toy], tmp_path / "one", n_resamples=200, workers=1)
    two = build_report([toy], tmp_path / "two", n_resamples=200, workers=2)
    assert one.per_case.equals(two.per_case) and one.summary.equals(two.summary)


def test_workers_that_cannot_start_fall_back_to_one_process(toy, tmp_path, monkeypatch):
    import concurrent.futures
    from concurrent.futures.process import BrokenProcessPool

    class Broken:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, *args, **kwargs):
            raise BrokenProcessPool("child could not import __main__")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Broken)
    result = build_report([toy], tmp_path / "out", n_resamples=100, workers=2)
    assert len(result.per_case) == 16 and any("one process" in note for note in result.notes)
    assert "one process" in (tmp_path / "out" / "report.md").read_text()


# --- errors ---------------------------------------------------------------------------------


def test_missing_reference_and_shape_mismatch_in_one_error(toy, tmp_path):
    gt = tmp_path / "nnUNet_preprocessed" / DATASET / "gt_segmentations"
    (gt / "c2.nii.gz").unlink()
    write(toy / "TrainerB__nnUNetPlans__2d" / "fold_1" / "validation" / "c3.nii.gz", {2: (0, 5)}, shape=(4, 5, 7))
    with pytest.raises(ReportError) as error:
        build_report([toy], tmp_path / "out", workers=1)
    message = str(error.value)
    assert "3 problems" in message  # c2 is missing for both trainers; c3 of TrainerB has the wrong shape
    assert message.count("c2.nii.gz") == 2 and "--reference" in message
    assert "TrainerB__nnUNetPlans__2d/fold_1/validation/c3.nii.gz: shape (4, 5, 7)" in message
    assert "(4, 5, 6)" in message
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_spacing_mismatch_is_named(toy, tmp_path):
    write(toy / "TrainerA__nnUNetPlans__2d" / "fold_0" / "validation" / "c1.nii.gz", {}, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ReportError, match=r"c1\.nii\.gz: spacing"):
        build_report([toy], tmp_path / "out", workers=1)


def test_empty_and_nonexistent_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps(DATASET_JSON))
    with pytest.raises(ReportError) as error:
        build_report([tmp_path / "empty", tmp_path / "nowhere"], tmp_path / "out", dataset_json=dataset_json)
    message = str(error.value)
    assert (
        "2 problems" in message
        and "empty: no trainer folders (holding fold_*) and no prediction files" in message
        and "nowhere: no such folder" in message
    )
    # the real problem first (the folder is empty), not the dataset.json a folder of predictions would need
    with pytest.raises(ReportError, match="empty: no trainer folders") as error:
        build_report([tmp_path / "empty"], tmp_path / "out")
    assert "dataset.json" not in str(error.value)
    assert leftovers(tmp_path) == []


def test_a_trainer_folder_without_validation_has_nothing_to_report(toy, tmp_path):
    """A trainer built but never trained (nnU-Net makes fold_<n> and its log at once) holds no dataset.json."""
    fold = toy / "TrainerDiceIEps__nnUNetPlans__2d" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "training_log_2026_1_1_00_00_00.txt").write_text("nnU-Net's citation")
    for given in (toy, fold.parent):
        with pytest.raises(ReportError) as error:
            build_report([given], tmp_path / "out", workers=1)
        message = str(error.value)
        assert f"nothing to report in {fold.parent}: no fold has validation results (fold_*/validation)" in message
        assert "dataset.json" not in message
    assert leftovers(tmp_path) == []


def test_an_empty_folder_or_nnunet_results_itself_says_what_to_pass(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    results = tmp_path / "nnUNet_results"
    (results / "Dataset901_Blobs" / "TrainerA__nnUNetPlans__2d" / "fold_0" / "validation").mkdir(parents=True)
    for given, expected in (
        (empty, f"nothing to report in {empty}: no trainer folders (holding fold_*) and no prediction files"),
        (
            results,
            f"it holds dataset folders (Dataset901_Blobs), not trainer folders or predictions; pass the "
            f"trainer folders inside, e.g. {results / 'Dataset901_Blobs'}/*",
        ),
    ):
        with pytest.raises(ReportError) as error:
            build_report([given], tmp_path / "out", workers=1)
        assert expected in str(error.value) and "dataset.json" not in str(error.value)
    assert leftovers(tmp_path) == []


def test_case_in_two_folds_needs_folds(toy, tmp_path):
    folder = toy / "TrainerA__nnUNetPlans__2d"
    write(folder / "fold_all" / "validation" / "c1.nii.gz", {1: (0, 20)})
    with pytest.raises(ReportError, match=r"c1 \(fold_0, fold_all\).*--folds"):
        build_report([folder], tmp_path / "out", workers=1)
    result = build_report([folder], tmp_path / "out", folds=[0, 1], n_resamples=100, workers=1)
    assert len(result.per_case) == 8
    only_all = build_report([folder], tmp_path / "all", folds=["all"], n_resamples=100, workers=1)
    assert set(only_all.per_case["case"]) == {"c1"}


def test_manifest_of_a_region_dataset_is_refused(toy, tmp_path):
    regions = {
        **DATASET_JSON,
        "labels": {"background": 0, "whole": [1, 2], "B": 2},
        "regions_class_order": [1, 2],
        "dicephi_partial_labels": {"cases": {"c1": ["B"]}},
    }
    dataset_json = tmp_path / "regions.json"
    dataset_json.write_text(json.dumps(regions))
    with pytest.raises(ReportError, match=r"regions\.json: .*region"):
        build_report([toy], tmp_path / "out", dataset_json=dataset_json, workers=1)
    result = build_report(
        [toy], tmp_path / "out", dataset_json=dataset_json, all_pairs=True, n_resamples=100, workers=1
    )
    whole = row(result.summary, "TrainerA", "whole")
    assert whole["label"] == "(1, 2)" and whole["n"] == 4
    c1 = result.per_case[(result.per_case["case"] == "c1") & (result.per_case["class"] == "whole")]
    # TrainerA, c1: reference [0, 20) ∪ [60, 70), prediction [0, 20) ∪ [65, 75): 25 of 30 + 30 voxels
    assert c1.loc[c1["configuration"] == "TrainerA", "dsc"].item() == pytest.approx(2 * 25 / 60)


def test_missing_preprocessed_variable(toy, tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed")
    with pytest.raises(ReportError, match="nnUNet_preprocessed is not set.*--reference"):
        build_report([toy], tmp_path / "out", workers=1)


def test_existing_output_needs_force_and_is_replaced_atomically(toy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("not a report")
    with pytest.raises(ReportError, match="not empty; pass --force"):
        build_report([toy], out, workers=1)
    with pytest.raises(ReportError, match="holds no report.md"):
        build_report([toy], out, workers=1, force=True)
    (out / "mine.txt").unlink()
    build_report([toy], out, n_resamples=100, workers=1)  # an empty folder is fine
    (out / "stale.txt").write_text("from before")
    with pytest.raises(ReportError, match="--force"):
        build_report([toy], out, workers=1)
    build_report([toy], out, n_resamples=100, workers=1, force=True)
    assert not (out / "stale.txt").exists() and (out / "report.md").is_file()
    assert leftovers(tmp_path) == []


# --- command line ---------------------------------------------------------------------------


def _parser():
    parser = argparse.ArgumentParser(prog="nnunet-dicephi")
    report.add_parser(parser.add_subparsers(dest="verb", required=True))
    return parser


def test_command_line_end_to_end(toy, tmp_path, capsys):
    out = tmp_path / "cli"
    args = _parser().parse_args(["report", str(toy), "-o", str(out), "--n-resamples", "300", "-j", "1"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "TrainerA: n=4  DSC 0.625" in printed and str(out / "report.md") in printed
    assert (out / "report.md").is_file()
    again = _parser().parse_args(["report", str(toy), "-o", str(out)])
    assert again.func(again) == 2
    assert "pass --force" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["report", str(toy), "--n-resamples", "0"])


def test_jaccard_is_dsc_over_two_minus_dsc_and_one_for_two_empty_maps(toy, tmp_path):
    empty = report.CaseMetrics(0, 0, 0, 1.0)
    assert empty.jaccard == 1.0 and empty.dsc == 1.0
    half = report.CaseMetrics(reference_voxels=10, predicted_voxels=10, overlap_voxels=5, voxel_ml=1.0)
    assert half.jaccard == pytest.approx(5 / 15) == pytest.approx(half.dsc / (2 - half.dsc))
    result = build_report([toy / "TrainerA__nnUNetPlans__2d"], tmp_path / "out", n_resamples=50, workers=1)
    per_case = result.per_case
    assert per_case["jaccard"].to_numpy() == pytest.approx((per_case["dsc"] / (2 - per_case["dsc"])).to_numpy())
    a = row(result.summary, "TrainerA", "A")
    assert a["jaccard_mean"] == pytest.approx(np.mean([d / (2 - d) for d in DSC["TrainerA", "A"]]))


def test_figures_label_configurations_by_what_differs():
    from nnunet_dicephi.analysis.rendering import short_names

    folders = [
        "TrainerDiceI_ep22_it40_lr1e-2_seed0__nnUNetPlans_f16__2d",
        "TrainerDiceI_bg_ep22_it40_lr1e-2_seed0__nnUNetPlans_f16__2d",
        "TrainerCE_ep22_it40_seed0__nnUNetPlans_f16__2d",
    ]
    labels, shared = short_names(folders)
    assert list(labels.values()) == ["TrainerDiceI_lr1e-2", "TrainerDiceI_bg_lr1e-2", "TrainerCE"]
    assert shared == "ep22_it40_seed0, nnUNetPlans_f16, 2d"
    labels, shared = short_names(["TrainerDiceBI__nnUNetPlans_bs2__2d", "TrainerDiceBI__nnUNetPlans_bs4__2d"])
    assert list(labels.values()) == ["TrainerDiceBI__nnUNetPlans_bs2", "TrainerDiceBI__nnUNetPlans_bs4"]
    assert shared == "2d"
    assert short_names(["TrainerDiceI__nnUNetPlans__2d"]) == (
        {"TrainerDiceI__nnUNetPlans__2d": "TrainerDiceI"},
        "nnUNetPlans, 2d",
    )
    # names that are not results folders stay as they are
    assert short_names(["demo_a", "TrainerDiceI__P__2d"]) == (
        {"demo_a": "demo_a", "TrainerDiceI__P__2d": "TrainerDiceI__P__2d"},
        "",
    )
