"""Variants of nnU-Net plans that keep the preprocessed data: another batch size, a narrower network.

``<plans>_bs<B>`` is a copy of the plans with batch size B in every configuration and the same
``data_identifier`` (nothing is preprocessed again; in nnU-Net the batch size belongs to the plans);
``<plans>_f<F>`` scales the network's widths so that the first stage has F features; ``<plans>_f<F>_bs<B>``
does both. The name says what a variant changes (:func:`parse_variant`), so the grid's command after
preprocessing needs only the names (:func:`variants_command`, run through :mod:`.write_variants`).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from nnunet_dicephi._files import write_text_atomically

from .lock import read_json


class Variant(NamedTuple):
    """What a plans variant changes: the first stage's features, the batch size (None: unchanged)."""

    base_features: int | None
    batch_size: int | None


def variant_name(plans: str, *, base_features: int | None = None, batch_size: int | None = None) -> str:
    """``<plans>[_f<F>][_bs<B>]``."""
    return plans + (f"_f{base_features}" if base_features else "") + (f"_bs{batch_size}" if batch_size else "")


def parse_variant(plans: str, name: str) -> Variant | None:
    """The changes the variant ``name`` of ``plans`` makes; None for ``plans`` itself or another name."""
    match = re.fullmatch(re.escape(plans) + r"(?:_f([1-9]\d*))?(?:_bs([1-9]\d*))?", name)
    if match is None or name == plans:
        return None
    return Variant(*(int(group) if group else None for group in match.groups()))


def write_variants(folder: str | Path, plans: str, names: Sequence[str]) -> list[Path]:
    """Write ``<folder>/<name>.json`` (the dataset's folder in nnUNet_preprocessed) for each variant of ``plans``."""
    folder = Path(folder)
    source = folder / f"{plans}.json"
    base = read_json(
        source, lambda e: ValueError(f"cannot read the plans {source} to vary ({e}); preprocess the dataset first")
    )
    written = []
    for name in names:
        variant = parse_variant(plans, name)
        if variant is None:
            raise ValueError(
                f"{name!r} is not a variant of {plans!r} (<plans>_f<F>, <plans>_bs<B> or <plans>_f<F>_bs<B>)"
            )
        plans_json = copy.deepcopy(base)
        plans_json["plans_name"] = name
        for configuration in plans_json.get("configurations", {}).values():
            if variant.batch_size and ("batch_size" in configuration or "inherits_from" not in configuration):
                configuration["batch_size"] = variant.batch_size
            features = configuration.get("architecture", {}).get("arch_kwargs", {}).get("features_per_stage")
            if variant.base_features and features:
                scale = variant.base_features / features[0]
                configuration["architecture"]["arch_kwargs"]["features_per_stage"] = [
                    max(1, round(f * scale)) for f in features
                ]
        path = folder / f"{name}.json"
        write_text_atomically(path, json.dumps(plans_json, indent=4) + "\n")
        written.append(path)
    return written


def variants_command(preprocessed_folder: Path, plans: str, names: Sequence[str]) -> tuple[str, ...]:
    """The argv that writes the variants ``names`` (run by a preprocessing job of the grid)."""
    module = "nnunet_dicephi.cluster.write_variants"
    return ("python", "-m", module, str(preprocessed_folder), "--plans", plans, *names)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nnunet_dicephi.cluster.write_variants FOLDER --plans PLANS NAME…``."""
    parser = argparse.ArgumentParser(prog="python -m nnunet_dicephi.cluster.write_variants", description=__doc__)
    parser.add_argument("folder", help="the dataset's folder in nnUNet_preprocessed")
    parser.add_argument("--plans", default="nnUNetPlans", help="plans identifier to copy (default: nnUNetPlans)")
    parser.add_argument("variants", nargs="+", metavar="NAME", help="variant names, e.g. nnUNetPlans_f16_bs4")
    args = parser.parse_args(argv)
    try:
        for path in write_variants(args.folder, args.plans, args.variants):
            print(f"wrote {path}")
    except ValueError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # the command of grids planned before write_variants existed
    sys.exit(main())
