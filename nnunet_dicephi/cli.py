"""``nnunet-dicephi <verb>``: the project's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _info(_: argparse.Namespace) -> int:
    from importlib.metadata import version

    import nnunet_dicephi
    from nnunet_dicephi import losses

    print(f"nnunet-dicephi {nnunet_dicephi.__version__}")
    for package in ("torch", "nnunetv2"):
        try:
            print(f"{package} {version(package)}")
        except Exception:  # noqa: BLE001 - report, don't crash, on a broken install
            print(f"{package} not installed")
    print("losses: " + ", ".join(name for name in losses.__all__ if name[0].isupper() and name != "MapSums"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-dicephi",
        description="Dice loss reduction sets (Phi) and smoothing (epsilon) for nnU-Net v2.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    info = verbs.add_parser("info", help="print versions and the available losses")
    info.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
