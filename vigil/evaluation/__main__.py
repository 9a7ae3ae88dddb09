"""Run every evaluation section (`vigil/evaluation/eval_*.py`, each with `main(argv) -> int`) in order."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import vigil.evaluation as package
from vigil.cliargs import ListChoices, parse, summary


def main(argv: list[str]) -> int:
    """Run all sections, or only those named on the command line (e.g. `qrs alarms`)."""
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("eval_"))
    short = [n.removeprefix("eval_") for n in names]
    p = argparse.ArgumentParser(prog="python -m vigil.evaluation", description=summary(__doc__),
                                allow_abbrev=False)
    p.add_argument("sections", nargs="*", choices=ListChoices(short), type=lambda s: s.removeprefix("eval_"),
                   help="sections to run, each with its defaults, in this order (default: all): "
                        f"{', '.join(short)}; "
                        "the eval_ prefix is optional (qt = eval_qt); a section's own options: "
                        "python -m vigil.evaluation.eval_SECTION --help")
    chosen = set(parse(p, argv).sections)
    if chosen:
        names = [n for n in names if n.removeprefix("eval_") in chosen]
    status = 0
    for name in names:
        module = importlib.import_module(f"vigil.evaluation.{name}")
        print(f"\n=== {name.removeprefix('eval_')} ===", flush=True)
        status |= int(module.main([]) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
