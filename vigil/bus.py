"""The room's MQTT bus: topic tree, versioned JSON payloads and a non-blocking aiomqtt publisher.

Topic tree (docs/INTERFACES.md)::

    vigil/<room>/status                    retained; daemon heartbeat; last will {"v":1,"state":"offline"}
    vigil/<room>/guest/<mat>/vitals        retained; latest numerics with ages
    vigil/<room>/guest/<mat>/ecg           not retained; ~4/s decimated waveform blocks
    vigil/<room>/guest/<mat>/alarms        retained; active alarms of that guest
    vigil/<room>/guest/<mat>/history       retained; per-minute trends and recent alarm events
    vigil/<room>/alarms/events             every alarm transition
    vigil/<room>/sync/status               retained; sync queue state
    vigil/<room>/cmd/<operator>            commands from dashboards
    vigil/<room>/cmd/<operator>/reply      the daemon's answers

`Bus` wraps `aiomqtt.Client` the way aiomqtt wraps paho: ``async with Bus(...) as bus`` starts a
background task that connects (and reconnects with backoff) while the caller carries on. The
``publish*`` methods are plain functions that never block or raise: retained state is coalesced per
topic (the latest value wins and is re-sent after every reconnect); waveform frames are dropped
(and counted) while the broker is away, because stale ECG is worthless; other messages wait in a
bounded queue whose oldest entries are dropped (and counted) when it overflows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from vigil.model import SCHEMA_VERSION

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- topics and payloads

@dataclass(frozen=True, slots=True)
class Topics:
    """Topic builders for one room."""

    room: str
    prefix: str = "vigil"

    @property
    def base(self) -> str:
        """vigil/<room>."""
        return f"{self.prefix}/{self.room}"

    def status(self) -> str:
        """Daemon heartbeat (retained, last will)."""
        return f"{self.base}/status"

    def vitals(self, mat: str) -> str:
        """Latest numerics of one guest (retained)."""
        return f"{self.base}/guest/{mat}/vitals"

    def ecg(self, mat: str) -> str:
        """Decimated live ECG of one guest (not retained)."""
        return f"{self.base}/guest/{mat}/ecg"

    def guest_alarms(self, mat: str) -> str:
        """Active alarms of one guest (retained)."""
        return f"{self.base}/guest/{mat}/alarms"

    def history(self, mat: str) -> str:
        """Per-minute trends and recent alarm events of one guest (retained), for late dashboards."""
        return f"{self.base}/guest/{mat}/history"

    def alarm_events(self) -> str:
        """Every alarm transition."""
        return f"{self.base}/alarms/events"

    def sync_status(self) -> str:
        """Outbox/sync state (retained)."""
        return f"{self.base}/sync/status"

    def cmd(self, operator: str = "+") -> str:
        """Commands from a dashboard operator (`+` for all)."""
        return f"{self.base}/cmd/{operator}"

    def cmd_reply(self, operator: str) -> str:
        """The daemon's answer to an operator."""
        return f"{self.base}/cmd/{operator}/reply"

    def guest_all(self) -> str:
        """Wildcard for every guest topic."""
        return f"{self.base}/guest/#"


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, tuples lists, enums their value."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, int | str):  # enums
        return _clean(value.value)
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


def encode(payload: dict[str, Any]) -> bytes:
    """Versioned compact JSON: `{"v": 1, ...}` (NaN → null)."""
    body = {"v": SCHEMA_VERSION}
    body.update(_clean(payload))
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode(data: bytes | bytearray | str) -> dict[str, Any]:
    """Parse a payload; ValueError if it is not a versioned JSON object this code understands."""
    obj = json.loads(data)
    if not isinstance(obj, dict) or "v" not in obj:
        raise ValueError("payload is not a versioned JSON object")
    if obj["v"] != SCHEMA_VERSION:
        raise ValueError(f"unsupported payload version {obj['v']!r}")
    return obj


OFFLINE = {"state": "offline"}


# --------------------------------------------------------------------------- the publisher

@dataclass(slots=True)
class BusStats:
    """Counters exposed in the status heartbeat."""

    published: int = 0
    dropped_ecg: int = 0
    dropped_queue: int = 0
    connects: int = 0
    failures: int = 0


StateCallback = Callable[[bool, str], None]
MessageCallback = Callable[[str, bytes], None]


