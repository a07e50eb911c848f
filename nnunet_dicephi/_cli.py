"""Small helpers every ``nnunet-dicephi`` verb shares: typed arguments and the refusal message."""

from __future__ import annotations

import argparse
import inspect
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


def add_verb(
    subparsers: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int] | None, doc: str = ""
) -> argparse.ArgumentParser:
    """Add the verb ``name``, which calls ``run(args)``, with ``run``'s docstring as its help.

    The docstring's first paragraph is the verb's line in the list of verbs (without its full stop),
    the rest the description that ``--help`` prints (argparse wraps both). ``doc`` stands in for the
    docstring of a verb that only holds verbs of its own (``run`` None).
    """
    summary, _, description = inspect.cleandoc(doc or (run.__doc__ if run else "") or "").partition("\n\n")
    parser = subparsers.add_parser(
        name, help=" ".join(summary.split()).removesuffix("."), description=" ".join(description.split()) or None
    )
    if run is not None:
        parser.set_defaults(func=run)
    return parser
