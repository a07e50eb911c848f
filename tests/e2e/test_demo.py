"""``nnunet-dicephi demo`` end to end at a tiny size: the pipeline runs and writes its report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_smoke_run_writes_table_report_and_figures(tmp_path):
    out = tmp_path / "demo out"  # a space in the path must not break any nnU-Net command
    result = subprocess.run(
        [str(Path(sys.executable).parent / "nnunet-dicephi"), "demo", "--smoke", "-o", str(out), "--device", "cpu"],
        capture_output=True,
        text=True,
        check=False,
        env={"OMP_NUM_THREADS": "1", "nnUNet_n_proc_DA": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for trainer in ("TrainerDiceI", "TrainerDiceBI", "TrainerDiceIEps"):
        assert f"| {trainer} |" in result.stdout
        assert len(list((out / "predictions" / trainer).glob("*.nii.gz"))) == 4
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"TrainerDiceI", "TrainerDiceBI", "TrainerDiceIEps"}
    assert all(0.0 <= results[t][k]["dsc"] <= 1.0 for t in results for k in ("A", "B"))
    # every trainer recorded its validation trend (two epochs) and says what it did
    assert all(results[t]["trend"]["epochs"] == [0, 1] for t in results)
    for trainer in results:
        assert f"{trainer}: {results[trainer]['explanation']}" in result.stdout
    report = (out / "report.md").read_text()
    assert "| TrainerDiceBI | Φ=BI" in report and "![examples](examples.png)" in report
    assert "training seed 0" in report.replace("\n", " ")
    assert "## Training trend on the validation images" in report and "![training_trend]" in report
    for figure in ("dsc_per_type.png", "examples.png", "training_trend.png"):
        assert (out / figure).stat().st_size > 1000
