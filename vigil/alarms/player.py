"""Local alarm sound: a dedicated thread that repeats the burst of the highest sounding priority.

Sinks: ``aplay[:DEVICE]`` (ALSA through the ``aplay`` program with a temporary WAV; "default" device
from ``alarms.sound_device``), ``file:DIR`` (writes each burst as a numbered WAV, for tests), ``null``.
A failure to play (no aplay, no sound card, non-zero exit) is reported through ``on_failure`` (the
daemon turns it into the ``sound_failed`` technical alarm) and never raises into the caller; the
player keeps trying at the next burst and reports recovery through ``on_recovered``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from vigil.alarms.sound import PATTERNS, render_burst, to_wav
from vigil.model import Priority

log = logging.getLogger(__name__)


class SoundSink:
    """Plays one WAV; raises OSError/RuntimeError when it cannot."""

    def play(self, wav: bytes, priority: Priority) -> None:  # pragma: no cover - interface
        """Play `wav` to the end."""
        raise NotImplementedError


class AplaySink(SoundSink):
    """ALSA via the `aplay` program."""

    def __init__(self, device: str = "default", timeout_s: float = 15.0) -> None:
        self.device = device
        self.timeout_s = timeout_s

    def play(self, wav: bytes, priority: Priority) -> None:
        """Write a temporary WAV and run aplay on it; non-zero exit raises RuntimeError."""
        exe = shutil.which("aplay")
        if exe is None:
            raise RuntimeError("aplay not found (install alsa-utils)")
        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            f.write(wav)
            f.flush()
            cmd = [exe, "-q", "-D", self.device, f.name]
            proc = subprocess.run(cmd, capture_output=True, timeout=self.timeout_s, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"aplay exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[:200]}")


class FileSink(SoundSink):
    """Writes bursts as WAV files into a folder (tests, headless boxes)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.count = 0

    def play(self, wav: bytes, priority: Priority) -> None:
        """Write burst-<n>-<priority>.wav."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count += 1
        (self.folder / f"burst-{self.count:05d}-{priority.label}.wav").write_bytes(wav)


class NullSink(SoundSink):
    """Plays nothing."""

    def play(self, wav: bytes, priority: Priority) -> None:
        """Do nothing."""


def make_sink(spec: str) -> SoundSink:
    """Sink from a spec: "default"/"aplay"/"aplay:hw:0,0", "file:/dir", "null"."""
    if spec.startswith("file:"):
        return FileSink(spec[5:])
    if spec == "null":
        return NullSink()
    if spec.startswith("aplay:"):
        return AplaySink(spec[6:])
    return AplaySink("default" if spec == "aplay" else spec)


class AlarmPlayer:
    """Thread that sounds the current priority's burst every `repeat_s` until told otherwise."""

    def __init__(self, sink: SoundSink, on_failure: Callable[[str], None] | None = None,
                 on_recovered: Callable[[], None] | None = None, repeat_scale: float = 1.0) -> None:
        self.sink = sink
        self.on_failure = on_failure
        self.on_recovered = on_recovered
        self.repeat_scale = repeat_scale
        self._priority: Priority | None = None
        self._loud = False
        self._cv = threading.Condition()
        self._stop = False
        self._failed = False
        self._cache: dict[tuple[Priority, bool], bytes] = {}
        self._thread: threading.Thread | None = None
        self.played = 0
        self.failures = 0

    def start(self) -> AlarmPlayer:
        """Start the player thread."""
        self._thread = threading.Thread(target=self._run, name="vigil-alarm-sound", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (waits for the current burst)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread:
            self._thread.join(timeout=20)

    def set_priority(self, priority: Priority | None) -> None:
        """What to sound now (None = silence); a higher priority interrupts the wait at once."""
        with self._cv:
            if priority != self._priority:
                self._priority = priority
                self._cv.notify_all()

    def set_loud(self, loud: bool) -> None:
        """Louder sound (used while an escalation channel has failed)."""
        with self._cv:
            self._loud = loud

    @property
    def failed(self) -> bool:
        """Whether the last attempt to play failed."""
        return self._failed

    def _wav(self, p: Priority, loud: bool) -> bytes:
        key = (p, loud)
        if key not in self._cache:
            self._cache[key] = to_wav(render_burst(p, volume=0.95 if loud else 0.5))
        return self._cache[key]

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._priority is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                p, loud = self._priority, self._loud
            assert p is not None
            try:
                self.sink.play(self._wav(p, loud), p)
                self.played += 1
                if self._failed:
                    self._failed = False
                    if self.on_recovered:
                        self.on_recovered()
            except Exception as exc:  # no sound card, missing aplay, timeout... never crash
                self.failures += 1
                if not self._failed:
                    self._failed = True
                    log.error("alarm sound failed: %s", exc)
                    if self.on_failure:
                        try:
                            self.on_failure(str(exc))
                        except Exception:
                            log.exception("sound failure callback failed")
            wait = PATTERNS[p].repeat_s * self.repeat_scale
            with self._cv:
                if self._stop:
                    return
                current: Priority = p
                self._cv.wait_for(lambda: self._stop or self._priority != current, timeout=wait)  # noqa: B023
