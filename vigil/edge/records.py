"""Reading recorded signals (WFDB .hea + .dat/.mat, BIDMC CSV) into integer channels and numerics.

Pure loading and derivation; no clock, no asyncio. `vigil.edge.transports.replay` plays the result.

Storage units (see `vigil.model`): ECG in µV integers (gain 1.0), arterial pressure in 0.01 mmHg
(gain 0.01, unit "mmHg"), pleth/resp in thousandths of the record's unit (gain 0.001). Samples the
record marks invalid (WFDB "NaN" digital value, empty CSV cells) become 0 — the replay keeps the
sample clock running, and analysis sees a flat stretch rather than invented beats.

Derived numerics (when the record has no numerics of its own):

* pulse rate at 1 Hz from PLETH: peaks of the band-passed pleth (0.5–8 Hz) over the last 8 s,
  60 / median inter-peak interval;
* cuff readings from ABP every `cuff_interval_s`: systolic/diastolic as the median of beat maxima /
  minima over the preceding `cuff_window_s`, MAP as the mean — what an oscillometric cuff reports
  once per cycle. Implausible windows (pulse pressure < 10 mmHg, SBP outside 40–300) give no reading.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vigil.errors import RecordError
from vigil.model import ChannelKind, Metric

log = logging.getLogger(__name__)

# ECG lead names: limb and augmented leads, precordial V1-V9 (and right-sided V3R-V6R, Frank VX/VY/VZ),
# modified limb leads (MLI-MLIII, ML5), modified chest leads (MCL1, CM5, CC5, CS5, CB5, CR5), Holter D1-D4,
# and anything called ECG/EKG or "lead ...".
_ECG_NAMES = re.compile(r"^(I|II|III|AVR|AVL|AVF|V|V\d{1,2}R?|V[XYZ]|MLI{1,3}|ML\d|MCL\d?|C[MCSBR]\d?|D\d|"
                        r"ECG.*|EKG.*|LEAD\b.*)$", re.I)
# Names of signals that are not ECG even in volts (nstdb's noise1/noise2, EEG, EMG ...), or another kind
_NOT_ECG_NAMES = re.compile(r"^(NOISE|EEG|EOG|EMG|CVP|PAP|ICP|LAP|RAP|SPO2|SAO2|CO2|TEMP|FLOW|PCG|SOUND|STATUS|"
                            r"MARKER|EVENT|TRIGGER|PACE)", re.I)
_VOLTAGE_UNITS = frozenset({"mv", "uv", "µv", "v"})
_KIND_NAMES: list[tuple[re.Pattern[str], ChannelKind]] = [
    (re.compile(r"^(PLETH|PPG|SPO2WAVE)", re.I), ChannelKind.PLETH),
    (re.compile(r"^(ABP|ART|AOBP|BP)$", re.I), ChannelKind.ABP),
    (re.compile(r"^RESP", re.I), ChannelKind.RESP),
]
_UNIT_TO_UV = {"mv": 1000.0, "uv": 1.0, "µv": 1.0, "v": 1e6}


def channel_kind(name: str) -> ChannelKind | None:
    """Classify a record's signal name (ECG leads, PLETH, ABP, RESP); None for anything else."""
    n = name.strip()
    if _ECG_NAMES.match(n):
        return ChannelKind.ECG
    for pat, kind in _KIND_NAMES:
        if pat.match(n):
            return kind
    return None


def ecg_signals(names: list[str], units: list[str]) -> list[int]:
    """Indices of a record's ECG signals in record order: a lead name, or an uninformative name in volts.

    A signal whose name says nothing (qtdb's "record 14046, signal 0", an unknown chest lead) counts as
    ECG when its unit is a voltage (an unset unit is WFDB's default, mV) and its name is not that of
    another kind of signal (PLETH, ABP, RESP, noise, EEG ...).
    """
    out = []
    for i, name in enumerate(names):
        n = name.strip()
        unit = (units[i] if i < len(units) else "") or "mV"
        if _ECG_NAMES.match(n) or (channel_kind(n) is None and not _NOT_ECG_NAMES.match(n)
                                   and unit.strip().lower() in _VOLTAGE_UNITS):
            out.append(i)
    return out


def signal_kinds(names: list[str], units: list[str]) -> list[ChannelKind | None]:
    """`channel_kind` of every signal, with `ecg_signals`' voltage rule for uninformative names."""
    ecg = set(ecg_signals(names, units))
    return [ChannelKind.ECG if i in ecg else channel_kind(n) for i, n in enumerate(names)]


