"""Batch-size variants of nnU-Net plans: ``<plans>_bs<B>.json``, the same network and preprocessed data.

In nnU-Net the batch size is a setting of the plans, not of the trainer. A sweep over B (the
reduction set Φ = BI spans the batch) therefore trains with ``-p nnUNetPlans_bs<B>``: a copy of
the plans whose configurations all have batch size B and whose ``data_identifier`` is unchanged,
so nothing is preprocessed again, and each B gets its own results folder
``<Trainer>__nnUNetPlans_bs<B>__<configuration>``.

``python -m nnunet_dicephi.cluster.variants FOLDER --plans nnUNetPlans --variant nnUNetPlans_bs4=4``
is the command the experiment grid runs after preprocessing.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from nnunet_dicephi._files import write_text_atomically


def write_batch_size_variants(folder: str | Path, plans: str, variants: Mapping[str, int]) -> list[Path]:
    """Write ``folder/<name>.json`` for every ``name → batch size`` of ``variants``; returns the files.

    ``folder`` is the dataset's folder in ``nnUNet_preprocessed``; ``plans`` the identifier copied.
    """
    folder = Path(folder)
    source = folder / f"{plans}.json"
    try:
        base = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the plans {source} to vary ({error}); preprocess the dataset first") from None
    written = []
    for name, batch_size in variants.items():
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1; got {batch_size} for {name}")
        variant = copy.deepcopy(base)
        variant["plans_name"] = name
        for configuration in variant.get("configurations", {}).values():
            if "batch_size" in configuration or "inherits_from" not in configuration:
                configuration["batch_size"] = int(batch_size)
        path = folder / f"{name}.json"
        write_text_atomically(path, json.dumps(variant, indent=4) + "\n")
        written.append(path)
    return written


def variants_command(preprocessed_folder: Path, plans: str, variants: Mapping[str, int]) -> tuple[str, ...]:
    """The argv that writes ``variants`` (run by a preprocessing job of the grid)."""
    pairs = [f"{name}={batch}" for name, batch in variants.items()]
    return ("python", "-m", "nnunet_dicephi.cluster.variants", str(preprocessed_folder), "--plans", plans, *pairs)


def _pair(text: str) -> tuple[str, int]:
    name, _, batch = text.partition("=")
    if not name or not batch.isdigit() or int(batch) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=BATCH_SIZE such as nnUNetPlans_bs4=4; got {text!r}")
    return name, int(batch)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnunet_dicephi.cluster.variants", description=__doc__)
    parser.add_argument("folder", help="the dataset's folder in nnUNet_preprocessed")
    parser.add_argument("--plans", default="nnUNetPlans", help="plans identifier to copy (default: nnUNetPlans)")
    parser.add_argument("variants", nargs="+", type=_pair, metavar="NAME=B", help="variant name and batch size")
    args = parser.parse_args(argv)
    try:
        for path in write_batch_size_variants(args.folder, args.plans, dict(args.variants)):
            print(f"wrote {path}")
    except ValueError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
