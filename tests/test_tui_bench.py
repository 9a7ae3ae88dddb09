"""Guard for the dashboard's rendering cost (`make bench` runs the 20-s version: vigil/benchmarks/bench_tui.py)."""

from __future__ import annotations

import shutil

import pytest

from vigil.benchmarks.bench_tui import GUESTS, TARGET_PCT, run

pytestmark = pytest.mark.timeout(120)


def test_twenty_guests_at_four_frames_per_second_cost_under_15_percent_of_a_core() -> None:
    mode = "terminal" if shutil.which("tmux") else "headless"
    res = run(seconds=6.0, mode=mode)[mode]
    assert res is not None
    if mode == "terminal":
        assert res["tiles_seen"] == GUESTS  # every tile was on the screen while measured
    else:
        assert res["guests_live"] == GUESTS and res["ecg_frames"] >= GUESTS * 4 * 5
    assert res["cpu_pct"] < TARGET_PCT, res
