"""`export_session`: resolve, stage, write one format for one or every guest, audit and announce."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vigil.errors import ExportError, StoreError
from vigil.export.common import (
    FORMATS,
    ExportContext,
    ExportResult,
    Progress,
    find_session,
    has_data,
    operator_name,
    record_export,
    safe_name,
    session_mats,
    staging,
)
from vigil.store.records import RecordStore

log = logging.getLogger(__name__)

_MODULES = {"wfdb": "wfdb_out", "edf": "edf_out", "pdf": "pdf_out", "fhir": "fhir_out", "csv": "csv_out"}


def folder_name(sid: str, mat: str | None, fmt: str) -> str:
    """Name of the output folder: ``<session>_<mat|all>_<format>``."""
    return f"{safe_name(sid)}_{safe_name(mat) if mat else 'all'}_{fmt}"


def export_session(store: RecordStore, session_id: str, fmt: str, out_dir: str | Path, *, mat: str | None = None,
                   from_wall: float | None = None, to_wall: float | None = None, operator: str | None = None,
                   thresholds: Callable[[str], Any] | None = None, progress: Progress | None = None) -> ExportResult:
    """Export one session (one guest or all) in `fmt` into a new folder under `out_dir`; audited."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (choose {', '.join(FORMATS)})")
    if store.encrypted_store and not store.encrypted:
        raise ExportError(f"record store {store.path} is encrypted: configure its key (store.key_file) to export")
    session = find_session(store, session_id)
    who = operator_name(operator)
    t0 = time.perf_counter()
    mats = session_mats(store, session.id)
    try:
        if mat is not None and mat not in mats:
            raise ExportError(f"session {session.id} has no guest on mat {mat!r} (mats: {', '.join(mats) or 'none'})")
        if from_wall is not None and to_wall is not None and to_wall <= from_wall:
            raise ExportError("empty time range: --to must be after --from")
        chosen = [m for m in ([mat] if mat else mats) if has_data(store, session.id, m, from_wall, to_wall)]
        if not chosen:
            what = f"guest {mat}" if mat else "any guest"
            raise ExportError(f"no stored data for {what} of session {session.id} in the chosen range")
        writer = importlib.import_module(f"vigil.export.{_MODULES[fmt]}")
        ctx = ExportContext(store=store, session=session, guests=store.guests(session.id), from_wall=from_wall,
                            to_wall=to_wall, thresholds=thresholds, progress=progress or Progress())
        files: list[Path] = []
        final = Path(out_dir) / folder_name(session.id, mat, fmt)
        with staging(Path(out_dir), final.name) as tmp:
            for m in chosen:
                files += writer.export_guest(ctx, m, tmp)
            ctx.progress.finish()
            result = ExportResult(path=final, files=[final / f.name for f in files],
                                  bytes=sum(f.stat().st_size for f in files), seconds=time.perf_counter() - t0,
                                  guests=chosen, warnings=ctx.warnings)
            # audited (and announced) before the folder appears: an export that cannot be audited is not delivered
            record_export(store, operator=who, session=session, mats=chosen, fmt=fmt, from_wall=from_wall,
                          to_wall=to_wall, result=result)
    except (ExportError, OSError, StoreError) as exc:
        try:
            record_export(store, operator=who, session=session, mats=[mat] if mat else mats, fmt=fmt,
                          from_wall=from_wall, to_wall=to_wall, result=None, error=str(exc))
        except StoreError as exc2:
            log.error("could not audit the refused export: %s", exc2)
        if isinstance(exc, OSError):
            raise ExportError(f"cannot write the export: {exc}") from exc
        raise
    log.info("exported session %s (%d guest(s)) as %s: %d files, %d bytes in %.1f s", session.id, len(chosen),
             fmt, len(result.files), result.bytes, result.seconds)
    return result