class Bus:
    """Non-blocking MQTT publisher (and optional subscriber) for one room."""

    def __init__(self, room: str, host: str = "127.0.0.1", port: int = 1883, *,
                 client_id: str | None = None, username: str | None = None, password: str | None = None,
                 keepalive: int = 10, last_will: bool = True, max_queue: int = 2000,
                 subscriptions: Iterable[str] = (), on_message: MessageCallback | None = None,
                 on_state: StateCallback | None = None, backoff_base_s: float = 0.5,
                 backoff_cap_s: float = 10.0, publish_timeout_s: float = 5.0) -> None:
        self.topics = Topics(room)
        self.host, self.port = host, port
        self.client_id = client_id or f"vigil-{room}-{uuid.uuid4().hex[:8]}"
        self.username, self.password = username, password
        self.keepalive = keepalive
        self.last_will = last_will
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.on_state = on_state
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.publish_timeout_s = publish_timeout_s
        self.stats = BusStats()
        self.connected = False
        self._reported: bool | None = None  # last state told to on_state (None: nothing yet)
        self.last_error = ""
        self._retained: dict[str, bytes] = {}
        self._dirty: OrderedDict[str, None] = OrderedDict()
        self._queue: deque[tuple[str, bytes, int]] = deque()
        self._max_queue = max_queue
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._connected_event = asyncio.Event()

    # -- lifecycle
    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"bus-{self.topics.room}")
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self, final_status: dict[str, Any] | None = None, flush_timeout_s: float = 2.0) -> None:
        """Publish `final_status` (retained) if connected, flush what is queued, then disconnect."""
        if final_status is not None:
            self.publish(self.topics.status(), final_status, retain=True, qos=1)
        if self.connected:
            deadline = asyncio.get_running_loop().time() + flush_timeout_s
            while (self._dirty or self._queue) and self.connected and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.on_state = None  # a deliberate close is not a broker outage
        self.connected = False
        self._connected_event.clear()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the broker connection is up; False on timeout."""
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # -- publishing (never blocks, never raises)
    def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False, qos: int = 0,
                waveform: bool = False) -> None:
        """Queue one versioned JSON message; see the module docstring for the drop policy."""
        try:
            data = encode(payload)
        except (TypeError, ValueError) as exc:
            log.warning("bus: cannot encode payload for %s: %s", topic, exc)
            return
        if retain:
            self._retained[topic] = data
            self._dirty[topic] = None
            self._dirty.move_to_end(topic)
        elif waveform and not self.connected:
            self.stats.dropped_ecg += 1
            return
        else:
            if len(self._queue) >= self._max_queue:
                _, _, _ = self._queue.popleft()
                self.stats.dropped_queue += 1
            self._queue.append((topic, data, qos))
        self._wake.set()

    def publish_status(self, payload: dict[str, Any]) -> None:
        """Retained daemon heartbeat."""
        self.publish(self.topics.status(), payload, retain=True, qos=1)

    def publish_vitals(self, mat: str, payload: dict[str, Any]) -> None:
        """Retained latest numerics of one guest."""
        self.publish(self.topics.vitals(mat), payload, retain=True)

    def publish_ecg(self, mat: str, payload: dict[str, Any]) -> None:
        """Live waveform frame (dropped while the broker is away or the queue is full)."""
        self.publish(self.topics.ecg(mat), payload, waveform=True)

    def publish_guest_alarms(self, mat: str, payload: dict[str, Any]) -> None:
        """Retained active alarms of one guest."""
        self.publish(self.topics.guest_alarms(mat), payload, retain=True, qos=1)

    def publish_history(self, mat: str, payload: dict[str, Any]) -> None:
        """Session history of one guest (retained)."""
        self.publish(self.topics.history(mat), payload, retain=True, qos=1)

    def publish_alarm_event(self, payload: dict[str, Any]) -> None:
        """One alarm transition (queued while the broker is away)."""
        self.publish(self.topics.alarm_events(), payload, qos=1)

    def publish_reply(self, operator: str, payload: dict[str, Any]) -> None:
        """Answer to an operator's command."""
        self.publish(self.topics.cmd_reply(operator), payload, qos=1)

    def retained_state(self) -> dict[str, bytes]:
        """The latest retained payload of every topic (what is re-sent after a reconnect)."""
        return dict(self._retained)

    # -- internals
    def _set_state(self, connected: bool, why: str) -> None:
        if connected == self._reported:
            return
        self._reported = connected
        self.connected = connected
        if connected:
            self._connected_event.set()
            log.info("bus: connected to %s:%d", self.host, self.port)
        else:
            self._connected_event.clear()
            log.warning("bus: broker %s:%d unavailable: %s", self.host, self.port, why)
        if self.on_state is not None:
            try:
                self.on_state(connected, why)
            except Exception:  # a callback must never kill the publisher
                log.exception("bus: state callback failed")

    def _client_kwargs(self) -> dict[str, Any]:
        import aiomqtt

        kwargs: dict[str, Any] = dict(hostname=self.host, port=self.port, identifier=self.client_id,
                                      keepalive=self.keepalive, timeout=self.publish_timeout_s)
        if self.username:
            kwargs.update(username=self.username, password=self.password)
        if self.last_will:
            kwargs["will"] = aiomqtt.Will(self.topics.status(), encode(OFFLINE), qos=1, retain=True)
        return kwargs

    async def _run(self) -> None:
        import aiomqtt

        attempt = 0
        while True:
            try:
                async with aiomqtt.Client(**self._client_kwargs()) as client:
                    self._client = client
                    self.stats.connects += 1
                    attempt = 0
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1)
                    for topic in self._retained:  # re-send last-known state after every (re)connect
                        self._dirty[topic] = None
                    self._set_state(True, "connected")
                    await self._serve(client)
            except asyncio.CancelledError:
                raise
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                self.last_error = str(exc) or type(exc).__name__
            finally:
                self._client = None
            self.stats.failures += 1
            self._set_state(False, self.last_error)
            delay = min(self.backoff_cap_s, self.backoff_base_s * 2 ** min(attempt, 10))
            attempt += 1
            await asyncio.sleep(delay)

    async def _serve(self, client: Any) -> None:
        tasks = [asyncio.create_task(self._drain(client))]
        if self.subscriptions:
            tasks.append(asyncio.create_task(self._receive(client)))
        else:
            tasks.append(asyncio.create_task(self._watch(client)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def _watch(self, client: Any) -> None:
        import aiomqtt

        await asyncio.shield(client._disconnected)  # noqa: SLF001 - resolves when paho loses the link
        raise aiomqtt.MqttError("disconnected")

    async def _receive(self, client: Any) -> None:
        async for message in client.messages:
            if self.on_message is not None:
                try:
                    self.on_message(str(message.topic), bytes(message.payload))
                except Exception:
                    log.exception("bus: message handler failed for %s", message.topic)

    async def _drain(self, client: Any) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty or self._queue:
                if self._dirty:
                    topic, _ = self._dirty.popitem(last=False)
                    data, qos, retain = self._retained[topic], 1, True
                    try:
                        await client.publish(topic, data, qos=qos, retain=retain)
                    except BaseException:
                        self._dirty[topic] = None  # keep it for the next connection
                        raise
                else:
                    topic, data, qos = self._queue.popleft()
                    try:
                        await client.publish(topic, data, qos=qos, retain=False)
                    except BaseException:
                        self._queue.appendleft((topic, data, qos))
                        raise
                self.stats.published += 1


# --------------------------------------------------------------------------- subscribing (dashboards, tests)

@contextlib.asynccontextmanager
async def subscribe(host: str, port: int, topics: Iterable[str], *, client_id: str | None = None,
                    username: str | None = None, password: str | None = None,
                    timeout: float = 10.0) -> AsyncIterator[AsyncIterator[tuple[str, dict[str, Any], bool]]]:
    """Subscribe and yield an async iterator of (topic, decoded payload, retained) tuples.

    Messages whose payload is not versioned JSON are skipped (logged at DEBUG).
    """
    import aiomqtt

    kwargs: dict[str, Any] = dict(hostname=host, port=port, timeout=timeout,
                                  identifier=client_id or f"vigil-sub-{uuid.uuid4().hex[:8]}")
    if username:
        kwargs.update(username=username, password=password)
    async with aiomqtt.Client(**kwargs) as client:
        for t in topics:
            await client.subscribe(t, qos=1)

        async def messages() -> AsyncIterator[tuple[str, dict[str, Any], bool]]:
            async for m in client.messages:
                try:
                    payload = decode(bytes(m.payload))
                except ValueError as exc:
                    log.debug("bus: skipping %s: %s", m.topic, exc)
                    continue
                yield str(m.topic), payload, bool(m.retain)

        yield messages()
