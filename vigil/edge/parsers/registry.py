"""Parser names used by firmware profiles → functions (packet parsers) or classes (stream parsers)."""

from __future__ import annotations

from collections.abc import Callable

from vigil.edge.parsers import battery, blood_pressure, cms50d, datex_s5, heart_rate, plx, polar_pmd
from vigil.edge.parsers.items import Item
from vigil.edge.parsers.stream import StreamParser

PacketParser = Callable[[bytes], list[Item]]

# one notification / read value → items
PACKET_PARSERS: dict[str, PacketParser] = {
    "heart_rate": heart_rate.decode,
    "blood_pressure": blood_pressure.decode,
    "cuff_pressure": blood_pressure.decode_icp,
    "plx_spot_check": plx.decode_spot_check,
    "plx_continuous": plx.decode_continuous,
    "battery": battery.decode,
    "polar_pmd_ecg": polar_pmd.decode_ecg,
}

# a byte stream → items (keeps a resync buffer; corrupt frames are counted, never raised)
STREAM_PARSERS: dict[str, Callable[[], StreamParser]] = {
    "cms50d_classic": cms50d.ClassicStream,
    "cms50d_v46": cms50d.V46Stream,
    "datex_s5": datex_s5.DatexStream,
}

# parsers whose bytes come from elsewhere (replay files, the simulator): known names, no decoder here
EXTERNAL_PARSERS: frozenset[str] = frozenset({"wfdb", "bidmc_csv", "simulated_ecg"})


def known_parsers() -> set[str]:
    """Every parser name a profile may use."""
    return set(PACKET_PARSERS) | set(STREAM_PARSERS) | set(EXTERNAL_PARSERS)


def packet_parser(name: str) -> PacketParser:
    """The packet parser called `name` (KeyError if unknown)."""
    return PACKET_PARSERS[name]


def stream_parser(name: str) -> StreamParser:
    """A new stream parser instance called `name` (KeyError if unknown)."""
    return STREAM_PARSERS[name]()
