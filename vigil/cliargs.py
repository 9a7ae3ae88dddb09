"""Small `argparse` helpers shared by the entry points of `vigil.evaluation` and `vigil.benchmarks`."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse's own test: a value, not an option


class ListChoices(tuple[str, ...]):
    """`choices=` for a positional with ``nargs="*"``: the names, plus the empty list.

    Python 3.11's argparse checks an absent ``nargs="*"`` positional's default (``[]``) against `choices`
    and fails with "invalid choice: []"; this container also "contains" the empty list, while usage and
    error messages (which iterate it) show only the names.
    """

    def __contains__(self, item: object) -> bool:
        return item == [] or super().__contains__(item)


def summary(doc: str | None) -> str:
    """A module docstring's first sentence on one line (its first line when that ends the sentence)."""
    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    m = re.search(r"[.?!](?=\s)", para)
    return para[: m.end()] if m else para


def parse(p: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``p.parse_intermixed_args(argv)`` (positionals may come before, between or after options), but an
    unknown option is reported by its name first: argparse would otherwise take the value after it for a
    positional and report only that (``eval_rhythm --lead 1``: "invalid choice: '1'")."""
    known = p._option_string_actions  # every option string of `p`, with -h/--help
    for arg in argv:
        if arg == "--":
            break
        option = arg.startswith("-") and arg != "-" and not _NEGATIVE_NUMBER.match(arg)
        if option and arg.split("=", 1)[0] not in known:
            p.error(f"unrecognized arguments: {arg}")
    return p.parse_intermixed_args(list(argv))