@dataclass(frozen=True, slots=True)
class RecordChannel:
    """One channel of a record in storage units."""

    name: str  # Vigil channel name: "ecg", "pleth", "abp", "resp"
    source_name: str  # the record's signal name, e.g. "MLII"
    kind: ChannelKind
    fs: float
    unit: str
    gain: float  # physical = samples * gain
    samples: npt.NDArray[np.int32]

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.fs

    def physical(self) -> npt.NDArray[np.float64]:
        """Samples in the physical unit."""
        return self.samples.astype(np.float64) * self.gain


@dataclass(frozen=True, slots=True)
class RecordNumeric:
    """A numeric value at `t` seconds from the record's start."""

    t: float
    metric: Metric
    value: float


@dataclass(slots=True)
class Record:
    """A loaded record: its channels (primary ECG first) and numerics sorted by time."""

    path: Path
    channels: list[RecordChannel]
    numerics: list[RecordNumeric] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """Length of the longest channel in seconds."""
        return max((c.duration_s for c in self.channels), default=0.0)

    def channel(self, name: str) -> RecordChannel | None:
        """The channel called `name` ("ecg", "pleth", "abp")."""
        return next((c for c in self.channels if c.name == name), None)


# --------------------------------------------------------------------------- conversion helpers

def _to_storage(kind: ChannelKind, unit: str, physical_per_step: float, digital: npt.NDArray[np.int64],
                baseline: float) -> tuple[npt.NDArray[np.int32], str, float]:
    """Digital samples → (integers in storage units, unit, gain)."""
    x = (digital.astype(np.float64) - baseline) * physical_per_step
    return _physical_to_storage(kind, unit, x)


def _physical_to_storage(kind: ChannelKind, unit: str,
                         x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.int32], str, float]:
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if kind is ChannelKind.ECG:
        scale = _UNIT_TO_UV.get(unit.strip().lower(), 1000.0)
        return np.round(x * scale).astype(np.int32), "uV", 1.0
    if kind is ChannelKind.ABP:
        return np.round(x * 100.0).astype(np.int32), "mmHg", 0.01
    return np.round(x * 1000.0).astype(np.int32), unit or "1", 0.001


def _vigil_names(kinds: list[ChannelKind]) -> list[str]:
    """'ecg', 'ecg2', 'pleth', 'abp', 'abp2' ... in order."""
    seen: dict[str, int] = {}
    names = []
    for k in kinds:
        seen[k.value] = seen.get(k.value, 0) + 1
        names.append(k.value if seen[k.value] == 1 else f"{k.value}{seen[k.value]}")
    return names


def _select(names: list[str], kinds: list[ChannelKind | None], channel: int | str | None,
            path: Path) -> int:
    """Index of the primary ECG: `channel` by index or name, else the first ECG-like signal."""
    if channel is None:
        for i, k in enumerate(kinds):
            if k is ChannelKind.ECG:
                return i
        raise RecordError(f"{path}: no ECG signal among {names}; choose one with `channel`")
    if isinstance(channel, int) or (isinstance(channel, str) and channel.isdigit()):
        i = int(channel)
        if not 0 <= i < len(names):
            raise RecordError(f"{path}: channel index {i} out of range (signals: {names})")
        return i
    for i, n in enumerate(names):
        if n.strip().lower() == str(channel).strip().lower():
            return i
    raise RecordError(f"{path}: no signal named {channel!r} (signals: {names})")


def _assemble(path: Path, fs: float, names: list[str], kinds: list[ChannelKind | None],
              columns: list[tuple[npt.NDArray[np.int32], str, float]], primary: int,
              ecg_leads: int = 1) -> list[RecordChannel]:
    more_ecg = [i for i, k in enumerate(kinds) if i != primary and k is ChannelKind.ECG][:max(0, ecg_leads - 1)]
    order = [primary] + more_ecg + [i for i, k in enumerate(kinds)
                                    if i != primary and k in (ChannelKind.PLETH, ChannelKind.ABP)]
    out_kinds: list[ChannelKind] = [ChannelKind.ECG] + [k for i in order[1:] if (k := kinds[i]) is not None]
    vnames = _vigil_names(out_kinds)
    chans = []
    for vname, kind, i in zip(vnames, out_kinds, order, strict=True):
        samples, unit, gain = columns[i]
        chans.append(RecordChannel(vname, names[i], kind, fs, unit, gain, samples))
    return chans


