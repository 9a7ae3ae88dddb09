"""SMS through a Twilio-style REST API (protocols.md §6); blocking, run it in a worker thread.

Twilio has no idempotency key for message creation, so after an *ambiguous* failure (timeout,
connection reset after sending, 5xx) we list ``Messages.json?To=..&DateSent>=today`` and look for our
unique ``ref`` tag in the bodies before sending again. 429 (20429) was never processed and is retried
after ``Retry-After``. 4xx errors are permanent for this message.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

import requests

from vigil.alarms.sms import SmsResult
from vigil.config import TwilioSettings

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 10.0


class TwilioSender:
    """Sends one SMS per call with bounded retries; never raises."""

    channel = "cloud"

    def __init__(self, settings: TwilioSettings, auth_token: str, *, max_attempts: int = 3,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep,
                 ca_file: str | None = None) -> None:
        self.settings = settings
        self.max_attempts = max_attempts
        self.session = session or requests.Session()
        self.session.auth = (settings.account_sid, auth_token)
        self._sleep = sleep
        self._verify: str | bool = ca_file or settings.ca_file or True
        base = settings.base_url.rstrip("/")
        self.url = f"{base}/2010-04-01/Accounts/{settings.account_sid}/Messages.json"

    def _post(self, to: str, body: str) -> requests.Response:
        return self.session.post(self.url, data={"To": to, "From": self.settings.from_number, "Body": body},
                                 timeout=self.settings.timeout_s, verify=self._verify)

    def already_sent(self, to: str, ref: str) -> bool | None:
        """Whether a message with `ref` to `to` exists (None when the query itself failed)."""
        day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
        try:
            r = self.session.get(self.url, params={"To": to, "DateSent>": day},
                                 timeout=self.settings.timeout_s, verify=self._verify)
            if r.status_code != 200:
                return None
            msgs: list[dict[str, Any]] = r.json().get("messages", [])
        except (requests.RequestException, ValueError):
            return None
        return any(ref in (m.get("body") or "") for m in msgs)

    def send(self, to: str, body: str, ref: str) -> SmsResult:
        """Send with retries; see the module docstring for which failures are retried."""
        attempt = 0
        last = SmsResult(False, self.channel, "unavailable", error="not attempted")
        while attempt < self.max_attempts:
            attempt += 1
            ambiguous = False
            try:
                r = self._post(to, body)
            except requests.exceptions.ConnectTimeout as exc:
                last = SmsResult(False, self.channel, "unavailable", error=f"connect timeout: {exc}", attempts=attempt)
                break  # never reached the server
            except requests.exceptions.SSLError as exc:
                return SmsResult(False, self.channel, "unavailable", error=f"TLS: {exc}", attempts=attempt)
            except requests.exceptions.ConnectionError as exc:
                if "refused" in str(exc).lower() or "NewConnectionError" in str(exc):
                    return SmsResult(False, self.channel, "unavailable", error="connection refused", attempts=attempt)
                ambiguous, last = True, SmsResult(False, self.channel, "ambiguous", error=f"connection lost: {exc}",
                                                  attempts=attempt)
            except requests.exceptions.Timeout as exc:
                ambiguous, last = True, SmsResult(False, self.channel, "ambiguous", error=f"timeout: {exc}",
                                                  attempts=attempt)
            except requests.RequestException as exc:
                return SmsResult(False, self.channel, "unavailable", error=str(exc), attempts=attempt)
            else:
                code, payload = r.status_code, _json(r)
                if code in (200, 201):
                    return SmsResult(True, self.channel, "sent", message_id=payload.get("sid"), attempts=attempt,
                                     detail={"status": payload.get("status")})
                err = f"HTTP {code} code {payload.get('code')}: {payload.get('message', '')}"[:300]
                if code == 429:
                    wait = _retry_after(r.headers.get("Retry-After"))
                    last = SmsResult(False, self.channel, "rate_limited", error=err, attempts=attempt,
                                     detail={"code": payload.get("code"), "retry_after": wait})
                    if attempt < self.max_attempts:
                        self._sleep(wait)
                    continue
                if code >= 500:
                    ambiguous, last = True, SmsResult(False, self.channel, "ambiguous", error=err, attempts=attempt,
                                                      detail={"code": payload.get("code")})
                else:
                    outcome = "auth_failed" if code in (401, 403) else "rejected"
                    return SmsResult(False, self.channel, outcome, error=err, attempts=attempt,
                                     detail={"code": payload.get("code"), "http": code})
            if ambiguous:
                found = self.already_sent(to, ref)
                if found:
                    return SmsResult(True, self.channel, "sent_verified", attempts=attempt,
                                     detail={"checked_before_resend": True})
                if found is None:
                    log.warning("cloud SMS outcome unknown and the check query failed; not re-sending on this channel")
                    return SmsResult(False, self.channel, "ambiguous", error=last.error + "; check query failed",
                                     attempts=attempt, detail={"checked_before_resend": False})
                self._sleep(min(0.5 * attempt, 2.0))
        return last


def _json(r: requests.Response) -> dict[str, Any]:
    try:
        obj = r.json()
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, min(float(value or 1.0), MAX_RETRY_AFTER_S))
    except ValueError:
        return 1.0
