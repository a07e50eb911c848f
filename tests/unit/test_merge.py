"""``nnunet-dicephi merge``: labels renumbered by name, prefixed case ids, the manifest, the record, refusals."""

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nnunet_dicephi import merge
from nnunet_dicephi._problems import InputError
from nnunet_dicephi.cli import main
from nnunet_dicephi.partial_labels import MANIFEST_KEY, load_manifest
from nnunet_dicephi.synthetic import ToyCase, write_raw_dataset

SPACING = (0.5, 0.75, 2.0)
ORIGIN = (3.0, -4.0, 1.5)


@pytest.fixture
def raw(nnunet_folders):
    return nnunet_folders["nnUNet_raw"]


def _label(values, seed=0):
    """A (2, 3, 4) label map holding exactly ``values`` (and background)."""
    flat = np.zeros(24, dtype=np.uint8)
    flat[1 : 1 + len(values)] = values
    return np.random.default_rng(seed).permutation(flat).reshape(2, 3, 4)


def _dataset(
    raw, dataset_id, name, labels, train, test=None, *, test_labels=True, manifest=None, channel="CT", **extra
):
    """``Dataset<id>_<name>``: ``train``/``test`` map case ids to the label values each case holds."""
    cases = [
        ToyCase(case, np.full((2, 3, 4), i, np.float32), _label(values, i), test=split == "test")
        for split, listed in (("train", train), ("test", test or {}))
        for i, (case, values) in enumerate(listed.items())
    ]
    folder = write_raw_dataset(
        raw / f"Dataset{dataset_id:03d}_{name}",
        cases,
        labels=labels,
        spacing=SPACING,
        channel=channel,
        extra_json={**({MANIFEST_KEY: manifest} if manifest else {}), **extra},
    )
    (folder / "imagesTr").mkdir(exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    if not test_labels:
        for path in (folder / "labelsTs").iterdir():
            path.unlink()
        (folder / "labelsTs").rmdir()
    return folder


def _read(path):
    import SimpleITK as sitk

    return sitk.ReadImage(str(path))


def _array(path):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(_read(path))


@pytest.fixture
def liver(raw):
    return _dataset(
        raw,
        501,
        "Liver",
        {"background": 0, "liver": 1, "kidney": 2},
        {"a": [1, 2], "b": [1]},
        {"t": [1, 2]},
    )


@pytest.fixture
def kidney(raw):
    return _dataset(
        raw,
        502,
        "Kidney",
        {"background": 0, "kidney_left": 1, "spleen": 2},
        {"a": [1, 2], "c": [2, 2]},
        {"t": [1]},
        test_labels=False,
    )


def _merged(raw, *argv, dataset_id=510):
    return merge.merge_datasets([str(a) for a in argv], dataset_id, same=["kidney=kidney_left"], progress=False)


def _source(folder, labels, training=(), test=(), **extra):
    dataset_json = {"channel_names": {"0": "CT"}, "labels": labels, "file_ending": ".nii.gz", **extra}
    cases = [merge.CaseFiles(c, (Path(f"{c}_0000.nii.gz"),), Path(f"{c}.nii.gz")) for c in training]
    tests = [merge.CaseFiles(c, (Path(f"{c}_0000.nii.gz"),), None) for c in test]
    return merge.SourceDataset(Path(folder), dataset_json, tuple(cases), tuple(tests))


def test_the_plan_is_pure_and_numbers_labels_by_first_appearance():
    plan = merge.plan_merge(
        [
            _source("Dataset003_B", {"bg": 0, "b": 1, "a": 2}, ["x"], ["t"]),
            _source("Dataset012_A", {"background": 0, "c": 2, "a": 1, "d": 3, "ignore": 4}, ["x", "y"]),
        ],
        same=["b=c"],
    )
    assert plan.labels == {"bg": 0, "b": 1, "a": 2, "d": 3, "ignore": 4}
    assert plan.value_maps == ({0: 0, 1: 1, 2: 2}, {0: 0, 1: 2, 2: 1, 3: 3, 4: 4})
    assert plan.name_maps[1] == {"a": "a", "c": "b", "d": "d"}
    assert not plan.renumbers(0) and plan.renumbers(1)
    cases = [(c.case_id, c.split) for c in plan.cases]
    assert cases == [("d003_x", "Tr"), ("d012_x", "Tr"), ("d012_y", "Tr"), ("d003_t", "Ts")]
    assert plan.manifest == {
        "complete": True,
        "cases": {"d003_x": ["b", "a"], "d012_x": ["b", "a", "d"], "d012_y": ["b", "a", "d"]},
    }


def test_labels_are_matched_by_name_and_renumbered_by_first_appearance(raw, liver, kidney):
    result = _merged(raw, 501, "Dataset502_Kidney")
    folder = raw / "Dataset510_Liver_Kidney"
    assert result.folder == folder and folder.is_dir()
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}
    assert dataset["numTraining"] == 4 and dataset["file_ending"] == ".nii.gz"
    assert dataset["channel_names"] == {"0": "CT"}
    # Liver's values keep their numbers: linked; Kidney's 1 → 2 (kidney), 2 → 3 (spleen): rewritten
    for case in ("a", "b"):
        source, written = liver / f"labelsTr/{case}.nii.gz", folder / f"labelsTr/d501_{case}.nii.gz"
        assert os.path.samefile(source, written)
    for case in ("a", "c"):
        source, written = kidney / f"labelsTr/{case}.nii.gz", folder / f"labelsTr/d502_{case}.nii.gz"
        assert not os.path.samefile(source, written)
        np.testing.assert_array_equal(_array(written), np.array([0, 2, 3], np.uint8)[_array(source)])
        before, after = _read(source), _read(written)
        assert after.GetSpacing() == pytest.approx(SPACING) and after.GetOrigin() == before.GetOrigin()
        assert after.GetDirection() == before.GetDirection()
    assert (result.labels_linked, result.labels_renumbered) == (3, 2)  # Liver's test label is linked too


