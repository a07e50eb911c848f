"""The oldest supported nnU-Net (2.6.0) through its stock commands, after ``nnunet-dicephi register``.

nnU-Net before 2.8 has no ``nnUNet_extTrainer``: its commands find the trainers only once
``register`` has placed the re-export module in its trainer package. The second environment is
this one with nnU-Net 2.6.0 in front of it: ``pip install --target`` of nnunetv2 2.6.0 and of the
one dependency whose supported versions differ (dynamic-network-architectures < 0.4), both without
their dependencies, put first on ``PYTHONPATH``; torch and everything else are shared. The commands
run are that folder's own ``nnUNetv2_*`` scripts.

pip needs PyPI: without it the tests skip with pip's reason; with ``DICEPHI_REQUIRE_PYPI=1`` (CI)
they fail instead.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_dicephi.synthetic import write_dataset
from tests.conftest import module_folder

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
OLDEST = "2.6.0"
REQUIREMENTS = [f"nnunetv2=={OLDEST}", "dynamic-network-architectures>=0.3.1,<0.4"]
TRAINER = "TrainerDiceBI_ep1_it2"


@pytest.fixture(scope="module")
def older(tmp_path_factory, request):
    with module_folder(tmp_path_factory, request, "nnunet-older") as root:
        target = root / f"nnunetv2-{OLDEST}"
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--target", str(target), "--no-deps", "--no-input"]
            + ["--disable-pip-version-check", *REQUIREMENTS],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if install.returncode != 0:
            errors = [line for line in install.stderr.splitlines() if line.startswith("ERROR:")]
            said = "; ".join(errors) or install.stderr.strip()[-600:]
            reason = f"pip could not install {' '.join(REQUIREMENTS)} (is PyPI reachable from here?): {said}"
            if os.environ.get("DICEPHI_REQUIRE_PYPI"):
                pytest.fail(f"PyPI is required here (DICEPHI_REQUIRE_PYPI) but {reason}")
            pytest.skip(reason)
        env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
        env.update(
            PYTHONPATH=os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])]),
            nnUNet_raw=str(root / "raw"),
            nnUNet_preprocessed=str(root / "preprocessed"),
            nnUNet_results=str(root / "results"),
            OMP_NUM_THREADS="1",
            nnUNet_def_n_proc="1",
        )
        imported = run(env, sys.executable, "-c", "import nnunetv2; print(nnunetv2.__file__)")
        assert imported.stdout.strip() == str(target / "nnunetv2" / "__init__.py")
        write_dataset(root / "raw", 901, "Blobs", cases=5)
        run(env, target / "bin" / "nnUNetv2_plan_and_preprocess", "-d", "901", "-c", "2d", "-np", "1")
        yield env, root, target


def run(env, command, *args, check=True, extra_env=None):
    result = subprocess.run(
        [str(command), *map(str, args)], env={**env, **(extra_env or {})}, capture_output=True, text=True, check=False
    )
    if check:
        assert result.returncode == 0, (
            f"{command} {' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def test_register_then_train_and_predict_with_the_stock_commands(older):
    env, root, target = older
    nnunet = target / "bin"
    train = [nnunet / "nnUNetv2_train", "901", "2d", "0", "-tr", TRAINER, "-device", "cpu"]
    module = target / "nnunetv2" / "training" / "nnUNetTrainer" / "variants" / "dicephi_trainers.py"

    unregistered = run(env, *train, check=False)
    assert unregistered.returncode != 0
    assert f"Could not find requested nnunet trainer {TRAINER}" in unregistered.stderr

    registered = run(env, BIN / "nnunet-dicephi", "register")
    assert registered.stdout.startswith(f"registered with nnU-Net {OLDEST}: {module}")
    assert run(env, BIN / "nnunet-dicephi", "register").stdout.startswith("already registered")

    run(env, *train, extra_env={"nnUNet_n_proc_DA": "0"})
    fold = root / "results" / "Dataset901_Blobs" / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
    record = json.loads((fold / "dicephi_loss.json").read_text())
    assert record["trainer_name"] == TRAINER and record["phi"] == "BI" and record["epochs"] == 1
    preprocessed = root / "preprocessed" / "Dataset901_Blobs" / "nnUNetPlans_2d"
    assert {p.suffix for p in preprocessed.glob("case_000*")} == {".b2nd", ".pkl"}  # blosc2, as from 2.6 on

    images = root / "raw" / "Dataset901_Blobs" / "imagesTr"
    out = root / "predicted"
    predict = ["-i", images, "-o", out, "-d", "901", "-c", "2d", "-f", "0", "-tr", TRAINER, "-device", "cpu"]
    run(env, nnunet / "nnUNetv2_predict", *predict, "-npp", "1", "-nps", "1")
    assert len(list(out.glob("*.nii.gz"))) == 5

    # the statistics' trainer leaves no folder in nnUNet_results, though 2.6 read the variable at import
    stats = json.loads(run(env, BIN / "nnunet-dicephi", "stats", "901", "2d", "0").stdout)
    assert len(stats["heuristic_eps"]) == 3 and stats["training_cases"] == 4
    assert sorted(p.name for p in (root / "results" / "Dataset901_Blobs").iterdir()) == [fold.parent.name]

    assert run(env, BIN / "nnunet-dicephi", "unregister").stdout.startswith(f"unregistered from nnU-Net {OLDEST}")
    assert not module.exists()
    assert run(env, *train, check=False).returncode != 0
