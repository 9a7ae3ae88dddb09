"""Run every evaluation section (`vigil/evaluation/eval_*.py`, each with `main(argv) -> int`) in order."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import vigil.evaluation as package


def main(argv: list[str]) -> int:
    """Run all sections, or only those named on the command line (e.g. `qrs alarms`)."""
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("eval_"))
    if argv:
        names = [n for n in names if n.removeprefix("eval_") in argv or n in argv]
    status = 0
    for name in names:
        module = importlib.import_module(f"vigil.evaluation.{name}")
        print(f"\n=== {name.removeprefix('eval_')} ===", flush=True)
        status |= int(module.main([]) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
