"""Train the demo's three trainers over several training seeds and print one table.

    python scripts/demo_seeds.py -o demo_seeds --seeds 0-7

The toy data, planning and preprocessing are the demo's (data seed ``--seed``) and are done once;
each training seed then trains, predicts and evaluates ``TrainerDiceI``, ``TrainerDiceBI`` and
``TrainerDiceIEps`` exactly as ``nnunet-dicephi demo --train-seed N`` does. The table shows the test
DSC per lesion type, the epoch from which the validation DSC of the unlabelled type stays at most
0.1, whether each behaviour held, and, for a miss, what the validation trend shows.
Pass ``--epochs`` to see what a shorter or longer training does. Not a test: eight seeds take about
40 minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from nnunet_dicephi import demo
from nnunet_dicephi._files import write_text_atomically


def seeds(text: str) -> list[int]:
    if "-" in text:
        first, last = (int(part) for part in text.split("-", 1))
        return list(range(first, last + 1))
    return [int(part) for part in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("demo_seeds"))
    parser.add_argument("--seeds", type=seeds, default=list(range(8)), help="e.g. 0-7 or 0,3,5 (default: 0-7)")
    parser.add_argument("--seed", type=int, default=0, help="data seed of the toy dataset (default: 0)")
    parser.add_argument("--epochs", type=int, help="override the demo's number of epochs")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    size = demo.DemoSize() if args.epochs is None else dataclasses.replace(demo.DemoSize(), epochs=args.epochs)
    out = args.output.resolve()
    runner = demo.Runner(out, args.device or demo.default_device())
    raw_dir = demo.prepare(runner, size, args.seed)
    rows, started = [], time.perf_counter()
    print(
        "| training seed | trainer | DSC A | DSC B | B left out from epoch | as expected | minutes |\n"
        "|---|---|---|---|---|---|---|",
        flush=True,
    )
    for train_seed in args.seeds:
        for expectation in demo.EXPECTATIONS:
            begun = time.perf_counter()
            run = demo.train_and_evaluate(runner, expectation, size, raw_dir, train_seed, tag=f"_seed{train_seed}")
            verdict = "yes" if run.holds else run.explanation
            minutes = (time.perf_counter() - begun) / 60
            since = demo.left_out_since(run.trend)
            print(
                f"| {train_seed} | {expectation.trainer} | {run.scores['A']['dsc']:.2f} | {run.scores['B']['dsc']:.2f} "
                f"| {'–' if since is None else since + 1} | {verdict} | {minutes:.1f} |",
                flush=True,
            )
            row = {"train_seed": train_seed, "trainer": expectation.trainer, "holds": run.holds}
            rows.append({**row, **run.scores, "trend": run.trend})
    held = sum(row["holds"] for row in rows)
    print(f"\n{held} of {len(rows)} as expected; {(time.perf_counter() - started) / 60:.1f} min of training")
    print("\n" + per_seed_table(rows))
    write_text_atomically(out / "seeds.json", json.dumps(rows, indent=2))
    return 0 if held == len(rows) else 1


def per_seed_table(rows: list[dict]) -> str:
    """One line per training seed, in README.md's shape.

    Test DSC A / B per trainer and, for the two trainers that must leave B out, the epoch from which
    the validation images have it left out.
    """
    lines = [
        "| training seed | Φ=I | Φ=BI | from epoch | I_ε | from epoch | all as expected |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed in dict.fromkeys(row["train_seed"] for row in rows):
        runs = {row["trainer"]: row for row in rows if row["train_seed"] == seed}
        cells = []
        for trainer in ("TrainerDiceI", "TrainerDiceBI", "TrainerDiceIEps"):
            run = runs[trainer]
            cells.append(f"{run['A']['dsc']:.2f} / {run['B']['dsc']:.2f}")
            if trainer != "TrainerDiceI":
                since = demo.left_out_since(run["trend"])
                cells.append("–" if since is None else str(since + 1))
        verdict = "yes" if all(run["holds"] for run in runs.values()) else "no"
        lines.append(f"| {seed} | {' | '.join(cells)} | {verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
