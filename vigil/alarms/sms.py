"""What an SMS sender returns, shared by the cloud (Twilio) and GSM modem senders."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class SmsResult:
    """Outcome of one send attempt on one channel."""

    ok: bool
    channel: str  # "cloud" | "gsm"
    outcome: str  # sent | sent_verified | rejected | auth_failed | rate_limited | unavailable | ambiguous | timeout | modem_error
    message_id: str | None = None  # Twilio SID or GSM message reference
    error: str = ""
    attempts: int = 1
    detail: dict[str, Any] = field(default_factory=dict)


class SmsSender(Protocol):
    """A blocking SMS channel; called from a worker thread, never from the alarm loop."""

    channel: str

    def send(self, to: str, body: str, ref: str) -> SmsResult:
        """Send `body` to `to` (E.164); `ref` is a unique tag already contained in `body`."""
        ...


_GSM7 = re.compile(r"[^A-Za-z0-9 @£$¥!\"#%&'()*+,\-./:;<=>?_\n\r]")


def gsm7_text(body: str, limit: int = 160) -> str:
    """Body reduced to the GSM 03.38 basic characters this project uses, cut to one SMS."""
    return _GSM7.sub("?", body)[:limit]
