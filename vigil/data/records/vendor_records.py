"""Rebuild the vendored demo records from the PhysioNet originals (run once; see ATTRIBUTION.md).

Usage: python vigil/data/records/vendor_records.py [SOURCE_DATA_ROOT]
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MITDB_SECONDS = 600  # first 10 minutes of each MIT-BIH record
BIDMC_SECONDS = 300  # first 5 minutes of the BIDMC record


def _trim_wfdb(src: Path, name: str, seconds: int) -> None:
    import numpy as np
    import wfdb

    rec = wfdb.rdrecord(str(src / name), physical=False, sampto=int(360 * seconds))
    wfdb.wrsamp(name, fs=rec.fs, units=rec.units, sig_name=rec.sig_name, d_signal=rec.d_signal,
                fmt=rec.fmt, adc_gain=rec.adc_gain, baseline=rec.baseline, comments=rec.comments,
                write_dir=str(HERE))
    ann = wfdb.rdann(str(src / name), "atr", sampto=int(rec.fs * seconds))
    keep = ann.sample < rec.sig_len
    wfdb.wrann(name, "atr", ann.sample[keep], symbol=list(np.asarray(ann.symbol)[keep]),
               aux_note=list(np.asarray(ann.aux_note)[keep]), fs=rec.fs, write_dir=str(HERE))


def _trim_csv(src: Path, dst: Path, seconds: float) -> None:
    with src.open(newline="") as fin, dst.open("w", newline="") as fout:
        reader, writer = csv.reader(fin), csv.writer(fout, lineterminator="\n")
        writer.writerow(next(reader))
        for row in reader:
            if float(row[0]) >= seconds:
                break
            writer.writerow(row)


def main(root: Path) -> None:
    """Write the trimmed copies next to this file."""
    for name in ("119", "203"):
        _trim_wfdb(root / "mitdb", name, MITDB_SECONDS)
    for ext in (".hea", ".mat"):
        shutil.copyfile(root / "challenge2015" / f"v221l{ext}", HERE / f"v221l{ext}")
    for kind in ("Signals", "Numerics"):
        _trim_csv(root / "bidmc" / f"bidmc_04_{kind}.csv", HERE / f"bidmc_04_{kind}.csv", BIDMC_SECONDS)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[3] / "shared" / "data")
