"""Run every benchmarks section (`vigil/benchmarks/bench_*.py`, each with `main(argv) -> int`) in order."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import vigil.benchmarks as package
from vigil.cliargs import ListChoices, parse, summary


def main(argv: list[str]) -> int:
    """Run all sections, or only those named on the command line (e.g. `signal alarms`)."""
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_"))
    short = [n.removeprefix("bench_") for n in names]
    p = argparse.ArgumentParser(prog="python -m vigil.benchmarks", description=summary(__doc__),
                                allow_abbrev=False)
    p.add_argument("sections", nargs="*", choices=ListChoices(short), type=lambda s: s.removeprefix("bench_"),
                   help="sections to run, each with its defaults, in this order (default: all): "
                        f"{', '.join(short)}; "
                        "the bench_ prefix is optional (store = bench_store); a section's own options: "
                        "python -m vigil.benchmarks.bench_SECTION --help")
    chosen = set(parse(p, argv).sections)
    if chosen:
        names = [n for n in names if n.removeprefix("bench_") in chosen]
    status = 0
    for name in names:
        module = importlib.import_module(f"vigil.benchmarks.{name}")
        print(f"\n=== {name.removeprefix('bench_')} ===", flush=True)
        status |= int(module.main([]) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
