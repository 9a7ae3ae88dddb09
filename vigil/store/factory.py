"""Open the record store described by config.toml (path, key file, commit interval, chunk length)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vigil.errors import StoreError
from vigil.store.crypto import load_key
from vigil.store.records import RecordStore

if TYPE_CHECKING:
    from vigil.config import VigilConfig


def open_store(cfg: VigilConfig, *, create_folder: bool = True) -> RecordStore:
    """RecordStore for `cfg.store` (relative paths resolve next to the config file)."""
    path = cfg.resolve_path(cfg.store.path)
    if create_folder and not path.parent.exists():
        try:
            path.parent.mkdir(parents=True, mode=0o750)
        except OSError as exc:
            raise StoreError(f"cannot create record store folder {path.parent}: {exc}") from exc
    key = load_key(cfg, cfg.store.key_file) if cfg.store.key_file else None
    return RecordStore.open(path, key=key, commit_interval_s=cfg.store.commit_interval_s,
                            chunk_seconds=cfg.store.chunk_seconds)
