"""Local sound + escalation wired to an AlarmEngine, for the daemon's alarm loop.

    ann = Annunciator.from_config(cfg, clock, engine, emit=fan_out_to_store_and_bus, audit=...)
    pipeline.add_sink(ann)        # it is a PipelineSink: alarm events start/stop escalation ladders
    ... every 100 ms on the alarm loop: ann.tick()
    ann.close()

`tick()` sets the player to the engine's sounding priority, runs the escalation timers and feeds
failures back into the engine as technical alarms (``sound_failed``, ``escalation_channel_failed``;
while an escalation channel is failed the sound is played louder). Callbacks from the player thread
are queued and applied on the alarm loop, so the engine is only ever touched from one thread.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from typing import Any

from vigil.alarms.audit import AuditSink
from vigil.alarms.escalation import Escalator
from vigil.alarms.player import AlarmPlayer, SoundSink, make_sink
from vigil.clock import Clock
from vigil.config import VigilConfig, read_secret
from vigil.errors import VigilError
from vigil.model import AlarmEvent, TechnicalEvent, TechnicalKind

log = logging.getLogger(__name__)


class Annunciator:
    """Sound player + escalator around one engine (PipelineSink-compatible `alarm` method)."""

    def __init__(self, cfg: VigilConfig, clock: Clock, engine: Any, emit: Callable[[AlarmEvent], None], *,
                 player: AlarmPlayer | None, escalator: Escalator | None) -> None:
        self.cfg, self.clock, self.engine, self._emit = cfg, clock, engine, emit
        self.player = player
        self.escalator = escalator
        self._inbox: queue.SimpleQueue[TechnicalEvent] = queue.SimpleQueue()
        if player is not None:
            player.on_failure = lambda why: self._inbox.put(
                TechnicalEvent(TechnicalKind.SOUND_FAILED, True, self.clock.monotonic(), detail=why[:120]))
            player.on_recovered = lambda: self._inbox.put(
                TechnicalEvent(TechnicalKind.SOUND_FAILED, False, self.clock.monotonic()))
            player.start()

    @classmethod
    def from_config(cls, cfg: VigilConfig, clock: Clock, engine: Any, emit: Callable[[AlarmEvent], None], *,
                    audit: AuditSink | None = None, sound_sink: SoundSink | None = None,
                    online: Callable[[], bool] = lambda: True) -> Annunciator:
        """Build the player (alarms.sound_device) and the escalator (escalation.twilio / .modem)."""
        player = None
        if cfg.alarms.sound_enabled:
            player = AlarmPlayer(sound_sink or make_sink(cfg.alarms.sound_device))
        cloud = gsm = None
        esc_cfg = cfg.escalation
        if esc_cfg.twilio is not None:
            from vigil.alarms.cloud_sms import TwilioSender
            try:
                token = read_secret(cfg, esc_cfg.twilio.auth_token_file, what="escalation.twilio").decode()
                cloud = TwilioSender(esc_cfg.twilio, token)
            except VigilError as exc:
                log.error("cloud SMS disabled: %s", exc)
        if esc_cfg.modem is not None:
            from vigil.alarms.gsm import GsmSender
            gsm = GsmSender(esc_cfg.modem)
        self_ref: list[Annunciator] = []
        esc = Escalator(cfg, clock, emit, cloud=cloud, gsm=gsm, online=online, audit=audit,
                        on_channel_state=lambda ok, why: self_ref[0]._channel_state(ok, why))
        ann = cls(cfg, clock, engine, emit, player=player, escalator=esc)
        self_ref.append(ann)
        return ann

    def _channel_state(self, ok: bool, why: str) -> None:
        self.engine.on_technical(None, TechnicalEvent(TechnicalKind.ESCALATION_CHANNEL_FAILED, not ok,
                                                      self.clock.monotonic(), detail=why[:120]))
        if self.player is not None:
            self.player.set_loud(not ok)

    # PipelineSink interface (only alarm events matter here)
    def alarm(self, event: AlarmEvent) -> None:
        """Start/stop escalation ladders from engine transitions."""
        if self.escalator is not None:
            self.escalator.on_event(event)

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name in ("block", "reading", "analysis", "technical", "gap"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def tick(self) -> None:
        """Apply queued player reports, run escalation timers, update the sound. Never blocks."""
        while True:
            try:
                ev = self._inbox.get_nowait()
            except queue.Empty:
                break
            self.engine.on_technical(None, ev)
        if self.escalator is not None:
            self.escalator.tick()
        if self.player is not None:
            self.player.set_priority(self.engine.sounding_priority())

    def close(self) -> None:
        """Stop the player and wait for SMS in flight."""
        if self.player is not None:
            self.player.stop()
        if self.escalator is not None:
            self.escalator.close()
