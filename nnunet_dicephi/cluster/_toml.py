"""Reading TOML tables key by key, collecting every problem with its key path instead of stopping."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TableReader:
    """Collects problems while reading one TOML table after another; relative paths against ``base``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def table(self, data: Any, path: str, allowed: tuple[str, ...]) -> dict:
        """``data`` as a table whose unknown keys are reported (with the closest known key)."""
        if not isinstance(data, dict):
            self.add(path, f"expected a table, got {_kind(data)}")
            return {}
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(allowed)}"
                self.add(_join(path, key), f"unknown key{hint}")
        return data

    def check(self, value: Any, path: str, pattern=None, what: str = "") -> str | None:
        """``value`` if it is an acceptable string, else None (and the problem is filed)."""
        if not isinstance(value, str):
            self.add(path, f"expected a string, got {_kind(value)}")
        elif _CONTROL.search(value):
            self.add(path, "must not contain control characters (newline, tab, NUL, ...)")
        elif pattern is not None and not pattern.fullmatch(value):
            self.add(path, f"{value!r} is not {what or 'valid'}")
        else:
            return value
        return None

    def present(self, table: dict, path: str, key: str, required: bool) -> bool:
        """Whether ``key`` is in ``table``; a missing required key is filed."""
        if key in table:
            return True
        if required:
            self.add(_join(path, key), "missing (required)")
        return False

    def string(self, table: dict, path: str, key: str, *, required: bool = False, pattern=None, what: str = ""):
        if not self.present(table, path, key, required):
            return None
        return self.check(table[key], _join(path, key), pattern, what)

    def path(self, table: dict, path: str, key: str, *, required: bool = False, default: str | None = None):
        value = self.string(table, path, key, required=required)
        if value is None:
            value = default
        if value is None:
            return None
        if value == "":
            self.add(_join(path, key), "must not be empty")
            return None
        return (self.base / os.path.expanduser(value)).resolve()

    def integer(self, table: dict, path: str, key: str, default, *, low: int | None = None, high: int | None = None):
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(_join(path, key), f"expected an integer, got {_kind(value)}")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            self.add(_join(path, key), f"must be {bounds}; got {value}")
            return default
        return value

    def boolean(self, table: dict, path: str, key: str, default: bool) -> bool:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, bool):
            self.add(_join(path, key), f"expected true or false, got {_kind(value)}")
            return default
        return value

    def strings(self, table: dict, path: str, key: str, *, required: bool = False, pattern=None, what: str = ""):
        """A list of distinct strings (a single string is accepted as a list of one)."""
        if not self.present(table, path, key, required):
            return ()
        value = table[key]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.add(_join(path, key), f"expected a list of strings, got {_kind(value)}")
            return ()
        out = []
        for i, item in enumerate(value):
            item_path = f"{_join(path, key)}[{i}]"
            checked = self.check(item, item_path, pattern, what)
            if checked is None:
                continue
            if checked in out:
                self.add(item_path, f"{checked!r} is listed twice")
                continue
            out.append(checked)
        if required and not value:
            self.add(_join(path, key), "must not be empty")
        return tuple(out)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
