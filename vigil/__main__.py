"""`python -m vigil` entry point."""

from vigil.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
