"""Converters on tiny synthetic downloads: what they write, and every error path (one error, all offenders)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_dicephi.conversion import (
    ConversionError,
    _cases,
    acdc,
    add_parser,
    brats2018,
    convert_acdc,
    convert_brats2018,
    convert_wmh2017,
    grouped_splits,
    install_splits,
    main,
)
from nnunet_dicephi.partial_labels import MANIFEST_KEY, load_manifest
from tests.fixtures_conversion import (
    DIRECTION,
    SPACING,
    make_acdc,
    make_brats2018,
    make_wmh2017,
    read_volume,
    write_volume,
)

QUIET = {"workers": 1, "progress": False}


@pytest.fixture
def raw(tmp_path, monkeypatch):
    root = tmp_path / "nnUNet_raw"
    monkeypatch.setenv("nnUNet_raw", str(root))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    return root


@pytest.fixture
def brats(tmp_path):
    return make_brats2018(tmp_path / "download")


@pytest.fixture
def acdc_source(tmp_path):
    return make_acdc(tmp_path / "download", test_patients=2)


@pytest.fixture
def wmh(tmp_path):
    return make_wmh2017(tmp_path / "download")


def dataset_json(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def label(folder: Path, case: str, where: str = "labelsTr") -> np.ndarray:
    return read_volume(folder / where / f"{case}.nii.gz")[0]


def assert_clean(raw: Path, keep=()) -> None:
    """Nothing but ``keep`` in nnUNet_raw: no staging folder, no half-written dataset."""
    left = sorted(p.name for p in raw.iterdir()) if raw.exists() else []
    assert left == sorted(keep), left


def raises(call, *fragments):
    with pytest.raises(ConversionError) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    return message


# --- BraTS 2018 --------------------------------------------------------------------------------


def test_brats_whole_tumour_files_labels_geometry_and_dataset_json(raw, brats):
    result = convert_brats2018(brats, 501, **QUIET)
    folder = raw / "Dataset501_BraTS2018"
    assert result.folder == folder and result.training_cases == 5 and result.manifest is None
    cases = sorted(p.name[: -len(".nii.gz")] for p in (folder / "labelsTr").iterdir())
    assert cases == [
        "HGG_Brats18_2013_100_1",
        "HGG_Brats18_2013_101_1",
        "HGG_Brats18_2013_102_1",
        "LGG_Brats18_TCIA10_100_1",
        "LGG_Brats18_TCIA10_101_1",
    ]
    assert len(list((folder / "imagesTr").iterdir())) == 5 * 4
    subject = brats / "HGG" / "Brats18_2013_101_1"
    seg, spacing, origin, direction = read_volume(subject / "Brats18_2013_101_1_seg.nii.gz")
    for channel, modality in enumerate(("t1", "t1ce", "t2", "flair")):
        written = folder / "imagesTr" / f"HGG_Brats18_2013_101_1_{channel:04d}.nii.gz"
        source = subject / f"Brats18_2013_101_1_{modality}.nii.gz"
        assert written.read_bytes() == source.read_bytes()  # copied as downloaded
    labels, l_spacing, l_origin, l_direction = read_volume(folder / "labelsTr" / "HGG_Brats18_2013_101_1.nii.gz")
    np.testing.assert_array_equal(labels, (seg > 0).astype(np.uint8))
    assert labels.dtype == np.uint8
    np.testing.assert_allclose(l_spacing, spacing)
    np.testing.assert_allclose(l_origin, origin)
    np.testing.assert_allclose(l_direction, direction, atol=1e-6)
    np.testing.assert_allclose(spacing, SPACING, rtol=1e-6)
    np.testing.assert_allclose(direction, DIRECTION, atol=1e-6)
    dj = dataset_json(folder)
    assert dj["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    assert dj["labels"] == {"background": 0, "whole_tumour": 1}
    assert dj["numTraining"] == 5 and dj["file_ending"] == ".nii.gz" and dj["name"] == folder.name
    assert MANIFEST_KEY not in dj and "regions_class_order" not in dj
    assert not (folder / "partial_labels.json").exists() and not (folder / "labelsTr_full").exists()
    record = json.loads((folder / "dicephi_conversion.json").read_text())
    assert record["cases"]["LGG_Brats18_TCIA10_100_1"]["subset"] == "LGG"
    assert_clean(raw, [folder.name])


def test_brats_classes_map_brats_values_to_consecutive_labels(raw, brats):
    convert_brats2018(brats, 502, target="classes", **QUIET)
    folder = raw / "Dataset502_BraTS2018Classes"
    seg = read_volume(brats / "LGG" / "Brats18_TCIA10_100_1" / "Brats18_TCIA10_100_1_seg.nii.gz")[0]
    labels = label(folder, "LGG_Brats18_TCIA10_100_1")
    for source_value, written in ((0, 0), (2, 1), (1, 2), (4, 3)):
        assert (seg == source_value).any()
        np.testing.assert_array_equal(labels == written, seg == source_value)
    assert dataset_json(folder)["labels"] == {"background": 0, "edema": 1, "non_enhancing": 2, "enhancing": 3}


def test_brats_regions_follow_nnunet_region_training(raw, brats):
    convert_brats2018(brats, 503, target="regions", **QUIET)
    dj = dataset_json(raw / "Dataset503_BraTS2018Regions")
    assert dj["labels"] == {
        "background": 0,
        "whole_tumour": [1, 2, 3],
        "tumour_core": [2, 3],
        "enhancing_tumour": [3],
    }
    assert dj["regions_class_order"] == [1, 2, 3]


def test_brats_lgg_empty_missing_view_declares_the_emptied_labels(raw, brats):
    result = convert_brats2018(brats, 504, scheme="lgg-empty", **QUIET)
    folder = raw / "Dataset504_BraTS2018LGGMissing"
    assert result.folder == folder and result.view == "missing"
    manifest = {"complete": False, "cases": {"LGG_Brats18_TCIA10_100_1": [], "LGG_Brats18_TCIA10_101_1": []}}
    dj = dataset_json(folder)
    assert dj[MANIFEST_KEY] == manifest == result.manifest
    assert json.loads((folder / "partial_labels.json").read_text()) == manifest
    cases = [p.name[: -len(".nii.gz")] for p in (folder / "labelsTr").iterdir()]
    table = load_manifest(dj, cases)
    assert table.is_partial and not table.annotated("LGG_Brats18_TCIA10_100_1", 1)
    assert table.annotated("HGG_Brats18_2013_100_1", 1)
    for case in cases:
        full = label(folder, case, "labelsTr_full")
        assert full.any()
        if case.startswith("LGG"):
            assert not label(folder, case).any()
        else:
            np.testing.assert_array_equal(label(folder, case), full)


def test_brats_as_empty_writes_the_same_labels_without_manifest(raw, brats):
    convert_brats2018(brats, 504, scheme="lgg-empty", **QUIET)
    result = convert_brats2018(brats, 505, scheme="lgg-empty", view="empty", **QUIET)
    missing, empty = raw / "Dataset504_BraTS2018LGGMissing", raw / "Dataset505_BraTS2018LGGEmpty"
    assert result.folder == empty and result.view == "empty"
    assert MANIFEST_KEY not in dataset_json(empty)
    assert json.loads((empty / "partial_labels.json").read_text()) == dataset_json(missing)[MANIFEST_KEY]
    for path in (missing / "labelsTr").iterdir():
        np.testing.assert_array_equal(read_volume(path)[0], label(empty, path.name[: -len(".nii.gz")]))


def test_brats_regions_with_scheme_only_in_the_empty_view(raw, brats):
    raises(
        lambda: convert_brats2018(brats, 506, target="regions", scheme="lgg-empty", **QUIET),
        "region",
        "--as-empty",
        "--target classes",
    )
    assert_clean(raw)
    result = convert_brats2018(brats, 506, target="regions", scheme="lgg-empty", view="empty", **QUIET)
    assert MANIFEST_KEY not in dataset_json(result.folder)
    assert not label(result.folder, "LGG_Brats18_TCIA10_100_1").any()
    convert_brats2018(brats, 507, target="classes", scheme="lgg-empty", **QUIET)
    assert dataset_json(raw / "Dataset507_BraTS2018ClassesLGGMissing")[MANIFEST_KEY]["cases"] == {
        "LGG_Brats18_TCIA10_100_1": [],
        "LGG_Brats18_TCIA10_101_1": [],
    }


def test_brats_geometry_within_tolerance_is_made_identical(raw, brats):
    subject = brats / "HGG" / "Brats18_2013_100_1"
    path = subject / "Brats18_2013_100_1_t2.nii.gz"
    array, spacing, origin, direction = read_volume(path)
    write_volume(path, array, spacing=tuple(s * (1 + 3e-5) for s in spacing), origin=origin, direction=direction)
    convert_brats2018(brats, 508, **QUIET)
    reference = read_volume(subject / "Brats18_2013_100_1_t1.nii.gz")
    written = read_volume(raw / "Dataset508_BraTS2018" / "imagesTr" / "HGG_Brats18_2013_100_1_0002.nii.gz")
    np.testing.assert_array_equal(written[0], array)
    assert written[1:] == reference[1:]


# --- ACDC --------------------------------------------------------------------------------------


def test_acdc_frames_from_info_cfg_labels_and_dataset_json(raw, acdc_source):
    result = convert_acdc(acdc_source, 27, **QUIET)
    folder = raw / "Dataset027_ACDC"
    assert result.training_cases == 10 and result.test_cases == 0 and result.splits_file == folder / "splits_final.json"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir())[:4] == [
        "patient001_ED_0000.nii.gz",
        "patient001_ES_0000.nii.gz",
        "patient002_ED_0000.nii.gz",
        "patient002_ES_0000.nii.gz",
    ]
    patient = acdc_source / "training" / "patient002"  # Info.cfg: ED 1, ES 7
    assert "ES: 7" in (patient / "Info.cfg").read_text()
    assert (folder / "imagesTr" / "patient002_ES_0000.nii.gz").read_bytes() == (
        patient / "patient002_frame07.nii.gz"
    ).read_bytes()
    gt = read_volume(patient / "patient002_frame07_gt.nii.gz")
    written = read_volume(folder / "labelsTr" / "patient002_ES.nii.gz")
    np.testing.assert_array_equal(written[0], gt[0])
    np.testing.assert_allclose(written[2], gt[2])
    assert set(np.unique(written[0])) == {0, 1, 2, 3}
    dj = dataset_json(folder)
    assert dj["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert dj["channel_names"] == {"0": "cineMRI"} and dj["numTraining"] == 10
    assert not (folder / "imagesTs").exists()


def test_acdc_splits_keep_each_patient_in_one_fold_and_validate_every_case_once(raw, acdc_source):
    convert_acdc(acdc_source, 27, **QUIET)
    folder = raw / "Dataset027_ACDC"
    splits = json.loads((folder / "splits_final.json").read_text())
    cases = sorted(p.name[: -len(".nii.gz")] for p in (folder / "labelsTr").iterdir())
    assert len(splits) == 5
    assert sorted(c for fold in splits for c in fold["val"]) == cases
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == cases
        train_patients = {c.split("_")[0] for c in fold["train"]}
        val_patients = {c.split("_")[0] for c in fold["val"]}
        assert not train_patients & val_patients
        assert all(f"{p}_ED" in fold["val"] and f"{p}_ES" in fold["val"] for p in val_patients)


def test_acdc_es_myo_empty_removes_exactly_the_es_myocardium(raw, acdc_source):
    result = convert_acdc(acdc_source, 28, scheme="es-myo-empty", **QUIET)
    folder = raw / "Dataset028_ACDCMyoESMissing"
    assert result.folder == folder
    expected = {f"patient{i:03d}_ES": ["RV", "LV"] for i in range(1, 6)}
    dj = dataset_json(folder)
    assert dj[MANIFEST_KEY] == {"complete": False, "cases": expected}
    table = load_manifest(dj, [p.name[: -len(".nii.gz")] for p in (folder / "labelsTr").iterdir()])
    assert table.rows["patient001_ES"].tolist() == [False, True, False, True]
    for case in ("patient001_ES", "patient003_ED", "patient004_ES"):
        full, partial = label(folder, case, "labelsTr_full"), label(folder, case)
        if case.endswith("ES"):
            assert (full == 2).any() and not (partial == 2).any()
            np.testing.assert_array_equal(partial, np.where(full == 2, 0, full))
        else:
            np.testing.assert_array_equal(partial, full)
    empty = convert_acdc(acdc_source, 29, scheme="es-myo-empty", view="empty", **QUIET)
    assert empty.folder.name == "Dataset029_ACDCMyoESEmpty" and MANIFEST_KEY not in dataset_json(empty.folder)
    assert json.loads((empty.folder / "partial_labels.json").read_text())["cases"] == expected


def test_acdc_testing_folder_becomes_imagests_and_labelsts_never_emptied(raw, acdc_source):
    result = convert_acdc(acdc_source, 30, scheme="es-myo-empty", include_test=True, **QUIET)
    folder = result.folder
    assert result.training_cases == 10 and result.test_cases == 4
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == [
        "patient101_ED.nii.gz",
        "patient101_ES.nii.gz",
        "patient102_ED.nii.gz",
        "patient102_ES.nii.gz",
    ]
    assert len(list((folder / "imagesTs").iterdir())) == 4
    assert (label(folder, "patient101_ES", "labelsTs") == 2).any()
    assert dataset_json(folder)["numTraining"] == 10
    assert not any("patient1" in c for fold in json.loads(result.splits_file.read_text()) for c in fold["val"])
    assert set(result.manifest["cases"]) == {f"patient{i:03d}_ES" for i in range(1, 6)}


def test_acdc_accepts_the_training_folder_itself(raw, acdc_source):
    result = convert_acdc(acdc_source / "training", 31, **QUIET)
    assert result.training_cases == 10


# --- WMH 2017 ----------------------------------------------------------------------------------


def test_wmh_both_release_layouts_give_the_same_dataset(raw, tmp_path):
    old = convert_wmh2017(make_wmh2017(tmp_path / "2017"), 40, **QUIET)
    new = convert_wmh2017(make_wmh2017(tmp_path / "2022", layout="2022"), 41, **QUIET)
    names = sorted(p.name for p in (old.folder / "imagesTr").iterdir())
    assert names == sorted(p.name for p in (new.folder / "imagesTr").iterdir())
    assert names[:4] == ["GE3T_100_0000.nii.gz", "GE3T_100_0001.nii.gz", "GE3T_101_0000.nii.gz", "GE3T_101_0001.nii.gz"]
    assert old.training_cases == 6


def test_wmh_labels_channels_and_pre_folder(raw, wmh):
    result = convert_wmh2017(wmh, 42, **QUIET)
    dj = dataset_json(result.folder)
    assert dj["channel_names"] == {"0": "FLAIR", "1": "T1"}
    assert dj["labels"] == {"background": 0, "WMH": 1, "other_pathology": 2}
    subject = wmh / "Utrecht" / "0"
    assert (result.folder / "imagesTr" / "Utrecht_0_0000.nii.gz").read_bytes() == (
        subject / "pre" / "FLAIR.nii.gz"
    ).read_bytes()
    assert (result.folder / "imagesTr" / "Utrecht_0_0001.nii.gz").read_bytes() == (
        subject / "pre" / "T1.nii.gz"
    ).read_bytes()
    np.testing.assert_array_equal(label(result.folder, "Utrecht_0"), read_volume(subject / "wmh.nii.gz")[0])
    assert set(np.unique(label(result.folder, "Utrecht_0"))) == {0, 1, 2}


# --- splits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("patients", "folds"), [(5, 5), (7, 5), (12, 3), (100, 5)])
def test_grouped_splits_partition_groups(patients, folds):
    groups = {f"p{i:03d}_{phase}": f"p{i:03d}" for i in range(patients) for phase in ("ED", "ES")}
    splits = grouped_splits(groups, folds, seed=3)
    assert splits == grouped_splits(dict(reversed(list(groups.items()))), folds, seed=3)  # order-free
    assert len(splits) == folds
    assert sorted(c for s in splits for c in s["val"]) == sorted(groups)
    sizes = [len({groups[c] for c in s["val"]}) for s in splits]
    assert max(sizes) - min(sizes) <= 1
    for s in splits:
        assert not {groups[c] for c in s["train"]} & {groups[c] for c in s["val"]}
        assert sorted(s["train"] + s["val"]) == sorted(groups)


def test_grouped_splits_need_a_group_per_fold():
    raises(lambda: grouped_splits({"a": "1", "b": "1", "c": "2"}, 5), "5 folds need at least 5 groups", "there are 2")
    raises(lambda: grouped_splits({"a": "1"}, 1), "at least 2 folds")


def test_install_splits_copies_confirms_and_refuses_a_different_split(raw, acdc_source, tmp_path, monkeypatch):
    preprocessed = tmp_path / "nnUNet_preprocessed"
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    convert_acdc(acdc_source, 27, **QUIET)
    raises(lambda: install_splits(27), "run nnUNetv2_plan_and_preprocess")
    target_folder = preprocessed / "Dataset027_ACDC"
    target_folder.mkdir(parents=True)
    path, status = install_splits("27")
    assert status == "installed" and path == target_folder / "splits_final.json"
    assert json.loads(path.read_text()) == json.loads((raw / "Dataset027_ACDC" / "splits_final.json").read_text())
    assert install_splits("Dataset027_ACDC") == (path, "unchanged")
    random_split = [{"train": ["patient001_ED"], "val": ["patient001_ES"]}]
    path.write_text(json.dumps(random_split))
    raises(lambda: install_splits(27), "holds a different split", "--force")
    assert json.loads(path.read_text()) == random_split
    assert install_splits(27, force=True)[1] == "replaced"
    raises(lambda: install_splits(99), "dataset id 99")
    convert_wmh2017(make_wmh2017(tmp_path / "wmh"), 42, **QUIET)
    (preprocessed / "Dataset042_WMH2017").mkdir()
    raises(lambda: install_splits(42), "splits_final.json does not exist")
    monkeypatch.delenv("nnUNet_preprocessed")
    raises(lambda: install_splits(27), "nnUNet_preprocessed is not set")


# --- parallel conversion -----------------------------------------------------------------------


def test_parallel_conversion_equals_serial_and_reports_all_errors(raw, brats):
    serial = convert_brats2018(brats, 510, scheme="lgg-empty", workers=1, progress=False)
    parallel = convert_brats2018(brats, 511, scheme="lgg-empty", workers=2, progress=False)
    for sub in ("imagesTr", "labelsTr", "labelsTr_full"):
        for path in (serial.folder / sub).iterdir():
            assert path.read_bytes() == (parallel.folder / sub / path.name).read_bytes()
    assert parallel.manifest == serial.manifest
    for subject in ("HGG/Brats18_2013_100_1", "LGG/Brats18_TCIA10_101_1"):
        seg = brats / subject / f"{subject.split('/')[1]}_seg.nii.gz"
        _, *geometry = read_volume(seg)
        write_volume(seg, np.full((8, 10, 12), 3, np.uint8), *geometry)
    raises(
        lambda: convert_brats2018(brats, 512, workers=2, progress=False),
        "2 problems",
        "case HGG_Brats18_2013_100_1",
        "case LGG_Brats18_TCIA10_101_1",
    )
    assert_clean(raw, [serial.folder.name, parallel.folder.name])


# --- error paths: one ConversionError naming every offender, nothing left in nnUNet_raw ----------


def test_missing_folders_are_named(raw, brats, acdc_source, wmh):
    shutil.rmtree(brats / "LGG")
    raises(lambda: convert_brats2018(brats, 501, **QUIET), f"missing folder {brats / 'LGG'}")
    shutil.rmtree(acdc_source / "training")
    raises(lambda: convert_acdc(acdc_source, 27, **QUIET), f"missing folder {acdc_source / 'training'}")
    shutil.rmtree(wmh / "Singapore")
    shutil.rmtree(wmh / "GE3T" / "100" / "pre")
    message = raises(
        lambda: convert_wmh2017(wmh, 42, **QUIET),
        "2 problems",
        f"missing site folder {wmh / 'Singapore'}",
        f"missing folder {wmh / 'GE3T' / '100' / 'pre'}",
    )
    assert "wmh.nii.gz" not in message  # the subject's label is still there
    raises(lambda: convert_brats2018(brats.parent / "nowhere", 501, **QUIET), "missing source folder")
    assert_clean(raw)


def test_missing_modality_files_are_all_named(raw, brats):
    (brats / "HGG" / "Brats18_2013_101_1" / "Brats18_2013_101_1_t1ce.nii.gz").unlink()
    (brats / "LGG" / "Brats18_TCIA10_100_1" / "Brats18_TCIA10_100_1_flair.nii.gz").unlink()
    (brats / "LGG" / "Brats18_TCIA10_100_1" / "Brats18_TCIA10_100_1_seg.nii.gz").unlink()
    raises(
        lambda: convert_brats2018(brats, 501, **QUIET),
        "3 problems",
        "Brats18_2013_101_1_t1ce.nii.gz",
        "Brats18_TCIA10_100_1_flair.nii.gz",
        "Brats18_TCIA10_100_1_seg.nii.gz",
    )
    assert_clean(raw)


def test_missing_gt_and_frames_are_named(raw, acdc_source):
    (acdc_source / "training" / "patient001" / "patient001_frame06_gt.nii.gz").unlink()
    (acdc_source / "training" / "patient004" / "patient004_frame01.nii.gz").unlink()
    (acdc_source / "training" / "patient005" / "Info.cfg").unlink()
    raises(
        lambda: convert_acdc(acdc_source, 27, **QUIET),
        "3 problems",
        "missing file " + str(acdc_source / "training" / "patient001" / "patient001_frame06_gt.nii.gz"),
        "patient004_frame01.nii.gz",
        "patient005/Info.cfg",
    )
    assert_clean(raw)


def test_malformed_info_cfg_is_named_line_by_line(raw, acdc_source):
    training = acdc_source / "training"
    (training / "patient001" / "Info.cfg").write_text("ED: 1\nGroup: DCM\nNbFrame: 12\n")
    (training / "patient002" / "Info.cfg").write_text("ED: one\nES: 7.0\n")
    (training / "patient003" / "Info.cfg").write_text("ED: 1\nES: 30\nNbFrame: 12\nthis line has no colon\n")
    message = raises(
        lambda: convert_acdc(acdc_source, 27, **QUIET),
        "patient001/Info.cfg: no 'ES: <frame number>' line",
        "patient002/Info.cfg: ED is 'one'",
        "patient002/Info.cfg: ES is '7.0'",
        "patient003/Info.cfg: ES frame 30 is beyond NbFrame 12",
        "patient003/Info.cfg line 4",
    )
    assert "5 problems" in message
    (training / "patient001" / "Info.cfg").write_text("ED: 3\nES: 3\n")
    assert acdc.read_info(training / "patient001" / "Info.cfg")[1] == [
        f"{training / 'patient001' / 'Info.cfg'}: ED and ES are the same frame (3)"
    ]
    assert_clean(raw)


def test_geometry_mismatches_are_named_per_file(raw, brats):
    first = brats / "HGG" / "Brats18_2013_100_1"
    array, spacing, origin, direction = read_volume(first / "Brats18_2013_100_1_t2.nii.gz")
    write_volume(first / "Brats18_2013_100_1_t2.nii.gz", array, spacing=(1.0, 1.0, 1.0), origin=origin)
    second = brats / "LGG" / "Brats18_TCIA10_101_1"
    seg, spacing, origin, direction = read_volume(second / "Brats18_TCIA10_101_1_seg.nii.gz")
    write_volume(second / "Brats18_TCIA10_101_1_seg.nii.gz", seg, origin=(0.0, 0.0, 0.0))
    third = brats / "HGG" / "Brats18_2013_102_1"
    write_volume(third / "Brats18_2013_102_1_flair.nii.gz", np.zeros((8, 10, 11), np.int16))
    message = raises(
        lambda: convert_brats2018(brats, 501, **QUIET),
        "3 problems",
        "HGG/Brats18_2013_100_1/Brats18_2013_100_1_t2.nii.gz does not match "
        "HGG/Brats18_2013_100_1/Brats18_2013_100_1_t1.nii.gz: spacing (1.0, 1.0, 1.0) vs (0.9, 1.1, 2.5)",
        "LGG/Brats18_TCIA10_101_1/Brats18_TCIA10_101_1_seg.nii.gz does not match",
        "origin (0.0, 0.0, 0.0)",
        "Brats18_2013_102_1_flair.nii.gz does not match",
        "size (11, 10, 8) vs (12, 10, 8)",
    )
    assert "direction" not in message.split("Brats18_2013_100_1_t2")[1].split("\n")[0]
    assert_clean(raw)


def test_unexpected_label_values_are_named_with_file_and_values(raw, brats, wmh):
    path = brats / "HGG" / "Brats18_2013_102_1" / "Brats18_2013_102_1_seg.nii.gz"
    seg, *geometry = read_volume(path)
    seg[0, 0, :3] = (3, 5, 4)
    write_volume(path, seg, *geometry)
    raises(
        lambda: convert_brats2018(brats, 501, **QUIET),
        "HGG/Brats18_2013_102_1/Brats18_2013_102_1_seg.nii.gz: unexpected label values [3, 5] (allowed: [0, 1, 2, 4])",
    )
    path = wmh / "GE3T" / "101" / "wmh.nii.gz"
    labels, *geometry = read_volume(path)
    write_volume(path, (labels + 0.5).astype(np.float32), *geometry)
    raises(lambda: convert_wmh2017(wmh, 42, **QUIET), "GE3T/101/wmh.nii.gz: non-integer label values")
    write_volume(path, np.where(labels == 1, 7, labels).astype(np.uint8), *geometry)
    raises(lambda: convert_wmh2017(wmh, 42, **QUIET), "unexpected label values [7] (allowed: [0, 1, 2])")
    assert_clean(raw)


def test_unreadable_files_are_named(raw, wmh):
    (wmh / "Utrecht" / "2" / "pre" / "T1.nii.gz").write_bytes(b"not a nifti file")
    raises(lambda: convert_wmh2017(wmh, 42, **QUIET), "Utrecht/2/pre/T1.nii.gz: cannot be read")
    assert_clean(raw)


def test_existing_dataset_is_kept_unless_forced(raw, wmh):
    first = convert_wmh2017(wmh, 42, **QUIET)
    marker = first.folder / "mine.txt"
    marker.write_text("user file")
    raises(lambda: convert_wmh2017(wmh, 42, **QUIET), f"{first.folder} exists; pass --force")
    assert marker.exists()
    convert_wmh2017(wmh, 42, force=True, **QUIET)
    assert not marker.exists() and (first.folder / "dataset.json").is_file()
    assert_clean(raw, [first.folder.name])


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil", "path separators and '..' are not allowed"),
        ("a/b", "path separators"),
        ("my data", "spaces are not allowed"),
        ("x" * 65, "at most 64 characters"),
        ("name.v2", "letters, digits"),
        ("", "letters, digits"),
        ("-lead", "starting with a letter or digit"),
    ],
)
def test_bad_dataset_names_are_refused(raw, wmh, name, why):
    raises(lambda: convert_wmh2017(wmh, 42, name, **QUIET), f"dataset name {name!r} is not allowed", why)
    assert_clean(raw)
    assert not (raw.parent / "evil").exists()


@pytest.mark.parametrize("dataset_id", [0, 1000, -3])
def test_bad_dataset_ids_are_refused(raw, wmh, dataset_id):
    raises(lambda: convert_wmh2017(wmh, dataset_id, **QUIET), "dataset id must be an integer from 1 to 999")
    assert_clean(raw)


def test_dataset_id_taken_by_another_name_is_refused(raw, wmh, tmp_path, monkeypatch):
    (raw / "Dataset042_Other").mkdir(parents=True)
    raises(lambda: convert_wmh2017(wmh, 42, force=True, **QUIET), "dataset id 42 is taken by", "Dataset042_Other")
    shutil.rmtree(raw / "Dataset042_Other")
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    (tmp_path / "results" / "Dataset042_Old").mkdir(parents=True)
    raises(lambda: convert_wmh2017(wmh, 42, **QUIET), "(nnUNet_results)")
    assert_clean(raw)


def test_nnunet_raw_unset_is_explained(wmh, monkeypatch):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    raises(lambda: convert_wmh2017(wmh, 42, **QUIET), "nnUNet_raw is not set", "export nnUNet_raw=")


def test_as_empty_needs_a_scheme(raw, wmh, brats):
    raises(lambda: convert_brats2018(brats, 501, view="empty", **QUIET), "needs a partial-labelling scheme")
    raises(lambda: convert_brats2018(brats, 501, view="maybe", **QUIET), "view must be one of missing, empty")
    raises(lambda: convert_brats2018(brats, 501, scheme="hgg-empty", **QUIET), "scheme must be one of lgg-empty")
    raises(lambda: convert_brats2018(brats, 501, target="necrosis", **QUIET), "target must be one of")
    assert_clean(raw)


def test_an_interrupted_run_leaves_nothing(raw, wmh, monkeypatch):
    calls = []

    def interrupted(task):
        calls.append(task)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task)

    real = _cases.convert_case
    monkeypatch.setattr(_cases, "convert_case", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_wmh2017(wmh, 42, **QUIET)
    assert len(calls) == 3
    assert_clean(raw)


# --- command line -------------------------------------------------------------------------------


def test_command_line_success_and_one_message_on_error(raw, brats, capsys):
    assert (
        main(["brats2018", str(brats), "-d", "501", "--scheme", "lgg-empty", "--as-empty", "-j", "1", "--quiet"]) == 0
    )
    out = capsys.readouterr().out
    assert "Dataset501_BraTS2018LGGEmpty" in out and "empty-label view" in out
    assert "nnUNetv2_plan_and_preprocess -d 501" in out
    assert main(["brats2018", str(brats), "-d", "501", "--scheme", "lgg-empty", "--as-empty", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-dicephi convert: error: cannot write Dataset501_BraTS2018LGGEmpty")
    assert "Traceback" not in err


def test_install_splits_on_the_command_line(raw, acdc_source, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    assert main(["acdc", str(acdc_source), "-d", "27", "--quiet", "-j", "1"]) == 0
    assert "install-splits 27" in capsys.readouterr().out
    assert main(["install-splits", "27"]) == 2
    assert "run nnUNetv2_plan_and_preprocess" in capsys.readouterr().err
    (tmp_path / "pre" / "Dataset027_ACDC").mkdir(parents=True)
    assert main(["install-splits", "27"]) == 0
    assert capsys.readouterr().out.startswith("installed: ")


def test_add_parser_gives_the_convert_verb():
    parser = argparse.ArgumentParser(prog="nnunet-dicephi")
    add_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["convert", "acdc", "/data/ACDC", "-d", "27", "--scheme", "es-myo-empty", "--as-empty"])
    assert callable(args.func) and args.dataset_id == 27 and args.as_empty and args.folds == 5
    args = parser.parse_args(["convert", "brats2018", "/data", "-d", "1", "--target", "classes", "-j", "3"])
    assert args.target == "classes" and args.workers == 3 and args.scheme is None
    args = parser.parse_args(["convert", "install-splits", "Dataset027_ACDC", "--force"])
    assert args.force and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "wmh2017", "/data", "-d", "1", "-j", "0"])


def test_default_names_spell_out_target_scheme_and_view():
    assert brats2018.default_name() == "BraTS2018"
    assert brats2018.default_name("classes", "lgg-empty", "missing") == "BraTS2018ClassesLGGMissing"
    assert brats2018.default_name("whole-tumour", "lgg-empty", "empty") == "BraTS2018LGGEmpty"
    assert acdc.default_name("es-myo-empty", "empty") == "ACDCMyoESEmpty"


def test_importing_the_package_is_cheap():
    code = (
        "import sys, nnunet_dicephi.conversion as c; "
        "print(sorted(m for m in ('SimpleITK', 'nnunetv2', 'tqdm', 'torch') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"


def test_a_failing_write_is_reported_not_raised(tmp_path, wmh):
    subject = wmh / "Utrecht" / "0"
    task = _cases._CaseTask(
        case_id="Utrecht_0",
        images=(str(subject / "pre" / "FLAIR.nii.gz"), str(subject / "pre" / "T1.nii.gz")),
        label=str(subject / "wmh.nii.gz"),
        image_out=(str(tmp_path / "gone" / "a.nii.gz"), str(tmp_path / "gone" / "b.nii.gz")),
        label_out=str(tmp_path / "gone" / "c.nii.gz"),
        full_label_out=None,
        value_map=((0, 0), (1, 1), (2, 2)),
        removed=(),
        source_root=str(wmh),
    )
    outcome = _cases.convert_case(task)
    assert outcome.case_id == "Utrecht_0" and len(outcome.problems) == 1
    assert outcome.problems[0].startswith("failed: FileNotFoundError")
