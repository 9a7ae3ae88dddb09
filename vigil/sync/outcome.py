"""What one delivery attempt achieved, and HTTP classification shared by every destination."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from vigil.sync.backoff import parse_retry_after


class Kind(enum.StrEnum):
    """How a row (or a whole batch) came out."""

    DELIVERED = "delivered"
    RETRY = "retry"  # transient: 408/429/5xx, network, unreadable answer
    DEAD = "dead"  # permanent rejection (4xx other than 408/429, invalid record)


@dataclass
class BatchResult:
    """Per-row outcome of one batch; rows not mentioned count as RETRY with `error`."""

    delivered: list[int] = field(default_factory=list)
    dead: list[tuple[int, str]] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    error: str = ""
    retry_after_s: float | None = None
    ambiguous: bool = False  # the request may have been applied (timeout, dropped connection)


class Row(Protocol):
    """The outbox row fields a destination reads (vigil.store OutboxRow)."""

    id: int
    destination: str
    event_type: str
    payload: dict[str, Any]
    idempotency_key: str
    attempts: int


def classify_status(status: int) -> Kind:
    """2xx delivered (body still to be checked); 408, 425, 429 and 5xx retry; other 4xx are permanent."""
    if 200 <= status < 300:
        return Kind.DELIVERED
    if status in (408, 425, 429) or status >= 500:
        return Kind.RETRY
    return Kind.DEAD


def retry_after_from(headers: Any, now_wall: float) -> float | None:
    """Retry-After of a response's headers, in seconds."""
    return parse_retry_after(headers.get("Retry-After") if headers is not None else None, now_wall)


def make_session(ca_file: str | None = None) -> Any:
    """A requests.Session verifying TLS (with a private CA bundle when given); no proxies from env."""
    import requests

    s = requests.Session()
    s.trust_env = False
    s.verify = ca_file if ca_file else True
    return s
