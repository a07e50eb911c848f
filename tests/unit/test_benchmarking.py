"""The paired timing behind the benchmarks, and the GPU check's refusal without a GPU."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnunet_dicephi.benchmarking import PairedTiming, paired_timing


def test_sides_alternate_and_ratios_are_per_pair():
    calls = []
    timing = paired_timing(lambda: calls.append("a"), lambda: calls.append("b"), repeats=4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(timing.a) == len(timing.b) == 4


def test_median_and_quartiles_of_the_pairwise_ratios():
    timing = PairedTiming(a=[2.0, 3.0, 10.0, 1.0, 4.0], b=[1.0, 1.0, 1.0, 1.0, 1.0])
    assert timing.ratios == [2.0, 3.0, 10.0, 1.0, 4.0]
    assert timing.ratio == 3.0
    assert timing.spread() == (2.0, 4.0)
    assert timing.describe() == "3.00× (2.00–4.00)"
    assert PairedTiming([2.0], [4.0]).spread() == (0.5, 0.5)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        paired_timing(lambda: None, lambda: None, 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
def test_the_gpu_check_says_it_needs_a_gpu(tmp_path):
    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
    done = subprocess.run(
        [sys.executable, str(script), "--logs", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr
