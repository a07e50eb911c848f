"""Trainer-side costs, as ratios printed side by side.

    python benchmarks/trainer_benchmark.py [--device cpu|cuda] [--iterations 30]
    python benchmarks/trainer_benchmark.py --device cuda --configuration 3d_fullres --compile both \\
        --shape 64 128 128 --skip-statistics

1. One training iteration (forward, loss, backward, optimiser step) of ``TrainerDiceBI`` vs nnU-Net's
   ``nnUNetTrainer``, on the same batches and initial weights, in turns (A B B A …): the median of the
   pairwise ratios with their quartiles, compile on and/or off (``nnUNet_compile``; nnU-Net compiles on
   CUDA only), and on CUDA the peak memory of one iteration.
2. The dataset-statistics pass behind the heuristic ε and the Mime constants vs one plain read of the
   fold's preprocessed segmentations.

A synthetic dataset is generated, planned and preprocessed in a temporary folder first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def prepare(root: Path, cases: int, shape: tuple[int, int, int], configuration: str, radius: float) -> dict:
    from nnunet_dicephi.synthetic import write_dataset

    env = dict(
        os.environ,
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(root / "results"),
    )
    write_dataset(root / "raw", 950, "Bench", cases=cases, shape=shape, blob_radius=radius)
    bindir = Path(sys.executable).parent
    subprocess.run(
        [str(bindir / "nnUNetv2_plan_and_preprocess"), "-d", "950", "-c", configuration, "-np", "2"],
        env=env,
        check=True,
        capture_output=True,
    )
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    return env


def make_trainer(name: str, configuration: str, device: str):
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args("950", configuration, 0, name, "nnUNetPlans", device=torch.device(device))
    trainer.initialize()
    return trainer


def iteration_ratio(configuration: str, device: str, iterations: int, compile_on: bool) -> None:
    import contextlib

    import torch

    from nnunet_dicephi.benchmarking import cuda_peak_bytes, paired_timing

    os.environ["nnUNet_compile"] = "true" if compile_on else "false"  # read by _do_i_compile in initialize
    with contextlib.redirect_stdout(sys.stderr):
        ours = make_trainer("TrainerDiceBI", configuration, device)
        reference = make_trainer("nnUNetTrainer", configuration, device)
        reference.network.load_state_dict(ours.network.state_dict())
        loader, _ = ours.get_dataloaders()
        batches = [next(loader) for _ in range(8)]
    cuda = device == "cuda"
    peaks = {}
    for key, trainer in (("ours", ours), ("reference", reference)):
        trainer.network.train()
        with contextlib.redirect_stdout(sys.stderr):
            for batch in batches[:3]:  # warm-up; compiles network and loss when compile is on
                trainer.train_step(batch)
        if cuda:
            peaks[key] = cuda_peak_bytes(lambda trainer=trainer: trainer.train_step(batches[0]))
    turn = iter(range(10**9))

    def step(trainer):
        return lambda: trainer.train_step(batches[next(turn) % len(batches)])

    timing = paired_timing(step(ours), step(reference), iterations, torch.cuda.synchronize if cuda else lambda: None)
    shape = "×".join(map(str, batches[0]["data"].shape))
    a, b = sorted(timing.a)[iterations // 2], sorted(timing.b)[iterations // 2]
    memory = f"{peaks['ours'] / peaks['reference']:.2f}× peak memory" if cuda else "memory not measured on CPU"
    print(
        f"| one training iteration, {configuration}, batch {shape}, {device}, compile {'on' if compile_on else 'off'} "
        f"| TrainerDiceBI {a * 1e3:.1f} ms | nnUNetTrainer {b * 1e3:.1f} ms | {timing.describe()}; {memory} |"
    )


def statistics_ratio(configuration: str, repeats: int = 9) -> None:
    import contextlib

    import numpy as np

    from nnunet_dicephi import statistics as stats

    with contextlib.redirect_stdout(sys.stderr):
        trainer = make_trainer("TrainerDiceIEps", configuration, "cpu")
        train_keys, _ = trainer.do_split()
    dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, train_keys)
    model = trainer._sampling_model()

    def plain_read():
        # one case held at a time, as in the pass: holding all of them made the read about twice as
        # slow (fresh memory for every case, page faults) and flattered the ratio
        voxels = 0
        for key in dataset.identifiers:
            voxels += np.asarray(dataset.load_case(key)[1][:]).size
        return voxels

    def full_pass():
        def cases():
            for key in dataset.identifiers:
                _, seg, _, properties = dataset.load_case(key)
                yield seg, properties.get("class_locations")

        return stats.compute_statistics(cases(), trainer.label_manager, model)

    read_t, pass_t = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        voxels = plain_read()
        read_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        full_pass()
        pass_t.append(time.perf_counter() - start)
    a, b = statistics.median(pass_t), statistics.median(read_t)
    cases = len(dataset.identifiers)
    print(
        f"| statistics pass vs plain read, {cases} cases, {voxels / 1e6:.1f} M voxels | pass {a * 1e3:.0f} ms | "
        f"read {b * 1e3:.0f} ms | {a / b:.2f}× |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=30, help="pairs of iterations timed")
    parser.add_argument("--shape", type=int, nargs=3, default=(24, 96, 96), help="case size (z y x)")
    parser.add_argument("--radius", type=float, default=8, help="lesion radius in voxels")
    parser.add_argument("--skip-iteration", action="store_true", help="only the statistics measurement")
    parser.add_argument("--skip-statistics", action="store_true", help="only the iteration measurement")
    parser.add_argument("--configuration", default="2d", help="nnU-Net configuration (2d, 3d_fullres)")
    parser.add_argument(
        "--compile", choices=("off", "on", "both"), default="off", help="nnUNet_compile for the iteration"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # lesion-like foreground: two spheres per case (radius 8 in 24×96×96: about 2 % of the voxels)
        prepare(root, cases=10, shape=tuple(args.shape), configuration=args.configuration, radius=args.radius)
        print("| measurement | this project | reference | ratio (quartiles of the pairs) |\n|---|---|---|---|")
        if not args.skip_iteration:
            for compile_on in {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]:
                iteration_ratio(args.configuration, args.device, args.iterations, compile_on)
        if not args.skip_statistics:
            statistics_ratio(args.configuration)


if __name__ == "__main__":
    main()
