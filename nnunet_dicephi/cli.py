"""``nnunet-dicephi <verb>``: the project's command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from nnunet_dicephi._cli import add_verb, non_negative_int


def _stats(args: argparse.Namespace) -> int:
    """Heuristic epsilon and Mime constants of a dataset fold, as the trainers compute them.

    Expected labelled voxels per class in one training patch (nnU-Net's patch sampling, foreground
    oversampling included) over the fold's training cases, per deep-supervision output, and the Mime
    constants. Needs nnUNet_preprocessed; results are cached beside the preprocessed data.
    """
    import json

    import numpy as np

    from nnunet_dicephi.trainers.reading import reading_trainer

    with reading_trainer(args.dataset, args.configuration, args.fold, args.trainer, args.plans) as trainer:
        stats = trainer.dataset_statistics()
    a, b = stats.mime_constants()
    scales = trainer._level_scales()
    report = {
        "channels": list(stats.channels),
        "training_cases": stats.cases,
        # per class, the training cases whose map of it the loss sees (all of them without a manifest)
        "annotated_cases": list(stats.annotated_cases or [stats.cases] * len(stats.channels)),
        "patch_voxels": stats.patch_voxels,
        "heuristic_eps": [round(v, 3) for v in stats.expected_volume],
        "heuristic_eps_per_level": [[round(v * s, 3) for v in stats.expected_volume] for s in scales],
        "mime_a": np.round(a, 10).tolist(),
        "mime_b": np.round(b, 10).tolist(),
    }
    print(json.dumps(report, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Train Phi=I, Phi=BI and Phi=I with heuristic epsilon on a toy dataset with missing labels.

    Generates a partially labelled toy dataset, runs nnU-Net planning, preprocessing, training
    (TrainerDiceI, TrainerDiceBI, TrainerDiceIEps), prediction and evaluation, prints a table like
    Table 1 of the MICCAI 2022 paper and writes a report with figures. Exit status 1 when a behaviour
    is not reproduced.
    """
    from nnunet_dicephi import demo

    size = demo.SMOKE if args.smoke else demo.DemoSize()
    runs, _, _ = demo.run_demo(args.output, size, seed=args.seed, device=args.device, train_seed=args.train_seed)
    return 0 if args.smoke or all(run.holds for run in runs.values()) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-dicephi",
        description="Dice loss reduction sets (Phi) and smoothing (epsilon) for nnU-Net v2.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    demo = add_verb(verbs, "demo", _demo)
    demo.add_argument("-o", "--output", default="dicephi_demo", help="output folder (default: ./dicephi_demo)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the toy dataset (default: 0)")
    demo.add_argument(
        "--train-seed",
        type=non_negative_int,
        default=0,
        help="seed of the training: weights, patches, augmentation (default: 0; the trainers' seed<N> option)",
    )
    demo.add_argument("--device", choices=("cpu", "cuda", "mps"), help="default: cuda when available, else cpu")
    demo.add_argument("--smoke", action="store_true", help="a tiny run that checks the pipeline, not the behaviours")
    stats = add_verb(verbs, "stats", _stats)
    stats.add_argument("dataset", help="dataset id or name, e.g. 901 or Dataset901_Blobs")
    stats.add_argument("configuration", help="nnU-Net configuration, e.g. 2d or 3d_fullres")
    stats.add_argument("fold", help="fold number or 'all'")
    stats.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    stats.add_argument("-tr", "--trainer", default="TrainerDiceIEps", help="trainer whose sampling to model")
    from nnunet_dicephi import cluster, conversion, doctor, merge, registration, toys
    from nnunet_dicephi.analysis import advise, gradients, report

    for module in (report, gradients, advise, conversion, cluster, toys, merge, doctor, registration):
        module.add_parser(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; returns its exit status (141 when the reader of stdout went away, as after ``| head``)."""
    try:
        try:
            args = build_parser().parse_args(argv)
            return args.func(args)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not as an "Exception ignored" at exit
    except BrokenPipeError:
        # The Python docs' recipe (signal module, "Note on SIGPIPE"): nothing more reaches the reader,
        # so point stdout at devnull for the interpreter's last flush and stop quietly, with the
        # status of a command killed by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13


if __name__ == "__main__":
    sys.exit(main())
