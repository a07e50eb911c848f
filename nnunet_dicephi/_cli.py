"""Small helpers every ``nnunet-dicephi`` verb shares: typed arguments and the refusal message."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= low``, with a message naming the bound and the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}; got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in its own messages
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def refuse(verb: str, error: object) -> int:
    """Print ``nnunet-dicephi VERB: error: …`` on stderr and return exit status 2 (bad input)."""
    print(f"nnunet-dicephi {verb}: error: {error}", file=sys.stderr)
    return 2
