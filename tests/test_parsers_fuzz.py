"""Hypothesis fuzzing: arbitrary bytes into every parser give items or ParseError, nothing else."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.edge.parsers import cms50d, datex_s5, polar_pmd
from vigil.edge.parsers.items import Condition, Numeric, Wave
from vigil.edge.parsers.registry import PACKET_PARSERS, STREAM_PARSERS
from vigil.errors import ParseError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_items(items: list) -> None:
    assert isinstance(items, list)
    for it in items:
        assert isinstance(it, Numeric | Wave | Condition)
        if isinstance(it, Wave):
            assert all(isinstance(v, int) for v in it.samples)
        if isinstance(it, Numeric):
            assert isinstance(it.value, float) and not (math.isinf(it.value) and it.metric.value == "spo2")


@pytest.mark.parametrize("name", sorted(PACKET_PARSERS))
def test_packet_parser_fuzz(name: str) -> None:
    parser = PACKET_PARSERS[name]

    @FUZZ
    @given(st.binary(max_size=260))
    def run(data: bytes) -> None:
        try:
            items = parser(data)
        except ParseError:
            return
        _check_items(items)

    run()


@pytest.mark.parametrize("name", sorted(STREAM_PARSERS))
def test_stream_parser_fuzz_never_raises(name: str) -> None:
    @FUZZ
    @given(st.lists(st.binary(max_size=120), max_size=8))
    def run(chunks: list[bytes]) -> None:
        p = STREAM_PARSERS[name]()
        for c in chunks:
            _check_items(p.feed(c))
        assert len(p.buffer) <= 64 * 1024

    run()


@FUZZ
@given(st.binary(max_size=300))
def test_pmd_control_and_delta_fuzz(data: bytes) -> None:
    for fn in (polar_pmd.parse_control_response, polar_pmd.parse_features,
               lambda d: polar_pmd.parse_settings(d), lambda d: polar_pmd.parse_frame(d, channels=3, resolution=16)):
        with contextlib.suppress(ParseError):
            fn(data)


@FUZZ
@given(st.binary(min_size=40, max_size=400))
def test_datex_record_fuzz(data: bytes) -> None:
    for fn in (datex_s5.parse_record, datex_s5.unframe, datex_s5.unstuff):
        with contextlib.suppress(ParseError):
            fn(data)


@FUZZ
@given(st.lists(st.sampled_from([cms50d.encode_classic(cms50d.parse_classic(bytes.fromhex("c53a470861")))]), min_size=1, max_size=20),
       st.binary(max_size=30), st.integers(min_value=0, max_value=200))
def test_cms50_recovers_after_garbage(good: list[bytes], junk: bytes, cut: int) -> None:
    """After any garbage, a run of good packets decodes (at most one packet lost to resync)."""
    p = cms50d.ClassicStream()
    stream = junk + b"".join(good) * 2
    p.feed(stream[:cut])
    p.feed(stream[cut:])
    assert p.frames >= 2 * len(good) - 1
