"""Small `argparse` helpers shared by the entry points of `vigil.evaluation` and `vigil.benchmarks`."""

from __future__ import annotations

import argparse
import pkgutil
import re
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

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


def run_sections(package: ModuleType, prefix: str, doc: str | None, argv: Sequence[str],
                 import_module: Callable[[str], Any]) -> int:
    """The `python -m vigil.evaluation` / `vigil.benchmarks` runner: every ``<prefix>*`` module of `package`
    (each with ``main(argv) -> int``), or those named in `argv`, in module order with their defaults."""
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith(prefix))
    short = [n.removeprefix(prefix) for n in names]
    example = short[-1] if short else "x"
    p = argparse.ArgumentParser(prog=f"python -m {package.__name__}", description=summary(doc), allow_abbrev=False)
    p.add_argument("sections", nargs="*", choices=ListChoices(short), type=lambda s: s.removeprefix(prefix),
                   help="sections to run, each with its defaults, in this order (default: all): "
                        f"{', '.join(short)}; the {prefix} prefix is optional ({example} = {prefix}{example}); "
                        f"a section's own options: python -m {package.__name__}.{prefix}SECTION --help")
    chosen = set(parse(p, argv).sections)
    if chosen:
        names = [n for n in names if n.removeprefix(prefix) in chosen]
    status = 0
    for name in names:
        module = import_module(f"{package.__name__}.{name}")
        print(f"\n=== {name.removeprefix(prefix)} ===", flush=True)
        status |= int(module.main([]) or 0)
    return status
