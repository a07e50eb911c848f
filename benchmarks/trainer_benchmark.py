"""Trainer-side costs, as ratios printed side by side.

    python benchmarks/trainer_benchmark.py [--device cpu|cuda] [--iterations 30]

1. One training iteration (forward, loss, backward, optimiser step) of ``TrainerDiceBI`` vs nnU-Net's
   ``nnUNetTrainer``, on the same batches, same device, alternating the two to share any drift.
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


def iteration_ratio(configuration: str, device: str, iterations: int) -> None:
    import contextlib

    import numpy as np
    import torch

    with contextlib.redirect_stdout(sys.stderr):
        ours = make_trainer("TrainerDiceBI", configuration, device)
        reference = make_trainer("nnUNetTrainer", configuration, device)
        reference.network.load_state_dict(ours.network.state_dict())
        loader, _ = ours.get_dataloaders()
        batches = [next(loader) for _ in range(8)]
    for trainer in (ours, reference):
        trainer.network.train()
        trainer.train_step(batches[0])  # warm-up
    times = {"ours": [], "reference": []}
    for i in range(iterations):
        batch = batches[i % len(batches)]
        for key, trainer in (("ours", ours), ("reference", reference))[:: 1 if i % 2 else -1]:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            trainer.train_step(batch)
            if device == "cuda":
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
    a, b = statistics.median(times["ours"]), statistics.median(times["reference"])
    shape = "×".join(map(str, batches[0]["data"].shape))
    print(
        f"| one training iteration, {configuration}, batch {shape}, {device} | TrainerDiceBI {a * 1e3:.1f} ms | "
        f"nnUNetTrainer {b * 1e3:.1f} ms | {a / b:.3f}× |"
    )
    del np


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
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--shape", type=int, nargs=3, default=(24, 96, 96), help="case size (z y x)")
    parser.add_argument("--radius", type=float, default=8, help="lesion radius in voxels")
    parser.add_argument("--skip-iteration", action="store_true", help="only the statistics measurement")
    parser.add_argument("--configuration", default="2d", help="nnU-Net configuration of the statistics measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # lesion-like foreground: two spheres per case (radius 8 in 24×96×96: about 2 % of the voxels)
        prepare(root, cases=10, shape=tuple(args.shape), configuration=args.configuration, radius=args.radius)
        print("| measurement | this project | reference | ratio |\n|---|---|---|---|")
        if not args.skip_iteration:
            if args.configuration != "2d":
                parser.error("the iteration measurement uses the 2d configuration; add --skip-iteration")
            iteration_ratio("2d", args.device, args.iterations)
        statistics_ratio(args.configuration)


if __name__ == "__main__":
    main()
