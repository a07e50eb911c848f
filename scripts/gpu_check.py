"""The GPU check: device tests, benchmarks and a short real nnU-Net run on CUDA, then one table.

    bash scripts/gpu_check.sh            # installs the project into .venv-gpu first, then runs this
    python scripts/gpu_check.py          # in an environment that already has the project and its test extras

Steps, each with its own time limit and all within 470 s, so the check ends within 8 minutes on one
GPU (a step that no longer fits is reported as not run):

1. the device-parametrised tests on CUDA (compile, synchronisation, fp16 with GradScaler and bf16);
2. a tiny 3-D toy dataset through the stock command line: ``nnUNetv2_plan_and_preprocess``,
   ``nnUNetv2_train … 3d_fullres 0 -tr TrainerDiceIEps_CE_ep3_it20`` with ``nnUNet_compile=true``,
   ``nnUNetv2_predict``, and the validation Dice;
3. the loss benchmark's CUDA rows at 2×4×128³ (this project vs nnU-Net, eager and compiled);
4. one ``3d_fullres`` training iteration of ``TrainerDiceBI`` vs ``nnUNetTrainer``, compile off and on.

A failing step does not stop the others; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAINER = "TrainerDiceIEps_CE_ep3_it20"


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    result: str


BUDGET_S = 470  # the whole check, so it ends within 8 minutes
DEADLINE = time.monotonic() + BUDGET_S


def run(name: str, args: list[str], limit: int, env: dict | None = None, log: Path | None = None) -> tuple[bool, str]:
    """Run ``args`` for at most ``limit`` s and never past the check's deadline; return (ok, output).

    The output also goes to ``log``.
    """
    limit = int(min(limit, DEADLINE - time.monotonic()))
    if limit <= 5:
        return False, f"{name}: not run, the check's {BUDGET_S} s were used up"
    try:
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit, check=False)
        output, ok = done.stdout + done.stderr, done.returncode == 0
    except subprocess.TimeoutExpired as stopped:
        output = (stopped.stdout or b"").decode() if isinstance(stopped.stdout, bytes) else (stopped.stdout or "")
        output, ok = output + f"\n{name}: stopped after {limit} s", False
    if log is not None:
        log.write_text(output, encoding="utf-8")
    return ok, output


def last_lines(text: str, count: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:])


def device_tests(logs: Path) -> Step:
    start = time.perf_counter()
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-k", "cuda"]
    args += ["tests/unit/test_compile.py", "tests/unit/test_empty_and_precision.py"]
    ok, out = run("device tests", args, 150, log=logs / "device_tests.log")
    return Step("device tests on CUDA", ok, time.perf_counter() - start, last_lines(out, 1))


def loss_benchmark(logs: Path) -> Step:
    start = time.perf_counter()
    args = [sys.executable, "benchmarks/loss_benchmark.py", "--device", "cuda", "--pairs", "11"]
    ok, out = run("loss benchmark", args, 150, log=logs / "loss_benchmark.log")
    rows = [line for line in out.splitlines() if line.startswith("| ") and "×" in line]
    misses = [row.split("|")[1].strip() for row in rows if "over " in row]
    result = f"{len(rows)} rows; targets missed: {', '.join(misses) or 'none'} (see the table above)"
    print(out)
    return Step("loss benchmark, 2×4×128³", ok, time.perf_counter() - start, result)


def trainer_benchmark(logs: Path) -> Step:
    start = time.perf_counter()
    args = [sys.executable, "benchmarks/trainer_benchmark.py", "--device", "cuda", "--configuration", "3d_fullres"]
    args += ["--compile", "both", "--iterations", "10", "--shape", "64", "128", "128", "--skip-statistics"]
    ok, out = run("trainer benchmark", args, 150, log=logs / "trainer_benchmark.log")
    rows = [line.split("|")[-2].strip() for line in out.splitlines() if line.startswith("| one training")]
    print(out)
    result = "; ".join(rows) or last_lines(out)
    return Step("3d_fullres iteration vs nnUNetTrainer", ok, time.perf_counter() - start, result)


def real_run(logs: Path) -> Step:
    """Plan, preprocess, train with compile on and predict a tiny 3-D toy dataset through the CLI."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = dict(
            os.environ,
            nnUNet_raw=str(root / "raw"),
            nnUNet_preprocessed=str(root / "preprocessed"),
            nnUNet_results=str(root / "results"),
            nnUNet_compile="true",
            nnUNet_def_n_proc="4",
        )
        write = (
            "from nnunet_dicephi.synthetic import write_dataset; "
            f"write_dataset({str(root / 'raw')!r}, 951, 'GpuCheck', cases=8, shape=(32, 64, 64), blob_radius=6)"
        )
        bindir = Path(sys.executable).parent
        commands = [
            ("toy data", [sys.executable, "-c", write], 60),
            ("plan", [str(bindir / "nnUNetv2_plan_and_preprocess"), "-d", "951", "-c", "3d_fullres", "-np", "4"], 120),
            ("train", [str(bindir / "nnUNetv2_train"), "951", "3d_fullres", "0", "-tr", TRAINER], 180),
        ]
        raw = root / "raw" / "Dataset951_GpuCheck"
        predictions = root / "predictions"
        commands.append(
            (
                "predict",
                [
                    str(bindir / "nnUNetv2_predict"),
                    *("-i", str(raw / "imagesTr"), "-o", str(predictions), "-d", "951", "-c", "3d_fullres"),
                    *("-f", "0", "-tr", TRAINER, "-chk", "checkpoint_final.pth", "--disable_tta"),
                ],
                120,
            )
        )
        for name, args, limit in commands:
            ok, out = run(name, args, limit, env=env, log=logs / f"real_run_{name.replace(' ', '_')}.log")
            if not ok:
                failed = f"{name}: {last_lines(out)}"
                return Step("real run through the CLI", False, time.perf_counter() - start, failed)
        fold = root / "results" / "Dataset951_GpuCheck" / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_0"
        log_text = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
        compiled = "Using torch.compile" in log_text
        summary = json.loads((fold / "validation" / "summary.json").read_text())
        dice = summary["foreground_mean"]["Dice"]
        cases = len(list(predictions.glob("*.nii.gz")))
    ok = compiled and cases == 8
    result = f"compile {'on' if compiled else 'OFF'}; validation Dice {dice:.2f} after 3 epochs; {cases} of 8 predicted"
    return Step("real run through the CLI (compile on)", ok, time.perf_counter() - start, result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=Path, default=ROOT / "gpu_check_logs", help="folder for each step's log")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; this check needs one GPU", file=sys.stderr)
        return 2
    args.logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # most telling first: what does not fit in the budget is reported as not run
    steps = [device_tests(args.logs), real_run(args.logs), loss_benchmark(args.logs), trainer_benchmark(args.logs)]
    gpu = torch.cuda.get_device_name(0)
    print(f"\n## GPU check: {gpu}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s in all\n")
    print("| step | result | s | |\n|---|---|---|---|")
    for step in steps:
        print(f"| {step.name} | {step.result} | {step.seconds:.0f} | {'ok' if step.ok else 'FAILED'} |")
    return 0 if all(step.ok for step in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
