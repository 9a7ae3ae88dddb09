"""Where recorded data lives: PhysioNet records for evaluation (VIGIL_DATA) and the vendored demo records."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
VENDORED_RECORDS = PACKAGE_DATA / "records"


def data_root() -> Path:
    """Root of the PhysioNet records: $VIGIL_DATA, else ../shared/data next to the checkout."""
    env = os.environ.get("VIGIL_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def vendored(name: str) -> Path:
    """Path (without extension) of a record vendored in vigil/data/records."""
    return VENDORED_RECORDS / name
