"""Fast guard of `make bench`'s sync drain (vigil/benchmarks/bench_sync.py) on a tiny night."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.benchmarks import bench_sync

pytestmark = pytest.mark.timeout(120)


def test_fill_writes_the_feed_cadence(tmp_path: Path) -> None:
    counts = bench_sync.fill_outbox(tmp_path / "v.db", 0.1, 3)  # 360 s, 3 guests, one alarm (guest 0 at t=0)
    # booking: session started/ended + 3 check-ins and check-outs + 72 vitals per guest + raised/acked/resolved
    assert counts["booking"] == 2 + 3 + 3 + 3 * 72 + 3
    # fhir: 6 one-minute windows per guest + 1 alarm strip + 3 summaries; e-mail and sms one per guest
    assert (counts["fhir"], counts["email"], counts["sms"]) == (3 * 6 + 1 + 3, 3, 3)


def test_tiny_drain_reaches_every_receiver() -> None:
    r = bench_sync.run(0.02, 2)
    c = r["counts"]
    assert r["booking_applied"] == c["booking"] == r["booking_received"]
    assert (r["emails"], r["sms"]) == (c["email"], c["sms"]) == (2, 2)
    assert r["fhir_transactions"] >= 1 and r["fhir_bytes"] > 0 and r["peak_rss_mb"] > 0
    assert set(r["done_after_s"]) == {"booking", "fhir", "email", "sms"}
