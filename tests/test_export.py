"""Clinician export (issue 8): real records replayed through the live pipeline into an encrypted SQLite
store (two guests, a 5-s link loss on both ECG streams), then exported and read back with the formats'
own readers: wfdb, edfio, pyEDFlib, fhir.resources, pdftoppm."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vigil.benchmarks.bench_export import START_WALL, Built, GuestSpec, build_session
from vigil.cli import main as cli_main
from vigil.datasets import vendored
from vigil.errors import ExportError, IntegrityError
from vigil.export.api import export_session
from vigil.export.common import Progress, parse_time
from vigil.store import RecordStore

KEY = bytes(range(32))
SECONDS = 90.0
GAP = (40.0, 45.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """119 on A1 and v221l (ECG + pleth + ABP, true VT at 300 s) on A3, 90 s, gap 40-45 s, encrypted."""
    root = tmp_path_factory.mktemp("export")
    return build_session(root / "vigil.db", [GuestSpec("A1", str(vendored("119")), name="Ada Example"),
                                             GuestSpec("A3", str(vendored("v221l")), name="Bo Example",
                                                       start_s=240, channel="II")],
                         seconds=SECONDS, key=KEY, gap=GAP)


@pytest.fixture
def store(built: Built, tmp_path: Path) -> RecordStore:
    """A private copy of the built store (exports write audit and outbox rows)."""
    db = tmp_path / "vigil.db"
    shutil.copy(built.db, db)
    st = RecordStore.open(db, key=KEY)
    yield st
    st.close()


def _stored(store: RecordStore, sid: str, mat: str, channel: str = "ecg") -> list[tuple[int, np.ndarray]]:
    """Contiguous stored runs (first seq, samples) of one guest's channel, straight from the store's reader."""
    runs: list[tuple[int, list[np.ndarray]]] = []
    end = None
    for b in store.iter_chunks(sid, mat, channel):
        if end != b.seq:
            runs.append((b.seq, []))
        runs[-1][1].append(b.samples)
        end = b.end_seq
    return [(s, np.concatenate(parts)) for s, parts in runs]


# ------------------------------------------------------------------ WFDB

def test_wfdb_reads_back_sample_for_sample_with_beats_rhythm_and_alarm_notes(store: RecordStore, built: Built,
                                                                             tmp_path: Path) -> None:
    import wfdb

    res = export_session(store, built.sid, "wfdb", tmp_path / "out", mat="A3", operator="doc")
    runs = _stored(store, built.sid, "A3")
    assert len(runs) == 2, "the link loss must split the ECG into two stored runs"
    gap = next(g for g in store.gaps(built.sid) if g.device_id == "A3-ecg")
    assert runs[0][0] + len(runs[0][1]) == gap.from_seq and runs[1][0] == gap.to_seq
    beats = [b for _m, b in store.beats(built.sid, "A3")]
    seen_beats = 0
    for i, (seq0, x) in enumerate(runs, start=1):
        base = str(res.path / f"A3_ecg_s{i:02d}")
        rec = wfdb.rdrecord(base, physical=False)
        assert rec.fs == 250 and rec.units == ["mV"] and rec.adc_gain == [1000.0] and rec.baseline == [0]
        assert rec.fmt == ["16"]
        np.testing.assert_array_equal(rec.d_signal[:, 0], x)  # sample for sample, no padding
        phys = wfdb.rdrecord(base)
        np.testing.assert_allclose(phys.p_signal[:, 0], x / 1000.0, atol=1e-9)  # store µV -> mV
        ann = wfdb.rdann(base, "atr")
        seg_beats = [b for b in beats if seq0 <= b.sample < seq0 + len(x)]
        got = [(int(s), sym) for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in "NVSFQ"]
        assert got == [(b.sample - seq0, b.label) for b in seg_beats]
        seen_beats += len(got)
        notes = [a for a, sym in zip(ann.aux_note, ann.symbol, strict=True) if sym == '"']
        rhythm = [a for a, sym in zip(ann.aux_note, ann.symbol, strict=True) if sym == "+"]
        assert all(n.startswith("ALARM ") for n in notes)
        assert all(r.startswith("(") for r in rhythm)
    assert seen_beats == len(beats) > 50
    all_notes = []
    all_rhythm = []
    for i in (1, 2):
        ann = wfdb.rdann(str(res.path / f"A3_ecg_s{i:02d}"), "atr")
        all_notes += [a for a, sym in zip(ann.aux_note, ann.symbol, strict=True) if sym == '"']
        all_rhythm += [a for a, sym in zip(ann.aux_note, ann.symbol, strict=True) if sym == "+"]
    assert "ALARM raised vt high" in all_notes and "(VT" in all_rhythm
    assert any(n.startswith("ALARM acknowledged") and n.endswith("by lead") for n in all_notes)
    # the multi-segment record over the whole stream: the lost samples read back as NaN, never invented
    whole = wfdb.rdrecord(str(res.path / "A3_ecg"))
    lost = gap.to_seq - gap.from_seq
    assert whole.sig_len == len(runs[0][1]) + lost + len(runs[1][1])
    nan = np.isnan(whole.p_signal[:, 0])
    assert nan.sum() == lost and nan[len(runs[0][1]):len(runs[0][1]) + lost].all()
    np.testing.assert_allclose(whole.p_signal[~nan, 0], np.concatenate([x for _s, x in runs]) / 1000.0, atol=1e-9)
    # pleth and ABP are exported too, in their stored units
    rec = wfdb.rdrecord(str(res.path / "A3_abp_s01"), physical=False)
    np.testing.assert_array_equal(rec.d_signal[:, 0], _stored(store, built.sid, "A3", "abp")[0][1])
    assert rec.units == ["mmHg"] and rec.adc_gain == [100.0]


def test_wfdb_switches_to_format_32_when_samples_exceed_16_bits(tmp_path: Path) -> None:
    import wfdb

    from vigil.export.reader import Segment
    from vigil.export.wfdb_out import DatWriter, write_header

    x = np.array([0, 100, -200, 30000], np.int32)
    y = np.array([40000, -50000, 7], np.int32)
    dat = DatWriter(tmp_path / "r.dat")
    dat.write(x)
    dat.write(y)
    dat.close()
    seg = Segment("d", "ecg", "ecg", 250.0, "uV", 1.0, 0, 7, [7], [START_WALL])
    write_header(tmp_path / "r.hea", "r", seg, dat, "ECG")
    rec = wfdb.rdrecord(str(tmp_path / "r"), physical=False)
    assert rec.fmt == ["32"]
    np.testing.assert_array_equal(rec.d_signal[:, 0], np.concatenate([x, y]))


# ------------------------------------------------------------------ EDF+

def test_edf_segments_read_with_edfio_and_pyedflib_exactly_and_gaps_are_not_padded(store: RecordStore, built: Built,
                                                                                  tmp_path: Path) -> None:
    import edfio
    import pyedflib

    res = export_session(store, built.sid, "edf", tmp_path / "out", mat="A1", operator="doc")
    runs = _stored(store, built.sid, "A1")
    assert [f.name for f in res.files] == ["A1_ecg_s01.edf", "A1_ecg_s02.edf"]
    starts = []
    texts: list[str] = []
    for f, (_seq0, x) in zip(res.files, runs, strict=True):
        with open(f, "rb") as fh:
            assert fh.read(256)[192:197] == b"EDF+C"
        e = edfio.read_edf(f)
        sig = e.signals[0]
        assert sig.label == "ECG ecg" and sig.physical_dimension == "uV" and sig.sampling_frequency == 360
        np.testing.assert_allclose(sig.data, x, atol=1e-6)  # physical µV = stored integers, no padded tail
        r = pyedflib.EdfReader(str(f))
        try:
            np.testing.assert_array_equal(r.readSignal(0, digital=True), x)
            onsets, _d, ann = r.readAnnotations()
            texts += list(ann)
        finally:
            r.close()
        starts.append(e.starttime.hour * 3600 + e.starttime.minute * 60 + e.starttime.second
                      + e.starttime.microsecond / 1e6)
        assert len(x) % round(e.data_record_duration * 360) == 0
    # the second file starts after the lost 5 s: gap kept as time, not as samples
    first_len = len(runs[0][1]) / 360
    assert starts[1] - starts[0] == pytest.approx(first_len + (GAP[1] - GAP[0]), abs=0.5)
    assert any(t.startswith("ALARM raised ventricular_ectopy") for t in texts)
    assert any(t.startswith("rhythm ") for t in texts)


def test_edf_record_layout_never_needs_a_padded_record() -> None:
    from vigil.export.edf_out import record_layout

    assert record_layout(360 * 3600, 360.0) == (360, "1", True)
    for n, fs in ((14310, 360.0), (27090, 360.0), (9982, 250.0), (130 * 61 + 13, 130.0), (1_000_003, 250.0)):
        spr, text, exact = record_layout(n, fs)
        assert n % spr == 0
        if exact:
            assert float(text) * fs == pytest.approx(spr, abs=1e-6)
    spr, _t, _e = record_layout(1_000_003, 250.0)  # a prime count: one data record holds the segment
    assert spr == 1_000_003


# ------------------------------------------------------------------ CSV, FHIR

def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_csv_numerics_and_beats_match_the_store(store: RecordStore, built: Built, tmp_path: Path) -> None:
    res = export_session(store, built.sid, "csv", tmp_path / "out", mat="A3", operator="doc")
    beats = _rows(res.path / "A3_beats.csv")
    stored = [b for _m, b in store.beats(built.sid, "A3")]
    assert [(int(r["sample"]), r["label"]) for r in beats] == [(b.sample, b.label) for b in stored]
    num = _rows(res.path / "A3_numerics.csv")
    sbp = [float(r["value"]) for r in num if r["metric"] == "sbp" and r["value"]]
    assert sbp == [r.value for _m, r in store.readings(built.sid, "A3", metric="sbp") if not math.isnan(r.value)]
    assert len(sbp) >= 1
    hr = [r for r in num if r["metric"] == "hr" and r["source"] == "analysis:ecg"]
    assert len(hr) == sum(1 for _m, m in store.measurements(built.sid, "A3", metric="hr"))
    walls = [float(r["unix_s"]) for r in num]
    assert walls == sorted(walls)
    alarms = _rows(res.path / "A3_alarms.csv")
    assert len(alarms) == sum(1 for _ in store.alarm_events(built.sid, "A3"))


def test_fhir_bundle_validates_and_carries_stored_strips(store: RecordStore, built: Built, tmp_path: Path) -> None:
    from vigil.sync.fhir_mapping import validate_bundle

    res = export_session(store, built.sid, "fhir", tmp_path / "out", mat="A3", operator="doc")
    bundle = json.loads((res.path / "A3_fhir_bundle.json").read_text())
    validate_bundle(bundle)
    assert bundle["type"] == "transaction"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds[:2] == ["Patient", "Encounter"] and kinds.count("DiagnosticReport") == 1
    obs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    codes = {c["code"] for o in obs for c in o["code"]["coding"]}
    assert {"8867-4", "85354-9", "131330"} <= codes  # HR, BP panel, ECG lead II
    strips = [o for o in obs if "valueSampledData" in o]
    raised = [e for e in store.alarm_events(built.sid, "A3") if e.event == "raised"]
    assert 0 < len(strips) <= len(raised)
    data = np.array([int(v) for v in strips[0]["valueSampledData"]["data"].split()])
    stored = np.concatenate([x for _s, x in _stored(store, built.sid, "A3")])
    hits = [i for i in range(len(stored) - len(data) + 1) if np.array_equal(stored[i:i + len(data)], data)]
    assert hits, "the strip must be a verbatim slice of the stored ECG"
    report = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert f"vt x{sum(1 for e in raised if e.condition == 'vt')}" in report["conclusion"]


# ------------------------------------------------------------------ PDF

def _png_pages(pdf: Path, tmp: Path, dpi: int = 50) -> list[np.ndarray]:
    import matplotlib.image as mpimg

    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", str(pdf), str(tmp / "pg")], check=True)
    return [mpimg.imread(p) for p in sorted(tmp.glob("pg-*.png"))]


def test_pdf_report_pages_render_with_grid_strips_and_bands(store: RecordStore, built: Built, tmp_path: Path) -> None:
    from vigil.export.pdf_out import STRIPS_PER_PAGE

    res = export_session(store, built.sid, "pdf", tmp_path / "out", mat="A3", operator="doc",
                         thresholds=built.cfg.thresholds_for)
    raised = [e for e in store.alarm_events(built.sid, "A3") if e.event == "raised"]
    pages = _png_pages(res.files[0], tmp_path)
    assert len(pages) == 2 + math.ceil(len(raised) / STRIPS_PER_PAGE)
    for img in pages:
        assert img.shape[:2] == (pytest.approx(413, abs=2), pytest.approx(585, abs=2))  # A4 landscape at 50 dpi
        rgb = img[..., :3]
        assert (rgb.sum(axis=2) < 1.0).mean() > 0.001, "page is blank"

    def share(img: np.ndarray, colour: str) -> float:
        c = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        return float((np.abs(img[..., :3] - c).max(axis=2) < 0.06).mean())

    strip_pages = pages[2:]
    assert all(share(p, "#e74c3c") > 0.002 for p in strip_pages)  # 5-mm grid lines
    assert share(pages[0], "#e74c3c") < 0.0005 and share(pages[1], "#f8c4c4") > 0.02  # bands on the trends
    # physical scale: at 127 dpi 1 mm = 5 px, so the 5-mm lines must repeat every 25 px over the 250-mm strip
    hi = tmp_path / "hi"
    hi.mkdir()
    subprocess.run(["pdftoppm", "-r", "127", "-png", "-f", "3", "-l", "3", str(res.files[0]), str(hi / "s")], check=True)
    import matplotlib.image as mpimg

    img = mpimg.imread(next(hi.glob("s*.png")))[..., :3]
    major = (np.abs(img - np.array([0xE7, 0x4C, 0x3C]) / 255).max(axis=2) < 0.08)
    cols = np.flatnonzero(major.mean(axis=0) > 0.15)
    centres = [g.mean() for g in np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1) if len(g)]
    assert len(centres) == 51  # 0, 5, ..., 250 mm
    assert np.median(np.diff(centres)) == pytest.approx(25.0, abs=0.6)
    text = subprocess.run(["pdftotext", "-layout", str(res.files[0]), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "Bo Example" in text and "25 mm/s, 10 mm/mV" in text and "not acknowledged" in text
    assert "on-call sms sent" in text  # the escalation attempt
    assert "1 gap(s), not padded" in text


# ------------------------------------------------------------------ access, audit, outbox

def test_every_export_is_audited_and_announced_to_booking(store: RecordStore, built: Built, tmp_path: Path) -> None:
    last = max((a.id for a in store.audit_entries()), default=0)
    export_session(store, built.sid, "csv", tmp_path / "out", mat="A1", operator="dr_who")
    with pytest.raises(ExportError, match="no guest on mat 'Z9'"):
        export_session(store, built.sid, "csv", tmp_path / "out", mat="Z9", operator="dr_who")
    entries = [a for a in store.audit_entries(since_id=last)]
    assert [(a.actor, a.action) for a in entries] == [("dr_who", "export"), ("dr_who", "export.refused")]
    assert entries[0].detail["format"] == "csv" and entries[0].detail["guests"] == ["A1"]
    assert "Ada" not in json.dumps([a.detail for a in entries])  # no PHI in the audit log
    rows = store.claim("booking", 100)
    ev = [r for r in rows if r.event_type == "export.created"]
    assert len(ev) == 1
    p = ev[0].payload
    assert p["type"] == "export.created" and p["id"] == ev[0].idempotency_key == entries[0].detail["event_id"]
    assert p["data"]["operator"] == "dr_who" and p["data"]["session_id"] == built.sid and p["data"]["files"] == 4


def test_bad_input_gives_clear_errors_and_no_output(store: RecordStore, built: Built, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="unknown session 'nope'.*vigil sessions"):
        export_session(store, "nope", "wfdb", out)
    with pytest.raises(ExportError, match="no guest on mat 'B7'.*A1, A3"):
        export_session(store, built.sid, "wfdb", out, mat="B7")
    with pytest.raises(ExportError, match="no stored data"):
        export_session(store, built.sid, "wfdb", out, mat="A1", from_wall=START_WALL + 5000, to_wall=START_WALL + 6000)
    with pytest.raises(ExportError, match="--to must be after --from"):
        export_session(store, built.sid, "wfdb", out, from_wall=START_WALL + 60, to_wall=START_WALL + 30)
    assert not out.exists() or not any(out.iterdir())


def test_missing_and_wrong_key(built: Built, tmp_path: Path) -> None:
    shutil.copy(built.db, tmp_path / "v.db")
    st = RecordStore.open(tmp_path / "v.db")  # no key
    try:
        with pytest.raises(ExportError, match="encrypted: configure its key"):
            export_session(st, built.sid, "wfdb", tmp_path / "out")
    finally:
        st.close()
    with pytest.raises(IntegrityError, match="not the key this store was written with"):
        RecordStore.open(tmp_path / "v.db", key=bytes(32))


def test_a_failing_export_leaves_nothing_that_looks_complete(store: RecordStore, built: Built, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from vigil.export import wfdb_out

    calls = {"n": 0}
    real = wfdb_out.write_header

    def flaky(*a: object, **k: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(wfdb_out, "write_header", flaky)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="No space left"):
        export_session(store, built.sid, "wfdb", out, operator="doc")
    assert list(out.iterdir()) == []  # staging folder removed, no final folder
    monkeypatch.setattr(wfdb_out, "write_header", real)
    res = export_session(store, built.sid, "wfdb", out, operator="doc")
    assert res.path.is_dir() and [p.name for p in out.iterdir()] == [res.path.name]
    with pytest.raises(ExportError, match="already exists"):
        export_session(store, built.sid, "wfdb", out, operator="doc")


def test_time_range_clips_samples_to_the_window(store: RecordStore, built: Built, tmp_path: Path) -> None:
    import wfdb

    start = store.session(built.sid).started_wall  # type: ignore[union-attr]
    lo, hi = parse_time("+10s", start), parse_time("+30s", start)
    res = export_session(store, built.sid, "wfdb", tmp_path / "out", mat="A1", from_wall=lo, to_wall=hi)
    rec = wfdb.rdrecord(str(res.path / "A1_ecg"), physical=False)
    assert rec.sig_len == pytest.approx(20 * 360, abs=2)
    full = _stored(store, built.sid, "A1")[0][1]
    i = next(i for i in range(len(full)) if np.array_equal(full[i:i + 50], rec.d_signal[:50, 0]))
    np.testing.assert_array_equal(full[i:i + rec.sig_len], rec.d_signal[:, 0])
    assert i / 360 == pytest.approx(10.0, abs=0.3)  # arrival-time accuracy: one 0.25-s block


def test_parse_time_forms() -> None:
    s = 1_795_000_000.0
    assert parse_time("+1h30m", s) == s + 5400
    assert parse_time("+45s", s) == s + 45
    assert parse_time("1795000123.5", s) == 1795000123.5
    assert parse_time("2026-11-18T11:06:40Z", s) == 1795000000.0
    assert parse_time("2026-11-18T11:06:40", s) == 1795000000.0  # naive = UTC
    with pytest.raises(ExportError, match="cannot read time"):
        parse_time("tomorrow", s)


def test_progress_bar_draws_on_its_stream() -> None:
    buf = io.StringIO()
    p = Progress(enabled=True, stream=buf, interval_s=0.0, label="export wfdb")
    p.add_total(100)
    p.advance(50)
    p.finish()
    assert " 50.0%" in buf.getvalue() and "100.0%" in buf.getvalue() and buf.getvalue().endswith("\n")
    quiet = io.StringIO()
    Progress(enabled=False, stream=quiet).advance(5)
    assert quiet.getvalue() == ""


# ------------------------------------------------------------------ CLI

def _config(tmp: Path, db: Path) -> Path:
    key = tmp / "store.key"
    key.write_text(KEY.hex())
    key.chmod(0o600)
    cfg = tmp / "config.toml"
    cfg.write_text(f'[site]\nname = "t"\nroom = "room1"\n[store]\npath = "{db}"\nkey_file = "store.key"\n')
    return cfg


def test_cli_sessions_and_export(built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "vigil.db"
    shutil.copy(built.db, db)
    cfg = _config(tmp_path, db)
    assert cli_main(["sessions", "--config", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (s,) = doc["sessions"]
    assert s["id"] == built.sid and s["guests"] == ["A1", "A3"] and s["end"] is not None
    assert s["ecg_hours"] == pytest.approx(2 * (SECONDS - 5) / 3600, abs=0.002)
    assert cli_main(["sessions", "--config", str(cfg)]) == 0
    assert built.sid in capsys.readouterr().out
    rc = cli_main(["export", built.sid[:12], "--config", str(cfg), "-f", "csv", "-o", str(tmp_path / "o"),
                   "--guest", "A1", "--from", "+0s", "--to", "+60s", "--operator", "nurse", "--progress", "--json"])
    cap = capsys.readouterr()
    assert rc == 0 and "100.0%" in cap.err
    assert json.loads(cap.out)["guests"] == ["A1"]
    assert cli_main(["export", "nope", "--config", str(cfg), "-f", "csv", "-o", str(tmp_path / "o")]) == 2
    assert "unknown session 'nope'" in capsys.readouterr().err
    (tmp_path / "store.key").write_text(bytes(32).hex())
    assert cli_main(["export", built.sid, "--config", str(cfg), "-f", "csv", "-o", str(tmp_path / "o2")]) == 2
    assert "not the key this store was written with" in capsys.readouterr().err
    (tmp_path / "store.key").unlink()
    assert cli_main(["export", built.sid, "--config", str(cfg), "-f", "csv", "-o", str(tmp_path / "o3")]) == 2
    assert "store.key" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


def test_an_export_that_cannot_be_audited_is_not_delivered(store: RecordStore, built: Built, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from vigil.store.records import StoreWriteError

    def full(*_a: object, **_k: object) -> None:
        raise StoreWriteError("record store: the disk is full", "full")

    monkeypatch.setattr(store, "audit", full)
    out = tmp_path / "out"
    with pytest.raises(StoreWriteError, match="disk is full"):
        export_session(store, built.sid, "csv", out, mat="A1", operator="doc")
    assert list(out.iterdir()) == []


def test_a_tampered_chunk_stops_the_export_and_is_audited(built: Built, tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "v.db"
    shutil.copy(built.db, db)
    with sqlite3.connect(db) as c:
        rid, data = c.execute("SELECT id, data FROM waveform_chunks WHERE mat='A1' ORDER BY seq LIMIT 1 OFFSET 3"
                              ).fetchone()
        blob = bytearray(data)
        blob[-5] ^= 0x01
        c.execute("UPDATE waveform_chunks SET data=? WHERE id=?", (bytes(blob), rid))
    st = RecordStore.open(db, key=KEY)
    try:
        with pytest.raises(IntegrityError):
            export_session(st, built.sid, "edf", tmp_path / "out", mat="A1", operator="doc")
        assert list((tmp_path / "out").iterdir()) == []
        last = list(st.audit_entries())[-1]
        assert last.action == "export.refused" and "waveform chunk" in last.detail["error"]
    finally:
        st.close()


def test_a_chunk_stored_twice_is_exported_once(tmp_path: Path) -> None:
    import wfdb

    from vigil.model import ChannelKind, GuestInfo, SampleBlock

    st = RecordStore.open(tmp_path / "v.db")
    sid = st.start_session("room1", START_WALL)
    st.upsert_guest(sid, GuestInfo("A1", "X", None, ("h10",)))
    x = (np.arange(2000) % 97 * 10 - 480).astype(np.int32)

    def block(lo: int, hi: int, data: np.ndarray) -> SampleBlock:
        return SampleBlock("h10", "ecg", ChannelKind.ECG, 250.0, "uV", 1.0, lo, data[lo:hi], 0.0,
                           START_WALL + hi / 250)

    st.add_block(sid, "A1", block(0, 1000, x))
    st.flush()
    st.add_block(sid, "A1", block(500, 700, x + 1))  # a resent block overlapping what is stored
    st.flush()
    st.add_block(sid, "A1", block(1000, 2000, x))
    st.end_session(sid, START_WALL + 8)
    st.flush()
    res = export_session(st, sid, "wfdb", tmp_path / "out", mat="A1")
    st.close()
    rec = wfdb.rdrecord(str(res.path / "A1_ecg"), physical=False)
    np.testing.assert_array_equal(rec.d_signal[:, 0], x)
