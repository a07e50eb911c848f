"""Manifest validation, (B, C) masks, and the partial-label summary."""

import json

import numpy as np
import pytest

from nnunet_dicephi.evaluation import restrict_summary_to_annotated
from nnunet_dicephi.partial_labels import ManifestError, load_manifest

DATASET = {"labels": {"background": 0, "RV": 1, "MYO": 2, "LV": 3}, "file_ending": ".nii.gz"}


def _with(manifest):
    return {**DATASET, "dicephi_partial_labels": manifest}


def test_no_manifest():
    assert load_manifest(DATASET) is None


def test_mask_by_names_and_values():
    table = load_manifest(_with({"cases": {"p1_ES": ["RV", 3], "p2_ES": []}}), ["p1_ES", "p1_ED", "p2_ES"])
    mask = table.mask(np.array(["p1_ES", "p1_ED", "p2_ES"]))
    assert mask.tolist() == [[False, True, False, True], [True, True, True, True], [False, False, False, False]]
    assert table.is_partial and not table.annotated("p1_ES", 2) and table.annotated("p1_ED", 2)


def test_background_is_annotated_only_when_everything_is():
    table = load_manifest(_with({"cases": {"a": ["RV", "MYO", "LV"]}}))
    assert table.mask(["a"]).tolist() == [[True, True, True, True]]
    assert not table.is_partial


def test_every_offender_is_listed_at_once():
    manifest = {"complete": True, "cases": {"a": ["RV", "PA", 7, "background"], "zz": ["LV"], "b": "RV"}, "x": 1}
    with pytest.raises(ManifestError) as error:
        load_manifest(_with(manifest), ["a", "b", "c"])
    message = str(error.value)
    for offender in (
        "unknown keys ['x']",
        "unknown label 'PA'",
        "unknown label 7",
        "unknown label 'background'",
        "case 'b': expected a list",
        "case ids not in the dataset: zz",
        "not listed: c",
    ):
        assert offender in message
    assert "(7 problems)" in message


def test_malformed_manifest_shape():
    with pytest.raises(ManifestError, match="must be an object with a 'cases' object"):
        load_manifest(_with(["a"]))


@pytest.mark.parametrize(
    "key", ["dicephi_partial_label", "DicePhi_Partial_Labels", "dicephi-partial-labels", "partial_labels", "dicephi"]
)
def test_a_key_that_looks_like_the_manifest_key_is_refused_not_ignored(key):
    manifest = {"cases": {"a": ["LV"]}}
    with pytest.raises(ManifestError) as error:
        load_manifest({**DATASET, key: manifest})
    message = str(error.value)
    assert message.startswith(f"dataset.json has {key!r} where the partial-label manifest key is")
    assert "rename the key to 'dicephi_partial_labels'" in message and message.count("\n") == 0
    with pytest.raises(ManifestError, match=rf"^/raw/Dataset027_ACDC/dataset.json has {key!r}"):
        load_manifest({**_with(manifest), key: manifest}, source="/raw/Dataset027_ACDC/dataset.json")  # also beside


def test_nnunets_own_keys_are_not_taken_for_a_misspelt_manifest_key():
    nnunet_keys = ["channel_names", "numTraining", "file_ending", "regions_class_order", "description", "name"]
    assert load_manifest({**DATASET, **dict.fromkeys(nnunet_keys, "x"), "reference": "", "licence": ""}) is None


def test_regions_are_refused_and_ignore_label_works():
    regions = {"labels": {"background": 0, "whole": [1, 2], "core": 2}, "dicephi_partial_labels": {"cases": {}}}
    with pytest.raises(ManifestError, match="region"):
        load_manifest(regions)
    ignore = {"labels": {**DATASET["labels"], "ignore": 4}, "dicephi_partial_labels": {"cases": {"a": ["LV"]}}}
    assert load_manifest(ignore).mask(["a"]).shape == (1, 4)


def test_summary_restricted_to_annotated_pairs(tmp_path):
    def case(name, dice1, dice2):
        return {
            "reference_file": f"/gt/{name}.nii.gz",
            "prediction_file": f"/pred/{name}.nii.gz",
            "metrics": {"1": {"Dice": dice1}, "2": {"Dice": dice2}},
        }

    summary = {
        "metric_per_case": [case("a", 0.9, 0.0), case("b", 0.7, 0.8), case("c", 0.5, float("nan"))],
        "mean": {},
        "foreground_mean": {},
    }
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    table = load_manifest(
        {"labels": {"background": 0, "x": 1, "y": 2}, "dicephi_partial_labels": {"cases": {"a": ["x"]}}}
    )
    new = restrict_summary_to_annotated(str(path), table)
    assert new["mean"]["1"]["Dice"] == pytest.approx(0.7)
    assert new["mean"]["2"]["Dice"] == pytest.approx(0.8)  # 'a' unannotated, 'c' NaN (both empty) skipped
    assert new["foreground_mean"]["Dice"] == pytest.approx(0.75)
    assert json.loads((tmp_path / "summary_all_pairs.json").read_text()) == json.loads(json.dumps(summary))
    again = restrict_summary_to_annotated(str(path), table)  # restricting twice changes nothing
    assert again == new and json.loads((tmp_path / "summary_all_pairs.json").read_text()) == json.loads(
        json.dumps(summary)
    )


def test_a_second_validation_refreshes_both_summaries(tmp_path):
    """nnUNetv2_train --val writes nnU-Net's summary.json anew; the all-pairs file must follow it."""

    def nnunet_summary(dice_a, dice_b):
        cases = [("a", dice_a), ("b", dice_b)]
        return {
            "metric_per_case": [
                {"reference_file": f"/gt/{c}.nii.gz", "prediction_file": f"/{c}.nii.gz", "metrics": {"1": {"Dice": d}}}
                for c, d in cases
            ],
            "mean": {"1": {"Dice": (dice_a + dice_b) / 2}},
            "foreground_mean": {"Dice": (dice_a + dice_b) / 2},
        }

    path = tmp_path / "summary.json"
    table = load_manifest({"labels": {"background": 0, "x": 1, "y": 2}, "dicephi_partial_labels": {"cases": {"a": []}}})
    path.write_text(json.dumps(nnunet_summary(0.2, 0.6)))
    restrict_summary_to_annotated(str(path), table)
    second = nnunet_summary(0.4, 0.9)
    path.write_text(json.dumps(second))  # the --val re-run
    restricted = restrict_summary_to_annotated(str(path), table)
    assert json.loads((tmp_path / "summary_all_pairs.json").read_text()) == second
    assert restricted["mean"]["1"]["Dice"] == json.loads(path.read_text())["mean"]["1"]["Dice"] == pytest.approx(0.9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "summary_all_pairs.json"]