# --------------------------------------------------------------------------- WFDB

def _wfdb_base(path: Path) -> Path:
    if path.suffix.lower() in (".hea", ".dat", ".mat", ".atr"):
        return path.with_suffix("")
    return path


def load_wfdb(path: str | Path, channel: int | str | None = None, start_s: float = 0.0,
              duration_s: float | None = None, ecg_leads: int = 1) -> Record:
    """Read a WFDB record (.hea with .dat or .mat) as digital samples converted to storage units."""
    base = _wfdb_base(Path(path))
    hea = base.with_name(base.name + ".hea")
    if not hea.is_file():
        raise RecordError(f"{hea}: header file not found")
    import wfdb

    try:
        header = wfdb.rdheader(str(base))
    except Exception as exc:
        raise RecordError(f"{hea}: unreadable WFDB header: {exc}") from None
    files = sorted({f for f in (header.file_name or []) if f})
    for f in files:
        if not (base.parent / f).is_file():
            raise RecordError(f"{base.parent / f}: signal file named in {hea.name} not found")
    _check_sizes(header, base, hea)
    fs = float(header.fs)
    sampfrom = int(round(start_s * fs))
    sampto = None if duration_s is None else sampfrom + int(round(duration_s * fs))
    if header.sig_len and sampfrom >= header.sig_len:
        raise RecordError(f"{hea}: start {start_s:g} s is beyond the record's {header.sig_len / fs:g} s")
    try:
        rec = wfdb.rdrecord(str(base), physical=False, sampfrom=sampfrom,
                            sampto=min(sampto, header.sig_len) if sampto and header.sig_len else sampto,
                            return_res=64)
    except Exception as exc:
        data = base.parent / (files[0] if files else base.name)
        raise RecordError(f"{data}: unreadable WFDB signal data: {type(exc).__name__}: {exc}") from None
    d = rec.d_signal
    if d is None or d.ndim != 2 or d.shape[0] == 0:
        raise RecordError(f"{hea}: record holds no samples")
    names = [str(n) for n in rec.sig_name]
    kinds = signal_kinds(names, [str(u or "mV") for u in rec.units])
    primary = _select(names, kinds, channel, hea)
    columns = []
    for i in range(len(names)):
        kind = ChannelKind.ECG if i == primary else (kinds[i] or ChannelKind.RESP)
        gain = float(rec.adc_gain[i]) or 200.0
        col = d[:, i].astype(np.int64)
        invalid = col == _wfdb_invalid(rec.fmt[i] if rec.fmt else "16")
        samples, unit, g = _to_storage(kind, rec.units[i] or "mV", 1.0 / gain, col, float(rec.baseline[i]))
        samples[invalid] = 0
        columns.append((samples, unit, g))
    chans = _assemble(hea, fs, names, kinds, columns, primary, ecg_leads)
    return Record(base, chans, [])


_BYTES_PER_SAMPLE = {"212": 1.5, "16": 2, "61": 2, "24": 3, "32": 4, "8": 1, "80": 1, "160": 2, "310": 4 / 3,
                     "311": 4 / 3}


def _check_sizes(header: object, base: Path, hea: Path) -> None:
    """RecordError when a signal file is shorter than the header promises (truncated copy)."""
    sig_len = getattr(header, "sig_len", None)
    if not sig_len:
        return
    per_file: dict[str, list[tuple[str, int]]] = {}
    for f, fmt, off in zip(header.file_name or [], header.fmt or [], header.byte_offset or [None] * 99,  # type: ignore[attr-defined]
                           strict=False):
        per_file.setdefault(f, []).append((str(fmt), int(off or 0)))
    for f, sigs in per_file.items():
        bps = [_BYTES_PER_SAMPLE.get(fmt) for fmt, _ in sigs]
        if any(b is None for b in bps):
            continue
        expected = sigs[0][1] + int(sig_len * sum(b for b in bps if b is not None))
        path = base.parent / f
        size = path.stat().st_size
        if size < expected:
            raise RecordError(f"{path}: truncated signal file: {size} bytes, but {hea.name} promises {expected} "
                              f"({sig_len} samples × {len(sigs)} signals, format {sigs[0][0]})")


def _wfdb_invalid(fmt: str) -> int:
    """WFDB's digital "no value" sentinel for a storage format."""
    bits = {"212": 12, "310": 10, "311": 10, "8": 8, "80": 8, "24": 24, "32": 32}.get(str(fmt), 16)
    return -(2 ** (bits - 1))


