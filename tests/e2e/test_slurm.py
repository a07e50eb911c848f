"""Experiment grids through a real SLURM (started here, single node): run, resume, fail.

The cluster comes from :mod:`tests.slurm_local` (Debian packages; installed with apt-get when
missing). Where SLURM cannot be installed or started (no root, no network, no apt-get) the tests
skip with the reason; with ``DICEPHI_REQUIRE_SLURM=1`` (CI) they fail instead.

The verbs are driven through their own argparse parser (``nnunet_dicephi.cluster.add_parser``), in
this process; the jobs run nnU-Net's stock commands on CPU through the scheduler. Every wait has a
deadline, and a timed-out wait prints the status table and the job logs.
"""

import argparse
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from nnunet_dicephi.cluster import add_parser
from tests.conftest import module_folder
from tests.grid_specs import grid_spec, sigterm_pending, small_grid, training_group, write_grid_datasets
from tests.slurm_local import PARTITION, LocalSlurm, SlurmUnavailable

pytestmark = pytest.mark.e2e

WAIT_S = 420
HOSTILE = "$(touch pwned) '; touch pwned2; echo '"

RESOURCES = """
[resources]
partition = "{partition}"
cpus = 1
mem_gb = 3
time = "00:20:00"
"""


def cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="nnunet-dicephi")
    add_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


def write_spec(root: Path, name: str, dataset: str, output: str | None = None) -> tuple[Path, Path]:
    """The spec file and its experiment output folder."""
    path = root / f"{name}.toml"
    resources = RESOURCES.format(partition=PARTITION)
    text = grid_spec(name=name, output=json.dumps(output or name), dataset=dataset, resources=resources)
    path.write_text(text, encoding="utf-8")
    return path, root / (output or name)


def recorded_jobs(out: Path) -> dict[str, str]:
    state = json.loads((out / "cluster_state.json").read_text())
    return {key: job for s in state["submissions"] for key, job in s["jobs"].items()}


def queued(job_ids) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30, check=True)
    mine = {j.split("_")[0] for j in job_ids}
    return [j for j in out.stdout.split() if j.split("_")[0] in mine]


def diagnose(out: Path, spec: Path) -> str:
    _, table, _ = cli("status", str(spec))
    logs = []
    for log in sorted((out / "slurm").glob("*/*_log.*")):
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-15:])
        logs.append(f"--- {log.name} ---\n{tail}")
    return table + "\n" + "\n".join(logs)


