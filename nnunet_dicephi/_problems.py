"""Collect every problem of an input, then raise them as one error that names each of them.

:class:`InputError` marks a problem the user can fix (a spec, a file, an option, the state of an
experiment folder): the verbs print it as a one-line refusal, while any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


class InputError(ValueError):
    """Bad input, or an input in a state that forbids the verb: the message names it and how to fix it."""


def one_message(what: str, problems: Sequence[str]) -> str:
    """``what: problem``, or ``what (N problems):`` with one problem per line."""
    if len(problems) == 1:
        return f"{what}: {problems[0]}"
    return f"{what} ({len(problems)} problems):\n  - " + "\n  - ".join(problems)


@dataclass
class Problems:
    """Problems found while checking one input; :meth:`raise_if_any` raises them together."""

    what: str
    """What the input is not, or what cannot be done, e.g. ``"cannot build the report"``."""
    error: type[Exception] = ValueError
    items: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if self.items:
            raise self.error(one_message(self.what, self.items))
