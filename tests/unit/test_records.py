"""What runs leave on disk: the per-case validation record after a kill, and nothing from ``stats``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_dicephi.evaluation import append_validation_record, read_validation_record


def _counts(epoch):
    return {"c0": np.full((3, 2), epoch), "c1": np.full((3, 2), 10 + epoch)}


def test_an_append_after_a_line_cut_by_a_kill_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "dicephi_validation.jsonl"
    for epoch in range(3):
        append_validation_record(path, epoch, _counts(epoch))
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"epoch": 3, "cases": {"c0": [[3, 3, ')  # the kill, half-way through epoch 3
    append_validation_record(path, 3, _counts(3))  # the resumed run repeats epoch 3

    with pytest.warns(UserWarning, match=r"dicephi_validation\.jsonl, line 4: not a validation record .*skipped"):
        record = read_validation_record(path)
    assert list(record) == [0, 1, 2, 3]
    np.testing.assert_array_equal(record[3]["c1"], np.full((2, 3), 13.0))
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 5


def test_an_intact_record_reads_without_a_warning_and_the_last_line_of_an_epoch_wins(tmp_path, recwarn):
    path = tmp_path / "dicephi_validation.jsonl"
    append_validation_record(path, 0, _counts(0))
    append_validation_record(path, 0, _counts(5))
    assert list(read_validation_record(path)) == [0] and not recwarn.list
    assert read_validation_record(path)[0]["c0"][0].tolist() == [5.0, 5.0, 5.0]


@pytest.mark.slow
def test_stats_and_gradients_write_nothing_under_nnunet_results(tmp_path, monkeypatch, capsys):
    from nnunet_dicephi.cli import main
    from nnunet_dicephi.synthetic import write_dataset

    folders = {key: tmp_path / key for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for key, folder in folders.items():
        folder.mkdir()
        monkeypatch.setenv(key, str(folder))
    write_dataset(folders["nnUNet_raw"], 903, "Blobs", cases=5, shape=(4, 16, 16), blob_radius=2)
    subprocess.run(
        [str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", "903", "-c", "2d", "-np", "1"],
        env={**os.environ, "nnUNet_def_n_proc": "1"},
        check=True,
        capture_output=True,
    )

    assert main(["stats", "903", "2d", "0"]) == 0
    assert len(json.loads(capsys.readouterr().out)["heuristic_eps"]) == 3
    assert list(folders["nnUNet_results"].iterdir()) == []  # no trainer folder, no training log
    assert os.environ["nnUNet_results"] == str(folders["nnUNet_results"])
    # the gradient explorer reads the same statistics, the same way
    args = ["gradients", "--dataset", "903", "--configuration", "2d", "--fold", "0", "-o", str(tmp_path / "g")]
    assert main(args) == 0 and (tmp_path / "g" / "gradients.csv").is_file()
    assert list(folders["nnUNet_results"].iterdir()) == []
    assert os.environ["nnUNet_results"] == str(folders["nnUNet_results"])
