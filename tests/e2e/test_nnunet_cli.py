"""The stock nnU-Net commands, in fresh subprocesses, with this project's trainers (CPU, tiny data)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_dicephi.synthetic import write_dataset

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def nnunet_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}  # registration must do it
    env.update(
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(root / "results"),
        OMP_NUM_THREADS="1",
    )
    write_dataset(root / "raw", 901, "Blobs", cases=5)
    run(env, "nnUNetv2_plan_and_preprocess", "-d", "901", "-c", "2d", "-np", "1", "--verify_dataset_integrity")
    return env, root


def run(env, command, *args, extra_env=None):
    result = subprocess.run(
        [str(BIN / command), *args], env={**env, **(extra_env or {})}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, (
        f"{command} {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def test_train_and_predict_with_a_parametric_trainer(nnunet_env):
    env, root = nnunet_env
    name = "TrainerDiceBI_eps1e-5_CE_ep1_it2"
    run(env, "nnUNetv2_train", "901", "2d", "0", "-tr", name, "-device", "cpu", extra_env={"nnUNet_n_proc_DA": "0"})
    fold = root / "results" / "Dataset901_Blobs" / f"{name}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    record = json.loads((fold / "dicephi_loss.json").read_text())
    assert record["trainer_name"] == name and record["phi"] == "BI" and record["ce"] is True
    assert record["eps_per_level"][0]["eps_nr"] == pytest.approx(1e-5)
    assert record["eps_per_level"][1]["eps_nr"] == pytest.approx(1e-5 / 4)

    images = root / "raw" / "Dataset901_Blobs" / "imagesTr"
    out = root / "predicted"
    run(
        env,
        "nnUNetv2_predict",
        "-i",
        str(images),
        "-o",
        str(out),
        "-d",
        "901",
        "-c",
        "2d",
        "-f",
        "0",
        "-tr",
        name,
        "-device",
        "cpu",
        "-npp",
        "1",
        "-nps",
        "1",
    )
    assert len(list(out.glob("*.nii.gz"))) == 5


def test_unknown_trainer_name_is_explained(nnunet_env):
    env, _ = nnunet_env
    result = subprocess.run(
        [str(BIN / "nnUNetv2_train"), "901", "2d", "0", "-tr", "TrainerDiceBI_CE_eps1e-5", "-device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "Closest valid name: TrainerDiceBI_eps1e-5_CE" in result.stderr