def test_case_ids_carry_their_source_prefix_and_images_are_hard_links(raw, liver, kidney):
    result = _merged(raw, 501, 502)
    folder = result.folder
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        "d501_a_0000.nii.gz",
        "d501_b_0000.nii.gz",
        "d502_a_0000.nii.gz",
        "d502_c_0000.nii.gz",
    ]
    for prefix, source in (("d501_", liver), ("d502_", kidney)):
        for image in (source / "imagesTr").iterdir():
            written = folder / "imagesTr" / (prefix + image.name)
            assert written.stat().st_ino == image.stat().st_ino and image.stat().st_nlink == 2
    assert (result.images_linked, result.images_copied) == (6, 0)
    assert merge.case_prefix(7) == "d007_"


def test_images_are_copied_where_a_hard_link_is_refused(raw, liver, kidney, monkeypatch):
    def cross_device(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(merge.os, "link", cross_device)
    result = _merged(raw, 501, 502)
    image, written = liver / "imagesTr/a_0000.nii.gz", result.folder / "imagesTr/d501_a_0000.nii.gz"
    assert not os.path.samefile(image, written) and image.read_bytes() == written.read_bytes()
    assert (result.images_linked, result.images_copied) == (0, 6)


def test_test_sets_come_along_with_their_labels_renumbered(raw, liver, kidney):
    folder = _merged(raw, 501, 502).folder
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["d501_t_0000.nii.gz", "d502_t_0000.nii.gz"]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["d501_t.nii.gz"]  # Kidney's test set: none
    assert os.path.samefile(liver / "labelsTs/t.nii.gz", folder / "labelsTs/d501_t.nii.gz")


def test_the_manifest_lists_every_training_case_with_its_sources_labels(raw, liver, kidney):
    folder = _merged(raw, 501, 502).folder
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset[MANIFEST_KEY] == {
        "complete": True,
        "cases": {
            "d501_a": ["liver", "kidney"],
            "d501_b": ["liver", "kidney"],
            "d502_a": ["kidney", "spleen"],
            "d502_c": ["kidney", "spleen"],
        },
    }
    table = load_manifest(dataset, ["d501_a", "d501_b", "d502_a", "d502_c"], folder / "dataset.json")
    assert table.labels == ("background", "liver", "kidney", "spleen")
    np.testing.assert_array_equal(table.mask(["d501_a", "d502_c"]), [[0, 1, 1, 0], [0, 0, 1, 1]])


def test_a_source_manifest_is_intersected_and_a_test_only_source_is_accepted(raw, liver):
    _dataset(
        raw,
        503,
        "Spleen",
        {"background": 0, "liver": 1, "spleen": 2},
        {"x": [1, 2], "y": [1]},
        manifest={"complete": False, "cases": {"y": ["liver"]}},
    )
    reference = _dataset(
        raw, 504, "Reference", {"background": 0, "spleen": 1, "liver": 2, "kidney": 3}, {}, {"r": [1, 2, 3]}
    )
    assert not any((reference / "imagesTr").iterdir())
    result = merge.merge_datasets(["501", "503", "504"], 511, "All", progress=False)
    dataset = json.loads((result.folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}
    assert dataset[MANIFEST_KEY]["cases"] == {
        "d501_a": ["liver", "kidney"],
        "d501_b": ["liver", "kidney"],
        "d503_x": ["liver", "spleen"],
        "d503_y": ["liver"],
    }
    label = _array(result.folder / "labelsTs/d504_r.nii.gz")  # spleen 1 → 3, liver 2 → 1, kidney 3 → 2
    np.testing.assert_array_equal(label, np.array([0, 3, 1, 2], np.uint8)[_array(reference / "labelsTs/r.nii.gz")])
    sources = {s["dataset"]: s for s in dataset[merge.RECORD_KEY]["sources"]}
    assert sources["Dataset504_Reference"]["training_cases"] == 0
    assert sources["Dataset504_Reference"]["test_labels"] == 1
    assert sources["Dataset503_Spleen"]["had_manifest"] is True


def test_the_record_names_each_source_its_prefix_and_label_mapping(raw, liver, kidney):
    folder = _merged(raw, 501, 502).folder
    record = json.loads((folder / "dataset.json").read_text())[merge.RECORD_KEY]
    assert record["same"] == [["kidney", "kidney_left"]]
    first, second = record["sources"]
    assert first["dataset"] == "Dataset501_Liver" and first["prefix"] == "d501_"
    assert first["labels"] == {"0": 0, "1": 1, "2": 2}
    assert second["dataset"] == "Dataset502_Kidney" and second["prefix"] == "d502_"
    assert second["labels"] == {"0": 0, "1": 2, "2": 3}
    assert second["label_names"] == {"kidney_left": "kidney", "spleen": "spleen"}
    assert (second["training_cases"], second["test_cases"], second["test_labels"]) == (2, 1, 0)
    assert first["folder"] == str(liver.resolve())


def test_an_ignore_label_is_kept_last(raw, liver):
    ignoring = _dataset(
        raw, 505, "Ignoring", {"background": 0, "spleen": 1, "ignore": 2}, {"i": [1, 2]}, {}, channel="CT"
    )
    folder = merge.merge_datasets(["501", "505"], 512, progress=False).folder
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "liver": 1, "kidney": 2, "spleen": 3, "ignore": 4}
    np.testing.assert_array_equal(
        _array(folder / "labelsTr/d505_i.nii.gz"), np.array([0, 3, 4], np.uint8)[_array(ignoring / "labelsTr/i.nii.gz")]
    )
    assert dataset[MANIFEST_KEY]["cases"]["d505_i"] == ["spleen"]


class _InProcess:
    """Stands in for nnU-Net's spawned pool: starting one costs seconds, the checks themselves milliseconds."""

    def __init__(self, processes):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def starmap(self, function, arguments):
        return [function(*a) for a in arguments]


def test_the_merged_dataset_passes_nnunets_integrity_check(raw, liver, kidney, monkeypatch, capsys):
    from nnunetv2.experiment_planning import verify_dataset_integrity as integrity

    folder = _merged(raw, 501, 502).folder
    monkeypatch.setattr(integrity.multiprocessing, "get_context", lambda method: SimpleNamespace(Pool=_InProcess))
    integrity.verify_dataset_integrity(str(folder), num_processes=1)
    out = capsys.readouterr().out
    assert "verify_dataset_integrity Done" in out and "Error" not in out


def _nothing_new(raw, before):
    assert sorted(p.name for p in raw.iterdir()) == before  # no target, no staging folder


def test_every_mismatch_is_listed_in_one_error_and_nothing_is_written(raw, liver, kidney):
    _dataset(raw, 506, "MR", {"background": 0, "liver": 1}, {"m": [1]}, channel="MR")
    png = raw / "Dataset507_Png"
    png.mkdir()
    (png / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT", "1": "T2"},
                "labels": {"background": 0},
                "numTraining": 0,
                "file_ending": ".png",
            }
        )
    )
    before = sorted(p.name for p in raw.iterdir())
    with pytest.raises(InputError) as error:
        merge.merge_datasets(["501", "506", "507", "998", "501"], 513, same=["kidney=kidny"], progress=False)
    message = str(error.value)
    assert message.startswith("cannot merge these datasets (6 problems):")
    assert "no dataset with id 998 (nnUNet_raw holds Dataset501_Liver, Dataset502_Kidney" in message
    assert "dataset id 501 is given twice: '501' and '501'" in message
    assert "channel 0 is 'CT' in Dataset501_Liver but 'MR' in Dataset506_MR" in message
    assert "channel 1 ('T2') is in Dataset507_Png but not in Dataset501_Liver" in message
    assert "file_ending is '.nii.gz' in Dataset501_Liver but '.png' in Dataset507_Png" in message
    assert "--same 'kidney=kidny': no dataset has a label 'kidny' (did you mean 'kidney'?)" in message
    _nothing_new(raw, before)


