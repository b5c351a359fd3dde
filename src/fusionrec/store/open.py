"""Open the event store the way every command does: key from the environment, clear errors."""

from __future__ import annotations

from pathlib import Path

from fusionrec.config import read_secrets
from fusionrec.errors import FusionrecError
from fusionrec.store.event_store import EventStore

__all__ = ["open_store"]


def open_store(path: Path | str, must_exist: bool = False, read_only: bool = False) -> EventStore:
    """The store at `path`, encrypted with FUSIONREC_STORE_KEY when that is set."""
    path = Path(path)
    if path.is_dir():
        raise FusionrecError(f"{path}: is a folder; --store expects a DuckDB file such as shop.duckdb")
    if must_exist and not path.exists():
        raise FusionrecError(f"{path}: no such store; create it with `fusionrec ingest --store {path} ...`")
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    secrets = read_secrets()
    return EventStore(path, key=secrets.store_key, read_only=read_only, pseudonym_key=secrets.pseudonym_key)
