"""StoreWriter: the record store on its own thread, fed by a queue, so the event loop never waits on disk.

Failures never stop the thread: a failed commit (disk full, read-only, I/O error) is logged once as a
clear StoreError, reported as ``TechnicalEvent(STORE_FAILED)`` (and ``DISK_LOW`` when the disk is
full), and retried at the next commit interval with the batch still queued. When a commit succeeds
again the events are cleared (``active=False``). A free-space check against ``min_free_mb`` raises
and clears ``DISK_LOW`` on its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from vigil.errors import StoreError
from vigil.model import TechnicalEvent, TechnicalKind
from vigil.store.records import RecordStore

log = logging.getLogger(__name__)

_STOP = object()
EventCallback = Callable[[TechnicalEvent], None]


class StoreWriter:
    """Run a RecordStore in a dedicated thread; `submit` never blocks the caller."""

    def __init__(self, store: RecordStore, on_event: EventCallback | None = None, *,
                 loop: asyncio.AbstractEventLoop | None = None, min_free_mb: float = 200.0,
                 disk_check_s: float = 10.0, max_queue: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._on_event = on_event
        self._loop = loop
        self.min_free_mb = min_free_mb
        self.disk_check_s = disk_check_s
        self._clock = clock
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.store_failed = False
        self.disk_full = False  # last commit failed with "disk full"
        self.free_low = False  # free space below min_free_mb
        self.last_error: str | None = None
        self.dropped = 0
        self._last_disk_check = -1e18

    # ------------------------------------------------------------------ caller side

    def start(self) -> StoreWriter:
        """Start the writer thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vigil-store-writer", daemon=True)
            self._thread.start()
        return self

    def submit(self, method: str, *args: Any, **kwargs: Any) -> bool:
        """Queue `store.<method>(*args, **kwargs)`; False (and STORE_FAILED) if the queue is full."""
        return self._put((method, args, kwargs, None))

    def call(self, method: str, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Queue a call and get a Future of its result (await it with asyncio.wrap_future)."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if not self._put((method, args, kwargs, fut)):
            fut.set_exception(StoreError("record store writer queue is full"))
        return fut

    def _put(self, item: Any) -> bool:
        if not hasattr(self.store, item[0]) or item[0].startswith("_"):
            raise AttributeError(f"RecordStore has no public method {item[0]!r}")
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("record store writer queue is full (disk too slow or stuck): %d writes dropped",
                          self.dropped)
                self._emit(TechnicalKind.STORE_FAILED, True, "writer queue full: writes are being dropped")
            return False

    @property
    def queue_size(self) -> int:
        """Writes waiting in the queue."""
        return self._queue.qsize()

    def stop(self, timeout: float = 30.0) -> None:
        """Flush and close the store after everything queued so far; join the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("record store writer did not stop within %.0f s", timeout)
        self._thread = None

    # ------------------------------------------------------------------ events

    def _emit(self, kind: TechnicalKind, active: bool, detail: str) -> None:
        if self._on_event is None:
            return
        ev = TechnicalEvent(kind=kind, active=active, t_mono=self._clock(), detail=detail)
        try:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_event, ev)
            else:
                self._on_event(ev)
        except Exception:  # a broken callback must not kill the writer
            log.exception("technical event callback failed")

    def _fail(self, exc: StoreError) -> None:
        text = str(exc)
        if not self.store_failed or text != self.last_error:
            log.error("record store write failed: %s", text)
        if not self.store_failed:
            self._emit(TechnicalKind.STORE_FAILED, True, text)
        self.store_failed, self.last_error = True, text
        if getattr(exc, "kind", "") == "full" and not self.disk_full:
            self.disk_full = True
            if not self.free_low:
                self._emit(TechnicalKind.DISK_LOW, True, "disk full: the record store cannot write")

    def _recovered(self) -> None:
        if self.store_failed:
            log.warning("record store writes again after failure: %s", self.last_error)
            self.store_failed = False
            self._emit(TechnicalKind.STORE_FAILED, False, "record store writes again")
        if self.disk_full:
            self.disk_full = False
            if not self.free_low:
                self._emit(TechnicalKind.DISK_LOW, False, "record store writes again")

    def check_disk(self) -> float | None:
        """Compare free space with min_free_mb (DISK_LOW with hysteresis); return free MB."""
        try:
            free_mb = shutil.disk_usage(self.store.path.parent).free / 2**20
        except OSError as exc:
            log.warning("cannot read free space of %s: %s", self.store.path.parent, exc)
            return None
        if not self.free_low and free_mb < self.min_free_mb:
            self.free_low = True
            log.error("disk low: %.0f MB free under %s (minimum %.0f MB)", free_mb, self.store.path.parent,
                      self.min_free_mb)
            if not self.disk_full:
                self._emit(TechnicalKind.DISK_LOW, True, f"{free_mb:.0f} MB free, minimum {self.min_free_mb:.0f} MB")
        elif self.free_low and free_mb > self.min_free_mb * 1.1 + 1:
            self.free_low = False
            log.info("disk space back: %.0f MB free", free_mb)
            if not self.disk_full:
                self._emit(TechnicalKind.DISK_LOW, False, f"{free_mb:.0f} MB free")
        return free_mb

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        store = self.store
        while True:
            wait = store.seconds_until_commit()
            try:
                item = self._queue.get(timeout=min(max(wait, 0.01), 0.25))
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if item is not None:
                self._execute(item)
            try:
                if store.maybe_commit():
                    self._recovered()
            except StoreError as exc:
                self._fail(exc)
            if self._clock() - self._last_disk_check >= self.disk_check_s:
                self._last_disk_check = self._clock()
                self.check_disk()
        try:
            store.close()
            self._recovered()
        except StoreError as exc:
            self._fail(exc)
            log.error("record store closed with %d rows not written", store.discard_pending())

    def _execute(self, item: tuple[str, tuple[Any, ...], dict[str, Any], concurrent.futures.Future[Any] | None]) -> None:
        method, args, kwargs, fut = item
        try:
            result = getattr(self.store, method)(*args, **kwargs)
        except StoreError as exc:
            if fut is None:
                self._fail(exc)
            else:
                fut.set_exception(exc)
            return
        except Exception as exc:
            log.exception("record store call %s failed", method)
            if fut is not None:
                fut.set_exception(exc)
            return
        if fut is not None:
            fut.set_result(result)