def test_undeclared_label_values_name_the_file_and_leave_nothing_behind(raw, liver, kidney):
    bad = kidney / "labelsTr/c.nii.gz"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(_label([1, 5, 7])), str(bad))
    before = sorted(p.name for p in raw.iterdir())
    with pytest.raises(InputError, match=r"c\.nii\.gz: label values 5, 7 are not declared in .*Dataset502_Kidney"):
        _merged(raw, 501, 502)
    _nothing_new(raw, before)


def test_an_unreadable_label_file_is_named(raw, liver, kidney):
    (kidney / "labelsTr/a.nii.gz").write_bytes(b"not an image")
    before = sorted(p.name for p in raw.iterdir())
    with pytest.raises(
        InputError, match=r"labelsTr/a\.nii\.gz: nnU-Net's reader for \.nii\.gz cannot read it"
    ) as error:
        _merged(raw, 501, 502)
    assert "c.nii.gz" not in str(error.value)
    _nothing_new(raw, before)


@pytest.mark.parametrize(
    ("sources", "same", "expected"),
    [
        (["501", "Dataset501_Liver"], [], r"dataset id 501 is given twice: '501' and 'Dataset501_Liver'"),
        (["501", "77"], [], r"no dataset with id 77 \(nnUNet_raw holds Dataset501_Liver, Dataset502_Kidney\)"),
        (["501", "Dataset077_X"], [], r"Dataset077_X: no such folder in nnUNet_raw"),
        (["501", "kidney"], [], r"'kidney' is neither a dataset id \(e.g. 501\) nor a dataset name"),
        (["501"], [], r"merge needs two or more datasets; got 1"),
        (["501", "502"], ["liver=spleen=pancreas"], r"no dataset has a label 'pancreas'"),
        (["501", "502"], ["liver=kidney"], r"'liver', 'kidney' are all labels of Dataset501_Liver"),
        (["501", "502"], ["background=spleen"], r"'background' is background or the ignore label"),
        (["501", "502"], ["kidney"], r"expected two or more label names separated by '='"),
    ],
)
def test_bad_sources_and_names_are_refused(raw, liver, kidney, sources, same, expected):
    before = sorted(p.name for p in raw.iterdir())
    with pytest.raises(InputError, match=expected):
        merge.merge_datasets(sources, 514, same=same, progress=False)
    _nothing_new(raw, before)


