"""A partially labelled collection in 3-D through the stock nnU-Net commands (CPU, tiny volumes).

Three toy source datasets, each annotating its own structures, and a fully labelled reference test
set are merged into one dataset; nnU-Net plans and preprocesses ``3d_fullres``, a partial-label
trainer trains a few iterations on the merge, predicts the reference test set, and ``report``
scores every structure on it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_dicephi.partial_labels import MANIFEST_KEY
from tests.conftest import module_folder

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
SOURCES = ("920", "921", "922", "923")  # A, B, C and the fully labelled reference (test set only)
MERGED = "924"
TRAINER = "TrainerDiceIEps_CE_ep1_it2"


def run(env, command, *args):
    result = subprocess.run([str(BIN / command), *args], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, (
        f"{command} {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def merged(tmp_path_factory, request):
    with module_folder(tmp_path_factory, request, "collections") as root:
        env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
        env.update(
            nnUNet_raw=str(root / "raw"),
            nnUNet_preprocessed=str(root / "preprocessed"),
            nnUNet_results=str(root / "results"),
            OMP_NUM_THREADS="1",
            nnUNet_def_n_proc="1",
        )
        run(
            env, "nnunet-dicephi", "toy", "organs-3d-sources", "-d", SOURCES[0], "--cases", "4,3,3", "--test-cases", "2"
        )
        run(env, "nnunet-dicephi", "merge", *SOURCES, "-d", MERGED, "--name", "Organs", "--quiet")
        run(
            env,
            "nnUNetv2_plan_and_preprocess",
            "-d",
            MERGED,
            "-c",
            "3d_fullres",
            "-np",
            "1",
            "--verify_dataset_integrity",
        )
        yield env, root


def test_merged_collection_trains_3d_fullres_predicts_and_reports(merged):
    env, root = merged
    raw = root / "raw" / f"Dataset{MERGED}_Organs"
    dataset = json.loads((raw / "dataset.json").read_text())
    labels = {name: value for name, value in dataset["labels"].items() if value}
    assert sorted(labels) == ["box", "ellipsoid", "sphere", "torus", "tube"]
    manifest = dataset[MANIFEST_KEY]["cases"]
    assert len(manifest) == 10 and sorted(len(annotated) for annotated in manifest.values()) == [2] * 10
    plans = json.loads((root / "preprocessed" / raw.name / "nnUNetPlans.json").read_text())
    assert max(plans["configurations"]["3d_fullres"]["patch_size"]) <= 48

    # ε over the annotated maps: each class is averaged over the fold's cases that annotate it
    stats = json.loads(run(env, "nnunet-dicephi", "stats", MERGED, "3d_fullres", "0", "-tr", TRAINER).stdout)
    splits = json.loads((root / "preprocessed" / raw.name / "splits_final.json").read_text())
    train = splits[0]["train"]
    for name, value in labels.items():
        annotating = sum(name in manifest[case] for case in train)
        assert stats["annotated_cases"][value] == annotating < len(train), name
    assert stats["annotated_cases"][0] == 0  # no case annotates every structure: background is never seen whole

    # augmentation in the main process (planning needs nnUNet_n_proc_DA ≥ 1: it sets torch's threads from it)
    run({**env, "nnUNet_n_proc_DA": "0"}, "nnUNetv2_train", MERGED, "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu")
    folder = root / "results" / raw.name / f"{TRAINER}__nnUNetPlans__3d_fullres"
    record = json.loads((folder / "fold_0" / "dicephi_loss.json").read_text())
    assert record["statistics_version"] == 2 and record["partial_labels"]["cases_partial"] == len(manifest)
    assert record["eps_per_class"] == pytest.approx(stats["heuristic_eps"], rel=1e-3)
    scales = [level["scale"] for level in record["eps_per_level"]]
    assert scales[:3] == [1.0, 1 / 8, 1 / 64]  # each 3-D deep-supervision output halves every side

    predicted = root / "predicted"
    run(
        env, "nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(predicted), "-d", MERGED, "-c", "3d_fullres",
        "-f", "0", "-tr", TRAINER, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1",
    )  # fmt: skip
    tests = sorted(p.name for p in (raw / "imagesTs").iterdir())
    assert len(tests) == 2 and len(list(predicted.glob("*.nii.gz"))) == 2

    report = root / "report"
    run(
        env, "nnunet-dicephi", "report", str(predicted), "--reference", str(raw / "labelsTs"),
        "--dataset-json", str(raw / "dataset.json"), "--all-pairs", "-o", str(report), "--n-resamples", "100",
    )  # fmt: skip
    import pandas as pd

    per_case = pd.read_csv(report / "per_case.csv")
    assert set(per_case["class"]) == set(labels)  # every structure scored on the fully labelled test set
    assert len(per_case) == 2 * len(labels) and np.isfinite(per_case["dsc"]).all() and per_case["annotated"].all()
