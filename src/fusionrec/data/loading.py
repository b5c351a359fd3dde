"""Load a dataset from files into memory through the same adapters and validation as the store."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from fusionrec import schema as S
from fusionrec.data.validation import ValidationRules
from fusionrec.store.event_store import EventStore, IngestReport, file_checksum
from fusionrec.data.adapters import plan_source

__all__ = ["Dataset", "load_dataset"]


@dataclass
class Dataset:
    """Accepted events of one dataset plus its catalogue and users; see `fusionrec.schema`.

    `events` columns: user_id, item_id, behavior, timestamp (UTC, null where the source has order
    only), seq, session_id, quantity, price, context, split ('train'/'valid'/'test' or null).
    """

    name: str
    format: str
    events: pl.DataFrame
    items: pl.DataFrame | None
    users: pl.DataFrame | None
    has_timestamps: bool
    report: IngestReport
    checksum: str


def _dataset_name(path: Path) -> str:
    path = path.resolve()
    if path.is_file():
        stem = path.name.split(".")[0]
        return f"{path.parent.name}/{stem}"
    if path.parent.name not in ("data", ""):
        return f"{path.parent.name}/{path.name}" if path.parent.name.startswith("bars") else path.name
    return path.name


def load_dataset(path: Path | str, fmt: str, rules: ValidationRules | None = None) -> Dataset:
    """Read, validate and de-duplicate a dataset in an in-memory DuckDB; nothing is written to disk."""
    path = Path(path)
    plan = plan_source(path, fmt)
    digest = hashlib.sha256()
    for f in plan.files:
        digest.update(file_checksum(f).encode())
    with EventStore(":memory:") as store:
        report = store.ingest([path], fmt, rules=rules)
        events = store.events()
        items = store.items() if store.count("items") else None
        users = store.users() if store.count("users") else None
    has_ts = plan.has_timestamps and events.height > 0 and events[S.TIMESTAMP].null_count() < events.height
    return Dataset(name=_dataset_name(path), format=fmt, events=events, items=items, users=users,
                   has_timestamps=has_ts, report=report, checksum=digest.hexdigest())
