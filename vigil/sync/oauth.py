"""OAuth 2.0 client-credentials tokens (RFC 6749 §4.4) with refresh before expiry and after a 401."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from vigil.errors import SyncError

log = logging.getLogger(__name__)


class TokenError(SyncError):
    """The token endpoint refused us or answered something unusable."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ClientCredentials:
    """Fetches and caches a bearer token; `invalidate()` forces a new one (call it on 401)."""

    def __init__(self, token_url: str, client_id: str, client_secret: str, *, session: Any,
                 scope: str | None = None, timeout_s: float = 10.0, skew_s: float = 30.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self._session = session
        self._scope = scope
        self._timeout = timeout_s
        self._skew = skew_s
        self._now = now
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.fetches = 0

    def invalidate(self) -> None:
        """Forget the cached token."""
        with self._lock:
            self._token = None

    def token(self) -> str:
        """A valid access token (fetching a new one when missing or within `skew_s` of expiry)."""
        import requests

        with self._lock:
            if self._token is not None and self._now() < self._expires_at - self._skew:
                return self._token
            data = {"grant_type": "client_credentials"}
            if self._scope:
                data["scope"] = self._scope
            try:
                r = self._session.post(self.token_url, data=data, auth=(self.client_id, self._secret),
                                       timeout=self._timeout)
            except requests.exceptions.RequestException as exc:
                raise TokenError(f"token endpoint unreachable: {type(exc).__name__}") from None
            if r.status_code in (400, 401, 403):
                raise TokenError(f"token endpoint refused the client credentials (HTTP {r.status_code}): "
                                 f"{r.text[:200]}", permanent=False)
            if r.status_code != 200:
                raise TokenError(f"token endpoint answered HTTP {r.status_code}")
            try:
                body = r.json()
                token = str(body["access_token"])
                expires_in = float(body.get("expires_in", 300))
            except (ValueError, KeyError, TypeError):
                raise TokenError("token endpoint answered without a usable access_token") from None
            self._token, self._expires_at = token, self._now() + expires_in
            self.fetches += 1
            log.info("fetched an access token valid for %.0f s", expires_in)
            return token
