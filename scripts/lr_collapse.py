"""Why Dice-only training can collapse to empty maps at nnU-Net's learning rate, measured step by step.

    python scripts/lr_collapse.py DATASET CONFIGURATION [-tr TrainerDiceIEps TrainerDiceI] [--lr 1e-2 1e-3]
        [--iterations 300] [-o lr_collapse.csv]

Needs a planned and preprocessed nnU-Net dataset (``nnUNet_preprocessed`` set). For each trainer and
learning rate it runs nnU-Net's own network, optimiser (SGD, Nesterov momentum 0.99), poly schedule,
gradient clipping and data loader for a number of iterations, and records per iteration, on the
highest-resolution output:

* the loss;
* the mean foreground probability on labelled voxels, on the background of labelled maps and on
  empty maps, and the mean foreground-minus-background logit on labelled voxels (how saturated the
  softmax is: its gradient factor is p(1 − p));
* the gradient norm before nnU-Net's clipping to 12.

A run has collapsed when the probability on labelled voxels falls below 0.5 and stays there.
The script prints one summary line per run and writes every logged iteration to a CSV file.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys

os.environ.setdefault("nnUNet_n_proc_DA", "0")  # one process: deterministic, no worker start-up


def run(
    dataset: str, configuration: str, trainer_name: str, lr: float, iterations: int, seed: int, eps_ramp: int = 0
) -> list[dict]:
    import numpy as np
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    torch.manual_seed(seed)
    np.random.seed(seed)
    with contextlib.redirect_stdout(sys.stderr):
        trainer = get_trainer_from_args(dataset, configuration, 0, trainer_name, device=torch.device("cpu"))
        trainer.initial_lr = lr
        trainer.num_iterations_per_epoch = iterations  # the poly schedule then spans this run as one epoch
        trainer.num_epochs = 1
        trainer.initialize()
        loader, _ = trainer.get_dataloaders()
    loader = iter(loader)
    network, optimizer = trainer.network, trainer.optimizer
    network.train()
    # per-class ε buffers of every deep-supervision level, to ramp from ≈ 0 to their value
    final_eps = [
        (module, name, getattr(module, name).clone())
        for module in trainer.loss.modules()
        for name in ("eps_nr", "eps_dr")
        if isinstance(getattr(module, name, None), torch.Tensor)
    ]
    rows = []
    for step in range(iterations):
        if eps_ramp:
            for module, name, value in final_eps:
                getattr(module, name).copy_(value * min(1.0, (step + 1) / eps_ramp))
        batch = next(loader)
        data = batch["data"]
        target = batch["target"]
        optimizer.zero_grad(set_to_none=True)
        with trainer._batch_annotation(batch):
            output = network(data)
            loss = trainer.loss(output, target)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(network.parameters(), 12))
        optimizer.step()
        with torch.no_grad():
            logits = output[0] if isinstance(output, (list, tuple)) else output
            labels = (target[0] if isinstance(target, list) else target)[:, 0].long()
            rows.append(
                {
                    "trainer": trainer_name,
                    "lr": lr,
                    "eps_ramp": eps_ramp,
                    "step": step,
                    "loss": float(loss),
                    "grad_norm": grad_norm,
                    **_probe(logits, labels),
                }
            )
    return rows


def _probe(logits, labels) -> dict:
    """Foreground probability and logit margin where it matters, for the foreground channels pooled."""
    import torch

    probs = logits.float().softmax(1)
    foreground = 1 - probs[:, 0]  # all foreground channels together
    margin = logits[:, 1:].max(1).values - logits[:, 0]
    labelled = labels > 0
    empty = (~labelled).flatten(1).all(1)  # maps with no labelled voxel
    empty_voxels = empty.view(-1, *([1] * (labels.ndim - 1))).expand_as(labelled)
    background_of_labelled = ~labelled & ~empty_voxels

    def mean(x: torch.Tensor, where: torch.Tensor) -> float:
        return float(x[where].mean()) if bool(where.any()) else float("nan")

    return {
        "p_labelled": mean(foreground, labelled),
        "p_background": mean(foreground, background_of_labelled),
        "p_empty_maps": mean(foreground, empty_voxels),
        "margin_labelled": mean(margin, labelled),
    }


def summary(rows: list[dict]) -> str:
    import numpy as np

    tail = rows[-max(1, len(rows) // 10) :]
    p = np.nanmean([r["p_labelled"] for r in tail])
    verdict = "collapsed to empty maps" if p < 0.5 else "segments"
    first_low = next((r["step"] for r in rows if r["p_labelled"] < 0.05), None)
    return (
        f"{rows[0]['trainer']:<24} lr {rows[0]['lr']:<7g} ε ramp {rows[0]['eps_ramp']:<4} "
        f"last-10% mean: loss {np.mean([r['loss'] for r in tail]):.3f}, "
        f"p(labelled) {p:.3f}, p(empty maps) {np.nanmean([r['p_empty_maps'] for r in tail]):.3f}, "
        f"margin(labelled) {np.nanmean([r['margin_labelled'] for r in tail]):+.1f}; "
        f"p(labelled) < 0.05 from step {first_low}; max grad norm {max(r['grad_norm'] for r in rows):.1f} -> {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("configuration")
    parser.add_argument("-tr", "--trainers", nargs="+", default=["TrainerDiceIEps", "TrainerDiceI", "TrainerDiceBI"])
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-2, 1e-3])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eps-ramp", type=int, default=0, help="raise every per-class ε linearly over N iterations")
    parser.add_argument("-o", "--output", default="lr_collapse.csv")
    args = parser.parse_args()
    rows = []
    for trainer_name in args.trainers:
        for lr in args.lr:
            run_rows = run(
                args.dataset, args.configuration, trainer_name, lr, args.iterations, args.seed, args.eps_ramp
            )
            print(summary(run_rows), flush=True)
            rows += run_rows
    with open(args.output, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
