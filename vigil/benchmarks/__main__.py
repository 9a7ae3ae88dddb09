"""Run every benchmarks section (`vigil/benchmarks/bench_*.py`, each with `main(argv) -> int`) in order."""

from __future__ import annotations

import importlib
import sys

import vigil.benchmarks as package
from vigil.cliargs import run_sections


def main(argv: list[str]) -> int:
    """Run all sections, or only those named on the command line (e.g. `signal alarms`)."""
    return run_sections(package, "bench_", __doc__, argv, lambda name: importlib.import_module(name))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