def wait_until(condition, timeout_s: float, what: str, explain, poll_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    pytest.fail(f"{what}: not after {timeout_s:.0f} s\n{explain()}")


def wait_for_jobs(out: Path, spec: Path) -> None:
    ids = list(recorded_jobs(out).values())
    wait_until(lambda: not queued(ids), WAIT_S, f"jobs {ids} still queued", lambda: diagnose(out, spec))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        slurm.start()
    except SlurmUnavailable as error:
        if os.environ.get("DICEPHI_REQUIRE_SLURM"):
            pytest.fail(f"SLURM is required here (DICEPHI_REQUIRE_SLURM) but: {error}")
        pytest.skip(f"no SLURM on this machine: {error}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(slurm.conf))
        try:
            yield slurm
        finally:
            slurm.stop()


@pytest.fixture(scope="module")
def root(cluster, tmp_path_factory, request):
    with module_folder(tmp_path_factory, request, "grid") as folder:
        yield write_grid_datasets(folder)


@pytest.fixture(scope="module")
def finished_grid(root):
    """The small grid, submitted once and run to its end: 1 dataset × 2 trainers × 1 fold + test set."""
    dataset = small_grid(root)
    spec, out = write_spec(root, "grid", dataset)
    started = time.monotonic()
    code, printed, err = cli("submit", str(spec))
    assert code == 0, printed + err
    wait_for_jobs(out, spec)
    print(f"grid: submit → report in {time.monotonic() - started:.0f} s")
    return spec, out, printed


def test_a_grid_runs_to_its_report_and_resubmitting_submits_nothing(root, finished_grid):
    spec, out, submitted = finished_grid
    for stage in ("preprocess/Dataset901_Blobs", "train/Dataset901_Blobs", "predict/Dataset901_Blobs", "report"):
        assert f"submitted {stage}:" in submitted
    code, printed, err = cli("status", "--json", str(spec))
    rows = json.loads(printed)
    assert code == 0, diagnose(out, spec)
    assert [(r["stage"], r["trainer"], r["status"]) for r in rows] == [
        ("preprocess", "", "done"),
        ("train", "TrainerDiceI_ep2_it2", "done"),
        ("train", "TrainerDiceIEps_ep2_it2", "done"),
        ("predict", "cross-validation", "done"),
        ("predict", "TrainerDiceI_ep2_it2", "done"),
        ("predict", "TrainerDiceIEps_ep2_it2", "done"),
        ("report", "", "done"),
    ], diagnose(out, spec)
    assert "array" in submitted and rows[1]["job_id"].endswith("_0") and rows[2]["job_id"].endswith("_1")

    report = out / "report"
    assert "TrainerDiceIEps_ep2_it2" in (report / "report.md").read_text()
    assert (report / "test_Dataset901_Blobs" / "report.md").is_file()
    for trainer in ("TrainerDiceI_ep2_it2", "TrainerDiceIEps_ep2_it2"):
        predictions = out / "predictions" / "Dataset901_Blobs" / f"{trainer}__nnUNetPlans__2d"
        assert len(list(predictions.glob("*.nii.gz"))) == 5
        assert (predictions / "summary.json").is_file()  # nnUNetv2_evaluate_folder
    assert (root / "results" / "Dataset901_Blobs" / "inference_information.json").is_file()

    code, printed, err = cli("submit", str(spec))
    assert code == 0, err
    assert "0 job(s) submitted" in printed and "(6 done)" in printed
    code, printed, _ = cli("submit", "--dry-run", str(spec))
    assert code == 0 and "#SBATCH" not in printed and "report: done" in printed


def test_an_interrupted_training_is_requeued_and_resumes_with_the_same_eps(root, finished_grid):
    import torch

    trainer = "TrainerDiceIEps_ep12_it4"  # a checkpoint every 3 epochs: 9 epochs left to interrupt
    spec, out = write_spec(
        root, "resume", f'id = 901\nconfigurations = ["2d"]\ntrainers = ["{trainer}"]\nfolds = [0]\n'
    )
    code, printed, err = cli("submit", "--stages", "train", str(spec))
    assert code == 0, printed + err
    (job,) = recorded_jobs(out).values()
    fold = root / "results" / "Dataset901_Blobs" / f"{trainer}__nnUNetPlans__2d" / "fold_0"

    wait_until(
        lambda: (fold / "checkpoint_latest.pth").is_file() and (fold / "dicephi_loss.json").is_file(),
        WAIT_S,
        "no checkpoint to resume from",
        lambda: diagnose(out, spec),
        poll_s=0.05,
    )
    # freeze the training (the runner starts it in a group of its own, workers included) where it
    # stands, so that however fast the machine it cannot finish before the signal; checkpoints are
    # renamed into place, so the one found is whole
    training = training_group(trainer)
    os.killpg(training, signal.SIGSTOP)
    assert not (fold / "checkpoint_final.pth").is_file(), "the training ended before it could be stopped"
    record = json.loads((fold / "dicephi_loss.json").read_text())
    # what SLURM does before the time limit (#SBATCH --signal=USR2@...): signal every step of the job
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    passed_on = lambda: sigterm_pending(training)  # noqa: E731 - the runner's SIGTERM, waiting in the stopped group
    wait_until(passed_on, 60, "the signal never reached the training", lambda: diagnose(out, spec), poll_s=0.05)
    os.killpg(training, signal.SIGCONT)
    wait_for_jobs(out, spec)

    log = next((out / "slurm").glob(f"*/{job}_0_log.out")).read_text()
    assert "interrupted (time limit or preemption); requeued to resume with --c" in log, log
    assert "resuming from checkpoint_latest.pth with --c" in log, log
    assert "run after 1 requeue(s)" in log, log
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
    first, second = sorted(fold.glob("training_log_*.txt"))
    epochs = [int(e) for e in re.findall(r": Epoch (\d+)\s*$", second.read_text(), re.M)]
    assert epochs[0] > 0 and epochs[-1] == 11, "the second run must continue, not start over"
    # the heuristic ε recorded by the first run is reused, in the record and in the checkpoint
    assert json.loads((fold / "dicephi_loss.json").read_text()) == record
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["dicephi"]["eps_per_class"] == record["eps_per_class"]

    code, printed, _ = cli("status", str(spec))
    assert code == 0 and re.search(rf"train .* {trainer} +0 +done", printed), printed
    code, printed, err = cli("submit", "--stages", "train", str(spec))
    assert code == 0 and "0 job(s) submitted" in printed, printed + err


def test_a_failing_job_is_reported_and_its_dependents_never_run(root, cluster):
    dataset = 'id = 902\nconfigurations = ["2d"]\ntrainers = ["TrainerDiceI_ep2_it2"]\nfolds = [0]\n'
    # the experiment folder (logs, submitit pickles, #SBATCH --output) with a hostile name as well
    spec, out = write_spec(root, "broken", dataset, output=f"broken {HOSTILE}")
    code, printed, err = cli("submit", str(spec))
    assert code == 0, printed + err
    wait_for_jobs(out, spec)

    code, printed, err = cli("status", "--json", str(spec))
    assert code == 1, printed + err
    rows = {r["stage"]: r for r in json.loads(printed)}
    assert rows["preprocess"]["status"] == "failed"
    assert "nnUNetv2_plan_and_preprocess failed with exit status" in rows["preprocess"]["detail"]
    for stage in ("train", "predict", "report"):
        assert rows[stage]["status"] == "blocked", rows[stage]  # the last row of each stage
    assert not (root / "results" / "Dataset902_Broken").exists()
    assert not list(Path.cwd().glob("pwned*")) and not list(root.rglob("pwned*"))
    code, table, _ = cli("status", str(spec))
    assert code == 1 and "1 failed, 3 blocked" in table
