"""``nnunet-dicephi run`` with nnU-Net itself: a tiny grid to its report, stopped and resumed, failing;
and every study in ``examples/`` with ``--smoke``.

The verb runs as its own process (``nnunet-dicephi run``), so that it is stopped the way a user
stops it: ``kill`` (SIGTERM). Every wait has a deadline; a failure prints the end of the run's
output.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import module_folder
from tests.grid_specs import grid_spec, sigterm_pending, small_grid, write_grid_datasets

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.toml") if p.stem != "grid")  # grid.toml: BraTS
WAIT_S = 900


def command() -> list[str]:
    beside = Path(sys.executable).parent / "nnunet-dicephi"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "nnunet_dicephi.cli"]


def run(*args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess:
    return subprocess.run([*command(), *args], capture_output=True, text=True, timeout=timeout)


def write_spec(root: Path, name: str, dataset: str) -> Path:
    path = root / f"{name}.toml"
    path.write_text(grid_spec(name=name, output=json.dumps(name), dataset=dataset), encoding="utf-8")
    return path


def tail(result) -> str:
    return (result.stdout + result.stderr)[-4000:]


@pytest.fixture(scope="module")
def root(tmp_path_factory, request):
    with module_folder(tmp_path_factory, request, "local") as folder:
        yield write_grid_datasets(folder)


def test_a_grid_runs_to_its_report_and_running_again_runs_nothing(root):
    dataset = small_grid(root)
    spec = write_spec(root, "grid", dataset)
    started = time.monotonic()
    first = run("run", str(spec), "--quiet")
    assert first.returncode == 0, tail(first)
    print(f"grid: run → report in {time.monotonic() - started:.0f} s")
    out = root / "grid"
    report = (out / "report" / "report.md").read_text()
    assert "TrainerDiceI_ep2_it2" in report and "TrainerDiceIEps_ep2_it2" in report
    assert (out / "report" / "test_Dataset901_Blobs" / "report.md").is_file()
    for trainer in ("TrainerDiceI_ep2_it2", "TrainerDiceIEps_ep2_it2"):
        log = out / "logs" / "train" / "Dataset901_Blobs" / f"{trainer}__nnUNetPlans__2d" / "fold_0.log"
        assert "starting fresh" in log.read_text() and "done" in log.read_text()
    status = run("status", str(spec))
    assert status.returncode == 0 and status.stdout.strip().splitlines()[-1] == "7 done", status.stdout
    again = run("run", str(spec), "--quiet")
    assert again.returncode == 0 and "nothing to run" in again.stdout, tail(again)
    assert "already preprocessed" in again.stdout


def test_a_run_stopped_with_kill_resumes_the_fold_with_c(root):
    trainer = "TrainerDiceIEps_ep12_it4"  # a checkpoint every 3 epochs: the first one at epoch 2 of 12
    spec = write_spec(root, "resume", f'id = 901\nconfigurations = ["2d"]\ntrainers = ["{trainer}"]\nfolds = [0]\n')
    fold = root / "results" / "Dataset901_Blobs" / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    key = f"train/Dataset901_Blobs/{trainer}__nnUNetPlans__2d/fold_0"
    process = subprocess.Popen(
        [*command(), "run", str(spec), "--stages", "preprocess,train", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + WAIT_S
    while not (fold / "checkpoint_latest.pth").is_file() and time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.05)
    assert (fold / "checkpoint_latest.pth").is_file(), "no checkpoint to resume from"
    # freeze the training (its process group: nnU-Net and its workers) where it stands, so that however
    # fast the machine it cannot finish before the kill; checkpoints are renamed into place, so whole
    training = json.loads((root / "resume" / "local_state.json").read_text())["units"][key]["pid"]
    os.killpg(training, signal.SIGSTOP)
    assert not (fold / "checkpoint_final.pth").is_file(), "the training ended before it could be stopped"
    record = json.loads((fold / "dicephi_loss.json").read_text())
    process.send_signal(signal.SIGTERM)  # what `kill` sends
    # the run passes SIGTERM on to the training; once it waits there, the training may take it
    deadline = time.monotonic() + 60
    while not sigterm_pending(training) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(training, signal.SIGCONT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert not (fold / "checkpoint_final.pth").is_file()
    status = run("status", str(spec))
    assert re.search(rf"train .* {trainer} +0 +interrupted", status.stdout), status.stdout

    resumed = run("run", str(spec), "--stages", "preprocess,train", "--quiet")
    assert resumed.returncode == 0, tail(resumed)
    log = root / "resume" / "logs" / "train" / "Dataset901_Blobs" / f"{trainer}__nnUNetPlans__2d" / "fold_0.log"
    assert "resuming from checkpoint_latest.pth with --c" in log.read_text()
    first, second = sorted(fold.glob("training_log_*.txt"))
    epochs = [int(e) for e in re.findall(r": Epoch (\d+)\s*$", second.read_text(), re.M)]
    assert epochs[0] > 0 and epochs[-1] == 11, "the second run must continue, not start over"
    assert json.loads((fold / "dicephi_loss.json").read_text()) == record  # the same heuristic ε


def test_a_failing_job_is_shown_with_its_log_and_its_dependants_never_run(root):
    spec = write_spec(
        root, "broken", 'id = 902\nconfigurations = ["2d"]\ntrainers = ["TrainerDiceI_ep2_it2"]\nfolds = [0]\n'
    )
    result = run("run", str(spec), "--quiet")
    assert result.returncode == 1, tail(result)
    assert re.search(
        r"preprocess/Dataset902_Broken failed \(nnUNetv2_plan_and_preprocess ended with exit status \d+\)",
        result.stdout,
    )
    assert "the end of" in result.stdout and "1 failed, 3 blocked" in result.stdout, result.stdout
    assert not (root / "results" / "Dataset902_Broken").exists()
    status = run("status", "--json", str(spec))
    assert status.returncode == 1
    rows = {r["stage"]: r for r in json.loads(status.stdout)}
    assert rows["preprocess"]["status"] == "failed" and "log:" in rows["preprocess"]["detail"]
    assert all(rows[stage]["status"] == "blocked" for stage in ("train", "predict", "report")), rows


def test_a_bad_spec_is_refused_before_anything_runs(tmp_path):
    spec = write_spec(tmp_path, "bad", 'id = 903\nconfigurations = ["2d"]\ntrainers = ["TrainerDiceQ"]\n')
    result = run("run", str(spec))
    assert result.returncode == 2 and "nnunet-dicephi run: error:" in result.stderr
    assert "TrainerDiceQ" in result.stderr and not (tmp_path / "bad").exists()


def trimmed_for_smoke(text: str) -> str:
    """The spec with every code path at a fraction of the time.

    Only the first ``[[dataset]]`` of each ``configurations`` list is kept; in each sweep the first
    training seed, and of its ε the ends and every named one ("H"): seeds and the ε between repeat
    code paths that the ends already run.
    """
    head, *blocks = text.split("\n[[dataset]]\n")
    kept, seen = [], set()
    for block in blocks:
        configurations = re.search(r"^configurations = (.*)$", block, re.M).group(1)
        if configurations not in seen:
            seen.add(configurations)
            kept.append(block)
    text = "\n[[dataset]]\n".join([head, *kept])
    text = re.sub(r"^seeds = \[([^],]+)[^]]*\]", r"seeds = [\1]", text, flags=re.M)
    return re.sub(
        r"^eps = \[([^]]*)\]", lambda m: f"eps = [{', '.join(_ends_and_names(m.group(1)))}]", text, flags=re.M
    )


def _ends_and_names(values: str) -> list[str]:
    items = [v.strip() for v in values.split(",") if v.strip()]
    numbers = [v for v in items if not v.startswith('"')]
    return [v for v in items if v.startswith('"') or v in (numbers[0], numbers[-1])]


def test_the_smoke_trim_keeps_every_configuration_the_ends_of_each_eps_sweep_and_one_seed():
    text = (ROOT / "examples" / "transition.toml").read_text("utf-8")
    trimmed = tomllib.loads(trimmed_for_smoke(text))
    sweeps = trimmed["dataset"][0]["sweep"]
    assert sweeps[0]["eps"] == [1e-7, "H", 1000] and sweeps[0]["seeds"] == [0]
    assert sweeps[1]["batch_sizes"] == [1, 2, 4]
    regimes = tomllib.loads(trimmed_for_smoke((ROOT / "examples" / "transition_regimes.toml").read_text()))
    assert [d["configurations"] for d in regimes["dataset"]] == [["2d"], ["3d_fullres"]]
    assert regimes["dataset"][0]["sweep"][0]["seeds"] == [0]


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_runs_end_to_end_with_smoke(example, tmp_path):
    spec = tmp_path / f"{example}.toml"  # its runs/ folder lands in tmp_path
    spec.write_text(trimmed_for_smoke((ROOT / "examples" / f"{example}.toml").read_text("utf-8")))
    started = time.monotonic()
    datasets = len(tomllib.loads(spec.read_text(encoding="utf-8"))["dataset"])
    result = run("run", str(spec), "--smoke", "--quiet", timeout=1500 + 300 * datasets)
    minutes = (time.monotonic() - started) / 60
    print(f"{example} --smoke: {minutes:.1f} min")
    assert result.returncode == 0, tail(result)
    smoke = tmp_path / "runs" / example / "smoke"
    report = smoke / "report"
    assert (report / "report.md").is_file() and (report / "summary.csv").is_file()
    test_reports = list(report.glob("test_Dataset*/report.md"))
    assert len(test_reports) == datasets, "each toy's test set is predicted and reported"
    import pandas as pd

    summary = pd.read_csv(report / "summary.csv")
    results = tmp_path / "runs" / "nnUNet_results"
    trained = {p.parents[1] for p in results.glob("*/*/fold_0/checkpoint_final.pth")}  # one per dataset and trainer
    assert len(set(zip(summary["dataset"], summary["configuration"]))) == len(trained) > 0
    if example == "transition":
        assert list(report.glob("transition_*.png")) and (report / "transition.csv").is_file()
        sweeps = pd.read_csv(report / "transition.csv")
        assert set(sweeps["sweep_axis"]) == {"eps", "batch"}
        assert sorted(sweeps.loc[sweeps["sweep_axis"] == "batch", "sweep_value"]) == [1.0, 2.0, 4.0]
    assert os.environ.get("nnUNet_raw") is None or str(tmp_path) not in os.environ["nnUNet_raw"]
