"""Golden vectors for every device parser (protocols.md §1-3) and stream resynchronisation."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from vigil.edge.parsers import battery, blood_pressure, cms50d, datex_s5, heart_rate, plx, polar_pmd, sfloat
from vigil.edge.parsers.items import Condition, Numeric, Wave
from vigil.edge.parsers.registry import known_parsers, packet_parser, stream_parser
from vigil.errors import ParseError
from vigil.model import Metric, TechnicalKind

h = bytes.fromhex


def numerics(items: list) -> dict[Metric, float]:
    return {i.metric: i.value for i in items if isinstance(i, Numeric)}


# --------------------------------------------------------------------------- SFLOAT

@pytest.mark.parametrize(("raw", "value"), [
    (h("7800"), 120.0), (h("e8f3"), 100.0), (h("acf3"), 94.0), (h("66e3"), 8.7), (h("5f00"), 95.0),
    (h("fe07"), math.inf), (h("0208"), -math.inf), (h("ff0f"), -1.0), (h("0000"), 0.0)])
def test_sfloat_values(raw: bytes, value: float) -> None:
    assert sfloat.sfloat_at(raw, 0) == value


@pytest.mark.parametrize("raw", [h("ff07"), h("0008"), h("0108")])
def test_sfloat_nan_nres_reserved(raw: bytes) -> None:
    assert math.isnan(sfloat.sfloat_at(raw, 0))


def test_sfloat_roundtrip_and_truncation() -> None:
    for v in (120.0, 93.0, 8.7, 0.5, -12.0, 147.0, 36.6):
        assert sfloat.sfloat_at(sfloat.encode_sfloat(v), 0) == pytest.approx(v)
    assert sfloat.encode_sfloat(math.nan) == h("ff07")
    with pytest.raises(ParseError):
        sfloat.sfloat_at(b"\x78", 0)


# --------------------------------------------------------------------------- heart rate

def test_hrm_vector_with_rr() -> None:
    m = heart_rate.parse_hrm(h("164b33032803"))
    assert (m.heart_rate, m.contact, m.rr_1024) == (75, True, (819, 808))
    assert m.rr_ms == pytest.approx((799.8046875, 789.0625))
    items = heart_rate.decode(h("164b33032803"))
    assert Condition(TechnicalKind.LEAD_OFF, False, "no skin contact") in items
    assert [i.value for i in items if isinstance(i, Numeric) and i.metric is Metric.RR] == pytest.approx([799.8046875, 789.0625])


def test_hrm_polar_h7_and_u16_energy() -> None:
    m = heart_rate.parse_hrm(h("063c"))
    assert (m.heart_rate, m.contact, m.energy_kj) == (60, True, None)
    m = heart_rate.parse_hrm(h("0d2c01e803"))  # u16 HR 300, energy 1000 kJ, contact supported but not detected
    assert (m.heart_rate, m.energy_kj, m.contact) == (300, 1000, False)
    assert Condition(TechnicalKind.LEAD_OFF, True, "no skin contact") in heart_rate.decode(h("0d2c01e803"))
    assert heart_rate.parse_hrm(h("0050")).contact is None


@pytest.mark.parametrize("bad", [b"", h("00"), h("01aa"), h("164b330328"), h("004b00"), h("e04b")])
def test_hrm_rejects(bad: bytes) -> None:
    with pytest.raises(ParseError):
        heart_rate.parse_hrm(bad)


# --------------------------------------------------------------------------- blood pressure

def test_bp_vector_full() -> None:
    m = blood_pressure.parse_bpm(h("1e7800500 05d00ea070b1a0a00004800010400".replace(" ", "")))
    assert (m.systolic, m.diastolic, m.mean, m.unit) == (120.0, 80.0, 93.0, "mmHg")
    assert m.timestamp == datetime(2026, 11, 26, 10, 0, 0)
    assert (m.pulse_rate, m.user_id, m.status, m.status_flags) == (72.0, 1, 4, ("irregular_pulse",))
    assert numerics(blood_pressure.decode(h("1e780050005d00ea070b1a0a00004800010400"))) == {
        Metric.SBP: 120.0, Metric.DBP: 80.0, Metric.MAP: 93.0, Metric.PULSE_RATE: 72.0}


def test_icp_vector() -> None:
    m = blood_pressure.parse_bpm(h("003800ff07ff07"))
    assert m.systolic == 56.0 and math.isnan(m.diastolic) and math.isnan(m.mean)
    assert numerics(blood_pressure.decode_icp(h("003800ff07ff07"))) == {Metric.CUFF_PRESSURE: 56.0}


def test_bp_kpa_user_unknown_and_status_bits() -> None:
    # kPa: 16.0/10.7/12.0 kPa (mantissa 160, exponent -1) ; user 0xFF ; status: movement + pulse below range
    data = bytes([0x19]) + h("a0f0") + h("6bf0") + h("78f0") + b"\xff" + (0b10001).to_bytes(2, "little")
    m = blood_pressure.parse_bpm(data)
    assert m.unit == "kPa" and m.user_id is None
    assert m.status_flags == ("body_movement", "pulse_below_range")
    assert numerics(blood_pressure.decode(data))[Metric.SBP] == pytest.approx(120.01, abs=0.01)


@pytest.mark.parametrize("bad", [h("1e780050005d00"), h("02780050005d00ea07"), h("007800500 05d0000".replace(" ", "")), h("80780050005d00")])
def test_bp_rejects(bad: bytes) -> None:
    with pytest.raises(ParseError):
        blood_pressure.parse_bpm(bad)


# --------------------------------------------------------------------------- PLX

def test_plx_spot_check_vector() -> None:
    m = plx.parse_spot_check(h("0facf3bef5e8070b1d170839204022000066e3"))
    assert (m.spo2, m.pulse_rate, m.status, m.device_status, m.pai) == (94.0, 147.0, 0x4020, 0x22, 8.7)
    assert m.timestamp == datetime(2024, 11, 29, 23, 8, 57)
    assert "ongoing" in m.flags and "questionable" in m.flags and "equipment_fault" in m.flags and "low_perfusion" in m.flags


def test_plx_continuous_vector() -> None:
    m = plx.parse_continuous(h("1c5f005a00200000000057f0"))
    assert (m.spo2, m.pulse_rate, m.status, m.pai) == (95.0, 90.0, 0x20, 8.7)
    assert m.flags == ("ongoing",)
    assert numerics(plx.decode_continuous(h("1c5f005a00200000000057f0"))) == {
        Metric.SPO2: 95.0, Metric.PULSE_RATE: 90.0, Metric.PI: 8.7}


def test_plx_continuous_fast_slow_and_sensor_off() -> None:
    data = h("0b") + h("6000") + h("4800") + h("6100") + h("4900") + h("5f00") + h("4700") + (1 << 15).to_bytes(3, "little")
    m = plx.parse_continuous(data)
    assert m.fast == (97.0, 73.0) and m.slow == (95.0, 71.0)
    items = plx.decode_continuous(data)
    assert Condition(TechnicalKind.LEAD_OFF, True, "oximeter sensor off") in items


def test_plx_invalid_status_gives_nan() -> None:
    data = h("04") + h("5f00") + h("5a00") + (1 << 15).to_bytes(2, "little")
    vals = numerics(plx.decode_continuous(data))
    assert math.isnan(vals[Metric.SPO2]) and math.isnan(vals[Metric.PULSE_RATE])


# --------------------------------------------------------------------------- battery

def test_battery() -> None:
    assert battery.parse_battery(b"\x55") == 85
    assert numerics(battery.decode(b"\x0a")) == {Metric.BATTERY: 10.0}
    for bad in (b"", b"\x65", b"\x01\x02"):
        with pytest.raises(ParseError):
            battery.parse_battery(bad)


# --------------------------------------------------------------------------- Polar PMD

def test_pmd_commands() -> None:
    assert polar_pmd.start_command() == h("0200000182000101 0e00".replace(" ", ""))
    assert polar_pmd.stop_command() == h("0300")
    assert polar_pmd.parse_features(h("0f0500")) == {"ecg", "acc"}


def test_pmd_control_responses() -> None:
    ok = polar_pmd.parse_control_response(h("f00200000000"))
    assert ok.ok and ok.op == 2 and ok.status_text == "success"
    busy = polar_pmd.parse_control_response(h("f002000600"))
    assert not busy.ok and busy.status == 6 and busy.status_text == "already in state"
    charger = polar_pmd.parse_control_response(h("f002000d"))
    assert charger.status_text == "device in charger"
    settings = polar_pmd.parse_control_response(h("f001000000" + "0001820001010e00"))
    assert polar_pmd.parse_settings(settings.params) == {0: [130], 1: [14]}
    with pytest.raises(ParseError):
        polar_pmd.parse_control_response(h("0f0500"))


def test_pmd_ecg_frame_vector() -> None:
    f = polar_pmd.parse_frame(h("00daebc39e984352080068000 0ccffffb00400".replace(" ", "")))
    assert [s[0] for s in f.samples] == [104, -52, 1200]
    t = datetime.fromtimestamp(f.timestamp_ns / 1e9, UTC)
    assert t.isoformat(timespec="milliseconds") == "2019-01-01T00:00:23.171+00:00"
    wave = polar_pmd.decode_ecg(h("00daebc39e9843520800680000ccffffb00400"))[0]
    assert isinstance(wave, Wave) and wave.samples == (104, -52, 1200) and wave.device_time_ns == f.timestamp_ns


def test_pmd_delta_frame_hand_built() -> None:
    # reference 100 (2 bytes for 14-bit), one block: width 4, count 3, deltas +1 -2 +3 packed LSB-first
    # nibbles 0x1, 0xE, 0x3 -> 0x3E1 -> bytes e1 03
    data = h("00") + (10**9).to_bytes(8, "little") + h("80") + h("6400") + h("0403") + h("e103")
    f = polar_pmd.parse_frame(data)
    assert f.compressed and [s[0] for s in f.samples] == [100, 101, 99, 102]
    # two channels (ACC-like, 16 bit): ref (-5, 7), width 3, count 2: (+1,-1), (+3,-4)
    bits = 0
    for k, d in enumerate([1, -1, 3, -4]):
        bits |= (d & 0b111) << (3 * k)
    data = h("02") + (10**9).to_bytes(8, "little") + h("81") + (-5).to_bytes(2, "little", signed=True) \
        + (7).to_bytes(2, "little", signed=True) + h("0302") + bits.to_bytes(2, "little")
    f = polar_pmd.parse_frame(data, channels=2, resolution=16)
    assert f.samples == ((-5, 7), (-4, 6), (-1, 2))


def test_pmd_frame_roundtrip_and_rejects() -> None:
    t = 1_700_000_000_000_000_000
    assert polar_pmd.parse_frame(polar_pmd.ecg_frame([1, -2, 300000], t)).samples == ((1,), (-2,), (300000,))
    for bad in (h("00"), h("0000000000000000000068"), h("09" + "00" * 9 + "010203"), h("00" * 10 + "0102")):
        with pytest.raises(ParseError):
            polar_pmd.parse_frame(bad)


# --------------------------------------------------------------------------- CMS50D+

def test_cms50_classic_vector() -> None:
    s = cms50d.parse_classic(h("c53a470861"))
    assert (s.pulse_rate, s.spo2, s.pleth, s.beep, s.signal, s.bar) == (136.0, 97.0, 58, True, 5, 7)


def test_cms50_v46_vector_and_commands() -> None:
    s = cms50d.parse_v46(h("018085ba87c8e18c81"))
    assert (s.pulse_rate, s.spo2, s.pleth) == (72.0, 97.0, 58)
    assert h("7d81a1808080808080") == cms50d.START and h("7d81a2808080808080") == cms50d.STOP


def test_cms50_finger_out_is_nan_and_lead_off() -> None:
    s = cms50d.parse_classic(h("d03a200000"))
    assert s.finger_out and math.isnan(s.spo2) and math.isnan(s.pulse_rate)
    items = cms50d.ClassicStream().feed(h("d03a200000"))
    assert Condition(TechnicalKind.LEAD_OFF, True, "finger out") in items


def test_cms50_classic_stream_resync_counts_corrupt() -> None:
    good = h("c53a470861")
    p = stream_parser("cms50d_classic")
    stream = good + h("3a47") + good + h("c53a47") + good + good[:3]  # junk, truncated packet, partial tail
    items = p.feed(stream[:7]) + p.feed(stream[7:])
    waves = [i for i in items if isinstance(i, Wave)]
    assert sum(len(w.samples) for w in waves) == 3
    assert p.frames == 3 and p.corrupt == 1 and p.skipped_bytes == 2
    assert len(p.buffer) == 3
    assert p.feed(good[3:]) and p.frames == 4


def test_cms50_v46_stream_resync() -> None:
    good = h("018085ba87c8e18c81")
    p = stream_parser("cms50d_v46")
    items = p.feed(good + h("0180858a") + good + h("05" + "80" * 3) + good)
    assert p.frames == 3 and p.corrupt == 1 and p.unknown == 1
    assert numerics(items) == {Metric.SPO2: 97.0, Metric.PULSE_RATE: 72.0, Metric.PI: 2.68}


def test_cms50_numerics_rate_limited() -> None:
    p = cms50d.ClassicStream()
    items = p.feed(h("c53a470861") * 120)
    assert sum(1 for i in items if isinstance(i, Numeric) and i.metric is Metric.SPO2) == 2
    assert sum(len(i.samples) for i in items if isinstance(i, Wave)) == 120


# --------------------------------------------------------------------------- Datex S/5

def test_datex_stuffing_and_checksum() -> None:
    assert datex_s5.stuff(h("017e7d02")) == h("017d5e7d5d02")
    assert datex_s5.unstuff(h("017d5e7d5d02")) == h("017e7d02")
    record = bytes(range(40)) + h("7e7d")
    framed = datex_s5.frame(record)
    assert framed[0] == 0x7E and framed[-1] == 0x7E and 0x7E not in framed[1:-1]
    assert datex_s5.unframe(framed[1:-1]) == record
    with pytest.raises(ParseError):
        datex_s5.unstuff(h("017d01"))


def test_datex_numerics_request_layout() -> None:
    req = datex_s5.numerics_request(interval_s=5)
    assert len(req) == 49
    hdr = datex_s5.parse_header(req)
    assert (hdr.r_len, hdr.maintype, hdr.subrecords) == (49, 0, ((0, 0),))
    assert req[16:22] == h("000000" + "0000ff")
    assert req[40:] == h("01" + "0500" + "01000000" + "0000")


def test_datex_waveform_request_layout() -> None:
    req = datex_s5.waveform_request()
    assert len(req) == 72 and datex_s5.parse_header(req).maintype == 1
    assert req[40:44] == h("00000000") and req[44:52] == h("01ff000000000000")
    assert datex_s5.waveform_request(start=False)[40:42] == h("0100")


def test_datex_displayed_values_hand_built() -> None:
    # basic data: ECG group at 0 (status 3, label 0, hr 72), NIBP group at 72 (sys 12000, dia 8000, mean 9300),
    # SpO2 group at 118 (spo2 9700, pr 71); p1 absent; t1 "not updated"
    data = bytearray(270)
    data[0:4] = (3).to_bytes(4, "little")
    data[6:8] = (72).to_bytes(2, "little")
    data[72:76] = (3).to_bytes(4, "little")
    data[78:84] = (12000).to_bytes(2, "little") + (8000).to_bytes(2, "little") + (9300).to_bytes(2, "little")
    data[118:122] = (1).to_bytes(4, "little")
    data[124:128] = (9700).to_bytes(2, "little") + (71).to_bytes(2, "little")
    data[86:90] = (1).to_bytes(4, "little")
    data[92:94] = (-32766).to_bytes(2, "little", signed=True)
    sub = (1_700_000_000).to_bytes(4, "little") + bytes(data) + bytes(4)
    dv = datex_s5.parse_displayed(sub)
    assert dv.time == 1_700_000_000 and dv.groups["ecg"].values["hr"] == 72.0
    assert dv.groups["nibp"].values == {"sys": 120.0, "dia": 80.0, "mean": 93.0, "hr": 0.0}
    assert math.isnan(dv.groups["t1"].values["temp"]) and dv.groups["t1"].special == {"temp": "not_updated"}
    record = datex_s5.build_header(40 + len(sub), 0, [(0, 1)]) + sub
    vals = numerics(datex_s5.parse_record(record))
    assert vals == {Metric.HR: 72.0, Metric.SBP: 120.0, Metric.DBP: 80.0, Metric.MAP: 93.0,
                    Metric.SPO2: 97.0, Metric.PULSE_RATE: 71.0}


def test_datex_special_values_flagged() -> None:
    rec = datex_s5.numerics_record({"ecg": {"hr": None}, "spo2": {"spo2": 98.0, "pr": 60}})
    items = [i for i in datex_s5.parse_record(rec) if isinstance(i, Numeric)]
    hr = next(i for i in items if i.metric is Metric.HR)
    assert math.isnan(hr.value) and hr.flags == ("invalid",)


def test_datex_waveform_record() -> None:
    rec = datex_s5.waveform_record([(1, [10, -20, 30]), (2, [5])])
    items = datex_s5.parse_record(rec)
    assert items == [Wave("ecg", (100, -200, 300)), Wave("ecg2", (50,))]


def test_datex_stream_resync_and_corrupt() -> None:
    rec = datex_s5.frame(datex_s5.numerics_record({"ecg": {"hr": 80}}))
    bad = bytearray(rec)
    bad[50] ^= 0x01  # checksum now wrong
    p = datex_s5.DatexStream()
    stream = b"\x00\x11" + rec + bytes(bad) + rec[:30]
    items = p.feed(stream)
    assert p.frames == 1 and p.corrupt == 1
    items += p.feed(rec[30:] + rec)
    assert p.frames == 3 and numerics(items)[Metric.HR] == 80.0


def test_registry_names() -> None:
    assert {"heart_rate", "blood_pressure", "cuff_pressure", "plx_spot_check", "plx_continuous", "battery",
            "polar_pmd_ecg", "cms50d_classic", "cms50d_v46", "datex_s5"} <= known_parsers()
    assert packet_parser("battery")(b"\x32")[0] == Numeric(Metric.BATTERY, 50.0)
