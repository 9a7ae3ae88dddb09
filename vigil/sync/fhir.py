"""EMR destination: FHIR R4 transaction Bundles of conditional creates, validated before sending."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from vigil.sync import fhir_mapping as fm
from vigil.sync.oauth import ClientCredentials, TokenError
from vigil.sync.outcome import BatchResult, Kind, Row, classify_status, retry_after_from

log = logging.getLogger(__name__)


class FhirDestination:
    """POSTs one transaction Bundle per batch to the FHIR base URL (bearer token when configured)."""

    name = "fhir"

    def __init__(self, base_url: str, *, session: Any, auth: ClientCredentials | None = None,
                 batch_size: int = 100, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._batch_size = batch_size
        self._solo_left = 0  # after a batch-wide 4xx, send this many rows one by one to find the culprit
        self._session = session
        self._auth = auth
        self._timeout = timeout_s
        self._valid: set[str] = set()  # Patient/Encounter JSON already validated

    @property
    def batch_size(self) -> int:
        """Rows per Bundle (1 while isolating a rejected row)."""
        return 1 if self._solo_left > 0 else self._batch_size

    def _validate(self, resource: dict[str, Any]) -> None:
        """R4B validation; a Patient/Encounter repeated in every row of a guest is validated once."""
        if resource.get("resourceType") not in ("Patient", "Encounter"):
            fm.validate_resource(resource)
            return
        key = json.dumps(resource, sort_keys=True, separators=(",", ":"))
        if key in self._valid:
            return
        fm.validate_resource(resource)
        if len(self._valid) > 10_000:
            self._valid.clear()
        self._valid.add(key)

    def _post(self, body: bytes) -> Any:
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        if self._auth is not None:
            headers["Authorization"] = f"Bearer {self._auth.token()}"
        return self._session.post(self.base_url, data=body, headers=headers, timeout=self._timeout)

    def deliver(self, rows: Sequence[Row]) -> BatchResult:
        """Map, validate (fhir.resources R4B), send; a replayed Bundle creates nothing twice."""
        import time

        import requests

        res = BatchResult()
        resources: list[dict[str, Any]] = []
        sent: list[int] = []
        for row in rows:
            try:
                mapped = fm.resources_for_payload(row.payload)
                for r in mapped:
                    self._validate(r)
            except (ValueError, KeyError, TypeError) as exc:
                res.dead.append((row.id, f"cannot map to valid FHIR: {str(exc)[:300]}"))
                continue
            resources += mapped
            sent.append(row.id)
        if not sent:
            return res
        bundle = fm.transaction_bundle(resources)
        body = json.dumps(bundle, separators=(",", ":")).encode()
        try:
            r = self._post(body)
            if r.status_code == 401 and self._auth is not None:
                self._auth.invalidate()  # expired or revoked: one fresh token, one more try
                r = self._post(body)
        except TokenError as exc:
            res.retry, res.error = sent, str(exc)
            return res
        except requests.exceptions.RequestException as exc:
            res.retry, res.error, res.ambiguous = sent, f"network: {type(exc).__name__}", True
            return res
        kind = classify_status(r.status_code)
        if kind is Kind.RETRY or r.status_code in (401, 403):
            res.retry, res.error = sent, f"HTTP {r.status_code}"
            res.retry_after_s = retry_after_from(r.headers, time.time())
            return res
        if kind is Kind.DEAD:
            reason = f"HTTP {r.status_code}: {_outcome_text(r)}"
            if len(sent) == 1:
                res.dead.append((sent[0], reason))
                self._solo_left = max(0, self._solo_left - 1)
            else:  # find the culprit: the worker retries them one by one
                res.retry, res.error = sent, reason
                self._solo_left = len(sent)
            return res
        try:
            answer = r.json()
            entries = answer["entry"]
            ok = (answer.get("resourceType") == "Bundle" and answer.get("type") == "transaction-response"
                  and len(entries) == len(bundle["entry"])
                  and all(str(e["response"]["status"]).split()[0] in ("200", "201") for e in entries))
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            res.retry, res.error = sent, f"HTTP {r.status_code} without a valid transaction-response"
            return res
        res.delivered = sent
        if self._solo_left:
            self._solo_left -= 1
        return res


def _outcome_text(r: Any) -> str:
    try:
        issues = r.json().get("issue", [])
        return "; ".join(str(i.get("diagnostics") or i.get("details", {}).get("text") or i.get("code"))
                         for i in issues)[:300] or r.text[:300]
    except (ValueError, AttributeError):
        return r.text[:300]
