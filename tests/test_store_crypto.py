"""AES-256-GCM sealing of chunks, names and outbox payloads: round trip, tamper, swap, wrong key."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from vigil.config import parse_config
from vigil.errors import ConfigError, IntegrityError, SecretError, StoreError
from vigil.model import ChannelKind, GuestInfo, SampleBlock
from vigil.store import RecordStore
from vigil.store.crypto import Sealer, chunk_aad, load_key, parse_key


def _block(seq: int, n: int = 1000, device: str = "h10", channel: str = "ecg", seed: int = 0) -> SampleBlock:
    rng = np.random.default_rng(seed + seq)
    x = np.cumsum(rng.integers(-50, 50, n)).astype(np.int32)
    return SampleBlock(device, channel, ChannelKind.ECG, 500.0, "uV", 1.0, seq, x, seq / 500, 1.7e9 + seq / 500)


def _store(path: Path, key: bytes | None) -> RecordStore:
    return RecordStore.open(path, key=key, chunk_seconds=2.0)


def test_sealer_round_trip_and_aad() -> None:
    s = Sealer(os.urandom(32))
    blob = s.seal(b"hello", chunk_aad("s1", "d", "ecg", 0))
    assert b"hello" not in blob
    assert s.open(blob, chunk_aad("s1", "d", "ecg", 0)) == b"hello"
    with pytest.raises(IntegrityError, match="failed authentication"):
        s.open(blob, chunk_aad("s1", "d", "ecg", 1000))
    with pytest.raises(IntegrityError):
        Sealer(os.urandom(32)).open(blob, chunk_aad("s1", "d", "ecg", 0))
    with pytest.raises(IntegrityError, match="not an encrypted blob"):
        s.open(b"VW\x01plain", b"")


def test_encrypted_store_round_trip(tmp_path: Path) -> None:
    key = os.urandom(32)
    st = _store(tmp_path / "v.db", key)
    sid = st.start_session("room1", 1.7e9)
    st.upsert_guest(sid, GuestInfo("A1", "Zoë Secretname", 430.0, ("h10",)))
    blocks = [_block(i * 1000) for i in range(3)]
    for b in blocks:
        st.add_block(sid, "A1", b)
    st.enqueue("booking", "guest.checked_in", {"name": "Zoë Secretname"}, "g-A1")
    st.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("v.db*"))
    assert b"Secretname" not in raw  # neither the name nor the outbox payload is in clear
    st = _store(tmp_path / "v.db", key)
    assert st.guests(sid)[0].display_name == "Zoë Secretname"
    got = np.concatenate([b.samples for b in st.iter_chunks(sid)])
    assert np.array_equal(got, np.concatenate([b.samples for b in blocks]))
    assert st.claim("booking")[0].payload == {"name": "Zoë Secretname"}
    st.close()


def _chunk_rows(path: Path) -> list[tuple[int, int, bytes]]:
    with sqlite3.connect(path) as c:
        return [(r[0], r[1], bytes(r[2])) for r in c.execute("SELECT id, seq, data FROM waveform_chunks ORDER BY seq")]


def test_flipped_byte_raises(tmp_path: Path) -> None:
    key = os.urandom(32)
    st = _store(tmp_path / "v.db", key)
    sid = st.start_session("r", 1.7e9)
    for i in range(2):
        st.add_block(sid, "A1", _block(i * 1000))
    st.close()
    rid, _seq, data = _chunk_rows(tmp_path / "v.db")[1]
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x01
    with sqlite3.connect(tmp_path / "v.db") as c:
        c.execute("UPDATE waveform_chunks SET data=? WHERE id=?", (bytes(bad), rid))
    st = _store(tmp_path / "v.db", key)
    it = st.iter_chunks(sid)
    first = next(it)
    assert first.seq == 0  # the untouched chunk still reads
    with pytest.raises(IntegrityError, match=r"waveform chunk h10/ecg@1000 failed authentication"):
        next(it)
    st.close()


def test_swapped_chunks_raise(tmp_path: Path) -> None:
    key = os.urandom(32)
    st = _store(tmp_path / "v.db", key)
    sid = st.start_session("r", 1.7e9)
    for i in range(2):
        st.add_block(sid, "A1", _block(i * 1000))
    st.close()
    (id0, _, d0), (id1, _, d1) = _chunk_rows(tmp_path / "v.db")
    with sqlite3.connect(tmp_path / "v.db") as c:
        c.execute("UPDATE waveform_chunks SET data=? WHERE id=?", (d1, id0))
        c.execute("UPDATE waveform_chunks SET data=? WHERE id=?", (d0, id1))
    st = _store(tmp_path / "v.db", key)
    with pytest.raises(IntegrityError, match="moved to another record"):
        list(st.iter_chunks(sid))
    st.close()


def test_guest_name_moved_between_mats_raises(tmp_path: Path) -> None:
    key = os.urandom(32)
    st = _store(tmp_path / "v.db", key)
    sid = st.start_session("r", 1.7e9)
    st.upsert_guest(sid, GuestInfo("A1", "Alice"))
    st.upsert_guest(sid, GuestInfo("B2", "Bob"))
    st.close()
    with sqlite3.connect(tmp_path / "v.db") as c:
        alice = c.execute("SELECT display_name FROM guests WHERE mat='A1'").fetchone()[0]
        c.execute("UPDATE guests SET display_name=? WHERE mat='B2'", (alice,))
    st = _store(tmp_path / "v.db", key)
    with pytest.raises(IntegrityError, match="guest name on mat B2"):
        st.guests(sid)
    st.close()


def test_wrong_key_and_missing_key(tmp_path: Path) -> None:
    key = os.urandom(32)
    st = _store(tmp_path / "v.db", key)
    sid = st.start_session("r", 1.7e9)
    st.add_block(sid, "A1", _block(0))
    st.close()
    with pytest.raises(IntegrityError, match="not the key this store was written with"):
        _store(tmp_path / "v.db", os.urandom(32))
    st = _store(tmp_path / "v.db", None)  # opens (sessions list works) but refuses encrypted payloads
    assert [s.id for s in st.sessions()] == [sid]
    with pytest.raises(StoreError, match="encrypted and no store key"):
        list(st.iter_chunks(sid))
    with pytest.raises(StoreError, match="refusing to write"):
        st.upsert_guest(sid, GuestInfo("A1", "Alice"))
    st.close()


def test_plain_store_round_trip(tmp_path: Path) -> None:
    st = _store(tmp_path / "v.db", None)
    sid = st.start_session("r", 1.7e9)
    st.upsert_guest(sid, GuestInfo("A1", "Alice"))
    b = _block(0)
    st.add_block(sid, "A1", b)
    st.close()
    assert b"Alice" in b"".join(p.read_bytes() for p in tmp_path.glob("v.db*"))  # the clear case is visible
    st = _store(tmp_path / "v.db", None)
    assert st.guests(sid)[0].display_name == "Alice"
    assert np.array_equal(next(st.iter_chunks(sid)).samples, b.samples)
    st.close()


def test_key_parsing_and_loading(tmp_path: Path) -> None:
    raw = bytes(range(32))
    assert parse_key(raw) == raw
    assert parse_key(raw.hex().encode() + b"\n") == raw
    assert parse_key(b"\n" * 32) == b"\n" * 32  # raw bytes that happen to be whitespace stay intact
    with pytest.raises(ConfigError, match="32 raw bytes or 64 hex"):
        parse_key(b"short")
    (tmp_path / "config.toml").write_text('[site]\nname = "x"\nroom = "r1"\n[store]\nkey_file = "store.key"\n')
    cfg = parse_config((tmp_path / "config.toml").read_text(), tmp_path / "config.toml")
    keyfile = tmp_path / "store.key"
    keyfile.write_bytes(b" " + raw[1:31] + b"\n")  # raw key starting/ending with whitespace bytes
    keyfile.chmod(0o600)
    assert load_key(cfg, "store.key") == b" " + raw[1:31] + b"\n"
    keyfile.chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_key(cfg, "store.key")


def test_forged_clear_rows_and_edited_metadata_raise(tmp_path: Path) -> None:
    from vigil.store import codec

    key = os.urandom(32)
    st = _store(tmp_path / "v.db", key)
    sid = st.start_session("r", 1.7e9)
    st.upsert_guest(sid, GuestInfo("A1", "Alice"))
    for i in range(3):
        st.add_block(sid, "A1", _block(i * 1000))
    st.close()
    (id0, _, _), (id1, _, _), _ = _chunk_rows(tmp_path / "v.db")
    with sqlite3.connect(tmp_path / "v.db") as c:
        # a forger without the key writes a valid clear chunk and flags it unencrypted
        c.execute("UPDATE waveform_chunks SET data=?, encrypted=0 WHERE id=?",
                  (codec.encode(np.zeros(1000, np.int32)), id0))
        c.execute("UPDATE waveform_chunks SET gain=10.0 WHERE id=?", (id1,))  # metadata edit
        c.execute("UPDATE guests SET display_name=? WHERE mat='A1'", (b"Mallory",))
    st = _store(tmp_path / "v.db", key)
    with pytest.raises(IntegrityError, match="stored in clear in an encrypted store"):
        list(st.iter_chunks(sid))
    with pytest.raises(IntegrityError, match="failed authentication"):
        list(st.iter_chunks(sid, from_wall=1.7e9 + 1.5, to_wall=1.7e9 + 2.5))  # only the gain-edited chunk
    assert [b.seq for b in st.iter_chunks(sid, from_wall=1.7e9 + 3.5)] == [2000]  # the untouched one reads
    with pytest.raises(IntegrityError, match="guest name on mat A1 is stored in clear"):
        st.guests(sid)
    st.close()


def test_key_added_to_a_clear_store(tmp_path: Path) -> None:
    st = _store(tmp_path / "v.db", None)
    sid = st.start_session("r", 1.7e9)
    old = _block(0)
    st.add_block(sid, "A1", old)
    st.close()
    key = os.urandom(32)
    st = _store(tmp_path / "v.db", key)
    new = _block(1000)
    st.add_block(sid, "A1", new)
    st.close()
    st = _store(tmp_path / "v.db", key)
    got = list(st.iter_chunks(sid))
    assert [b.seq for b in got] == [0, 1000]  # older clear rows stay readable, newer ones are sealed
    assert np.array_equal(got[1].samples, new.samples)
    st.close()
    with sqlite3.connect(tmp_path / "v.db") as c:
        assert c.execute("SELECT encrypted FROM waveform_chunks ORDER BY seq").fetchall() == [(0,), (1,)]