# --------------------------------------------------------------------------- BIDMC CSV

def _bidmc_paths(path: Path) -> tuple[Path, Path | None]:
    name = path.name
    for suffix in ("_Signals.csv", "_Numerics.csv"):
        if name.endswith(suffix):
            stem = path.with_name(name[: -len(suffix)])
            break
    else:
        stem = path
    sig = stem.with_name(stem.name + "_Signals.csv")
    num = stem.with_name(stem.name + "_Numerics.csv")
    return sig, (num if num.is_file() else None)


def is_bidmc(path: str | Path) -> bool:
    """True when `path` names a BIDMC CSV record (stem or either CSV file)."""
    p = Path(path)
    return p.name.endswith((".csv", "_Signals", "_Numerics")) or _bidmc_paths(p)[0].is_file()


def _read_csv(path: Path) -> tuple[list[str], npt.NDArray[np.float64]]:
    try:
        with path.open(encoding="utf-8") as f:
            header = [h.strip() for h in f.readline().split(",")]
            if len(header) < 2 or not header[0].lower().startswith("time"):
                raise RecordError(f"{path}: not a BIDMC CSV (first column must be 'Time [s]', got {header[:3]})")
            data = np.genfromtxt(f, delimiter=",", dtype=np.float64)
    except RecordError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"{path}: unreadable CSV: {exc}") from None
    if data.ndim == 1:
        data = data.reshape(-1, len(header)) if data.size % len(header) == 0 and data.size else data[None, :]
    if data.shape[0] < 2 or data.shape[1] != len(header):
        raise RecordError(f"{path}: expected rows of {len(header)} columns, got shape {data.shape}")
    return header, data


def load_bidmc(path: str | Path, channel: int | str | None = None, start_s: float = 0.0,
               duration_s: float | None = None, ecg_leads: int = 1) -> Record:
    """Read a BIDMC record: `<stem>_Signals.csv` (125 Hz, mV/NU/mmHg) and `<stem>_Numerics.csv` (1 Hz).

    `ecg_leads` > 1 keeps that many ECG leads ("ecg", then "ecg2", ...), as for WFDB records.
    """
    sig_path, num_path = _bidmc_paths(Path(path))
    if not sig_path.is_file():
        raise RecordError(f"{sig_path}: signals file not found")
    header, data = _read_csv(sig_path)
    t = data[:, 0]
    dt = float(np.median(np.diff(t[:100])))
    if not dt > 0:
        raise RecordError(f"{sig_path}: time column does not increase")
    fs = round(1.0 / dt, 3)
    keep = (t >= start_s - dt / 2) & ((t < start_s + duration_s - dt / 2) if duration_s else True)
    data = data[keep]
    if data.shape[0] == 0:
        raise RecordError(f"{sig_path}: no samples after {start_s:g} s")
    names = header[1:]
    kinds = [channel_kind(n) for n in names]
    primary = _select(names, kinds, channel, sig_path)
    columns = []
    for i, _name in enumerate(names):
        kind = ChannelKind.ECG if i == primary else (kinds[i] or ChannelKind.RESP)
        unit = "mV" if kind is ChannelKind.ECG else ("mmHg" if kind is ChannelKind.ABP else "NU")
        columns.append(_physical_to_storage(kind, unit, data[:, i + 1]))
    chans = _assemble(sig_path, fs, names, kinds, columns, primary, ecg_leads)
    numerics: list[RecordNumeric] = []
    if num_path is not None:
        nh, nd = _read_csv(num_path)
        wanted = {"PULSE": Metric.PULSE_RATE, "SPO2": Metric.SPO2}
        for j, col in enumerate(nh[1:], start=1):
            metric = wanted.get(col.upper())
            if metric is None:
                continue
            for tt, v in zip(nd[:, 0], nd[:, j], strict=True):
                if np.isfinite(v) and start_s <= tt and (duration_s is None or tt < start_s + duration_s):
                    numerics.append(RecordNumeric(float(tt - start_s), metric, float(v)))
        numerics.sort(key=lambda n: n.t)
    return Record(sig_path.with_name(sig_path.name.removesuffix("_Signals.csv")), chans, numerics)


# --------------------------------------------------------------------------- derived numerics