def test_regions_are_refused_with_the_reason(raw, liver):
    _dataset(
        raw, 508, "Regions", {"background": 0, "whole": [1, 2], "core": 2}, {"r": [1, 2]}, regions_class_order=[1, 2]
    )
    with pytest.raises(
        InputError, match=r"Dataset508_Regions uses regions \('whole' = \(1, 2\)\): a region is a union"
    ):
        merge.merge_datasets(["501", "508"], 515, progress=False)


def test_nnunet_raw_must_be_set_and_exist(raw, monkeypatch):
    monkeypatch.delenv("nnUNet_raw")
    with pytest.raises(InputError, match="nnUNet_raw is not set"):
        merge.merge_datasets(["1", "2"], 3)
    monkeypatch.setenv("nnUNet_raw", str(raw / "absent"))
    with pytest.raises(InputError, match=r"nnUNet_raw=.*absent does not exist"):
        merge.merge_datasets(["1", "2"], 3)


def test_ids_resolve_as_nnunet_resolves_them(raw, liver, kidney, monkeypatch):
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    assert merge.resolve_dataset("501", raw).name == maybe_convert_to_dataset_name("501") == "Dataset501_Liver"
    assert merge.resolve_dataset(502, raw) == kidney
    (raw.parent / "nnUNet_preprocessed" / "Dataset501_Other").mkdir()
    with pytest.raises(InputError, match=r"dataset id 501 names 2 datasets: Dataset501_Liver \(nnUNet_raw\); "):
        merge.resolve_dataset("501", raw)
    with pytest.raises(RuntimeError):
        maybe_convert_to_dataset_name("501")


