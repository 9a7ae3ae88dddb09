"""`vigil demo` in a real terminal (a detached tmux session at 80×24), read the way a person reads it."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


def _capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def _alive(session: str) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0


def test_demo_dashboard_in_tmux_shows_tiles_numbers_and_status_then_quits(tmp_path: Path) -> None:
    session = f"vigil-tui-test-{tmp_path.name[-12:]}"
    run_dir = tmp_path / "demo"
    rc_file = tmp_path / "rc"
    cmd = (f"{shlex.quote(sys.executable)} -m vigil demo --speed 3 --run-dir {shlex.quote(str(run_dir))}; "
           f"echo $? > {shlex.quote(str(rc_file))}")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", "sh", "-c", cmd], check=True)
    try:
        screen = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = _capture(session)
            if "daemon ok" in screen and len(re.findall(r"HR \d+", screen)) >= 4 and "SpO2 9" in screen:
                break
            time.sleep(0.5)
        lines = screen.splitlines()
        assert "daemon ok" in screen, screen
        assert lines[0].startswith(" broker up") and "op demo" in lines[0], screen
        for i, name in enumerate(("One", "Two", "Three", "Four"), start=1):
            assert f"A{i} Demo Guest {name}" in screen, screen
        assert len(re.findall(r"HR \d+", screen)) >= 4, screen  # a number on every tile
        assert "SpO2 9" in screen  # the BIDMC guest's monitor SpO2
        assert "ALARMS" in screen
        assert any(ch in screen for ch in "⡇⢸⣿")  # ECG traces
        assert all(len(line) <= 80 for line in lines) and len(lines) <= 24
        assert "STALE" not in screen
        # the demo's records raise alarms within seconds; acknowledge the top one with a signed command
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not re.search(r"ALARMS [1-9]", screen):
            time.sleep(0.5)
            screen = _capture(session)
        assert re.search(r">\s*!{1,3} (HIGH|MED|LOW) A\d", screen), screen  # the cursor row of the alarm panel
        subprocess.run(["tmux", "send-keys", "-t", session, "a"], check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "ack: ok" not in screen:
            time.sleep(0.3)
            screen = _capture(session)
        assert re.search(r"ALARMS \d+ +ack: ok ok \(", screen), screen  # the daemon's reply above the alarm list
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not rc_file.exists():
            time.sleep(0.3)
        assert rc_file.exists(), "the demo did not exit after q:\n" + _capture(session)
        assert rc_file.read_text().strip() == "0"
    finally:
        if _alive(session):
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    # the broker and the daemon went with it
    left = subprocess.run(["pgrep", "-af", str(run_dir)], capture_output=True, text=True).stdout
    assert "mosquitto" not in left and "vigil run" not in left, left


def test_closing_the_terminal_stops_the_demo_daemon_and_broker(tmp_path: Path) -> None:
    """An SSH drop is a SIGHUP: the daemon closes its session and the private broker goes too."""
    from vigil.store import RecordStore

    session = f"vigil-tui-hup-{tmp_path.name[-12:]}"
    run_dir = tmp_path / "demo"
    cmd = f"{shlex.quote(sys.executable)} -m vigil demo --run-dir {shlex.quote(str(run_dir))}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd], check=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "daemon ok" not in _capture(session):
            time.sleep(0.5)
        assert "daemon ok" in _capture(session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    deadline = time.monotonic() + 30
    left = "?"
    while time.monotonic() < deadline:
        left = subprocess.run(["pgrep", "-af", str(run_dir)], capture_output=True, text=True).stdout
        if not left:
            break
        time.sleep(0.5)
    assert not left, left
    store = RecordStore.open(run_dir / "vigil.db")
    try:
        (s,) = store.sessions()
        assert s.ended_wall is not None  # the daemon got SIGTERM and closed its session
    finally:
        store.close()