def pulse_rate_from_pleth(x: npt.NDArray[np.float64], fs: float, window_s: float = 8.0) -> list[RecordNumeric]:
    """1 Hz pulse rate from a pleth waveform (median interval of band-passed peaks over `window_s`)."""
    import scipy.signal as sps

    if len(x) < fs * window_s:
        return []
    sos = sps.butter(2, [0.5, min(8.0, fs / 2.5)], btype="bandpass", fs=fs, output="sos")
    y = sps.sosfiltfilt(sos, x - np.median(x))
    out: list[RecordNumeric] = []
    n_sec = int(len(x) / fs)
    for sec in range(int(window_s), n_sec + 1):
        lo, hi = int((sec - window_s) * fs), int(sec * fs)
        seg = y[lo:hi]
        spread = np.percentile(seg, 95) - np.percentile(seg, 5)
        if spread <= 0:
            continue
        peaks, _ = sps.find_peaks(seg, distance=max(1, int(0.3 * fs)), prominence=0.3 * spread)
        if len(peaks) < 3:
            continue
        ibi = np.diff(peaks) / fs
        rate = 60.0 / float(np.median(ibi))
        if 25.0 <= rate <= 250.0:
            out.append(RecordNumeric(float(sec), Metric.PULSE_RATE, round(rate, 1)))
    return out


def cuff_from_abp(mmhg: npt.NDArray[np.float64], fs: float, interval_s: float = 60.0, first_s: float = 10.0,
                  window_s: float = 8.0) -> list[RecordNumeric]:
    """Periodic SBP/DBP/MAP readings (median beat max/min over `window_s` before each reading time)."""
    import scipy.signal as sps

    out: list[RecordNumeric] = []
    t = max(first_s, window_s)
    end = len(mmhg) / fs
    while t <= end + 1e-9:
        seg = mmhg[int((t - window_s) * fs):int(t * fs)]
        seg = seg[np.isfinite(seg)]
        if len(seg) > fs:
            dist = max(1, int(0.3 * fs))
            spread = float(np.percentile(seg, 98) - np.percentile(seg, 2))
            peaks, _ = sps.find_peaks(seg, distance=dist, prominence=max(5.0, 0.3 * spread))
            troughs, _ = sps.find_peaks(-seg, distance=dist, prominence=max(5.0, 0.3 * spread))
            if len(peaks) >= 2 and len(troughs) >= 2:
                sbp, dbp = float(np.median(seg[peaks])), float(np.median(seg[troughs]))
                mean = float(np.mean(seg))
                if 40.0 <= sbp <= 300.0 and sbp - dbp >= 10.0 and dbp > 0:
                    out += [RecordNumeric(t, Metric.SBP, round(sbp)), RecordNumeric(t, Metric.DBP, round(dbp)),
                            RecordNumeric(t, Metric.MAP, round(mean))]
        t += interval_s
    return out


def derive_numerics(rec: Record, cuff_interval_s: float = 60.0, cuff_first_s: float = 10.0) -> Record:
    """Add pulse rate (from PLETH, unless the record has it) and cuff readings (from ABP)."""
    have = {n.metric for n in rec.numerics}
    extra: list[RecordNumeric] = []
    pleth = rec.channel("pleth")
    if pleth is not None and Metric.PULSE_RATE not in have:
        extra += pulse_rate_from_pleth(pleth.physical(), pleth.fs)
    abp = rec.channel("abp")
    if abp is not None and Metric.SBP not in have:
        extra += cuff_from_abp(abp.physical(), abp.fs, cuff_interval_s, cuff_first_s)
    if extra:
        rec.numerics = sorted(rec.numerics + extra, key=lambda n: n.t)
    return rec


def load_record(path: str | Path, channel: int | str | None = None, start_s: float = 0.0,
                duration_s: float | None = None, derive: bool = True, cuff_interval_s: float = 60.0,
                ecg_leads: int = 1) -> Record:
    """Load a WFDB or BIDMC record (chosen by the path) and derive the numerics a monitor would show.

    `ecg_leads` > 1 keeps that many ECG leads of a WFDB record ("ecg", then "ecg2", ...).
    """
    p = Path(path)
    if p.name.endswith((".csv", "_Signals", "_Numerics")) or _bidmc_paths(p)[0].is_file():
        rec = load_bidmc(p, channel, start_s, duration_s)
    else:
        rec = load_wfdb(p, channel, start_s, duration_s, ecg_leads)
    return derive_numerics(rec, cuff_interval_s) if derive else rec