def test_force_replaces_only_a_merged_dataset(raw, liver, kidney):
    folder = _merged(raw, 501, 502).folder
    with pytest.raises(InputError, match=r"Dataset510_Liver_Kidney exists; pass --force"):
        _merged(raw, 501, 502)
    (folder / "stale.txt").write_text("from before")
    replaced = merge.merge_datasets(["501", "502"], 510, force=True, same=["kidney=kidney_left"], progress=False)
    assert replaced.folder == folder and not (folder / "stale.txt").exists()
    other = raw / "Dataset520_Liver_Kidney"
    other.mkdir()
    (other / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}))
    with pytest.raises(InputError, match=r"has no 'nnunet_dicephi_merge' record in its dataset.json"):
        merge.merge_datasets(["501", "502"], 520, force=True, progress=False)
    assert json.loads((other / "dataset.json").read_text()) == {"labels": {"background": 0}}


def test_the_target_cannot_be_a_source(raw, liver, kidney):
    with pytest.raises(InputError, match=r"Dataset501_Liver is one of the datasets to merge"):
        merge.merge_datasets(["501", "502"], 501, "Liver", force=True, progress=False)


def test_the_verb_prints_what_it_wrote_and_refuses_in_one_line(raw, liver, kidney, capsys):
    argv = ["merge", "501", "502", "-d", "510", "--name", "Abdomen", "--same", "kidney=kidney_left", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"wrote {raw / 'Dataset510_Abdomen'}: 4 training cases, 2 test cases (1 labelled)" in out
    assert "from Dataset501_Liver as d501_*, Dataset502_Kidney as d502_*" in out
    assert "labels: background=0, liver=1, kidney=2, spleen=3" in out
    assert "next: nnUNetv2_plan_and_preprocess -d 510 --verify_dataset_integrity" in out
    assert main(["merge", "501", "999", "-d", "511", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("nnunet-dicephi merge: error:") == 1 and "no dataset with id 999" in err
