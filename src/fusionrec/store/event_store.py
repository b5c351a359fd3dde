"""The embedded event store: one DuckDB file, no server.

Ingest streams each source through the shared validation SQL inside DuckDB (no Python per row),
quarantines rejects with file, line and reason, drops exact duplicates (also against what the
store already holds, so loading a file twice adds nothing) and records every load in `ingests`.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import duckdb
import polars as pl

from fusionrec import schema as S
from fusionrec.config import thread_count
from fusionrec.data.adapters import SourcePlan, plan_source, sql_str
from fusionrec.data.validation import CONTENT_COLUMNS, IngestCounts, ValidationRules, validated_sql
from fusionrec.errors import FusionrecError

__all__ = ["EventStore", "IngestReport", "file_checksum", "EVENT_COLUMNS"]

#: the columns `events()` returns by default (every event field but the bookkeeping ones)
EVENT_COLUMNS = (S.USER_ID, S.ITEM_ID, S.BEHAVIOR, S.TIMESTAMP, S.SEQ, S.SESSION_ID, S.QUANTITY, S.PRICE, S.CONTEXT,
                 S.SPLIT)

_DDL = f"""
CREATE TABLE IF NOT EXISTS events (
  {S.USER_ID} VARCHAR NOT NULL, {S.ITEM_ID} VARCHAR NOT NULL, {S.BEHAVIOR} VARCHAR NOT NULL,
  {S.TIMESTAMP} TIMESTAMP, {S.SEQ} BIGINT, order_key BIGINT, {S.SESSION_ID} VARCHAR, {S.QUANTITY} INTEGER,
  {S.PRICE} DOUBLE, {S.CONTEXT} VARCHAR, {S.SPLIT} VARCHAR, {S.SOURCE} VARCHAR, {S.LINE} BIGINT
);
CREATE TABLE IF NOT EXISTS quarantine (
  {S.SOURCE} VARCHAR, {S.LINE} BIGINT, {S.REASON} VARCHAR, raw VARCHAR, ingested_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS items (
  {S.ITEM_ID} VARCHAR PRIMARY KEY, {S.TITLE} VARCHAR, {S.CATEGORY} VARCHAR, {S.BRAND} VARCHAR,
  {S.PRICE} DOUBLE, {S.AVAILABLE} BOOLEAN, {S.ATTRIBUTES} VARCHAR, {S.TEXT} VARCHAR
);
CREATE TABLE IF NOT EXISTS users ({S.USER_ID} VARCHAR PRIMARY KEY, {S.ATTRIBUTES} VARCHAR);
CREATE TABLE IF NOT EXISTS ingests (
  {S.SOURCE} VARCHAR, format VARCHAR, sha256 VARCHAR, rows_in BIGINT, accepted BIGINT, rejected BIGINT,
  duplicates BIGINT, ingested_at TIMESTAMP
);
"""

# exact match on every content column; the equalities on the non-null ids drive DuckDB's hash join
_SAME = " AND ".join([f"e.{c} = f.{c}" for c in (S.USER_ID, S.ITEM_ID, S.BEHAVIOR)]
                     + [f"e.{c} IS NOT DISTINCT FROM f.{c}" for c in CONTENT_COLUMNS[3:]])


def file_checksum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class IngestReport:
    """Counts per source and in total; `notes` carry the adapter's caveats (e.g. no timestamps)."""

    format: str
    sources: list[IngestCounts] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> IngestCounts:
        t = IngestCounts("total")
        for c in self.sources:
            t.rows_in += c.rows_in
            t.accepted += c.accepted
            t.rejected += c.rejected
            t.duplicates += c.duplicates
            for k, v in c.reasons.items():
                t.reasons[k] = t.reasons.get(k, 0) + v
        return t

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "total": self.total.to_dict(), "sources": [c.to_dict() for c in self.sources],
                "notes": self.notes, "seconds": round(self.seconds, 3)}


def _httpfs_extension() -> Path:
    import duckdb_ext  # the pinned httpfs extension package (supplies OpenSSL for encrypted writes)

    base = Path(next(iter(duckdb_ext.__path__)))
    found = sorted(base.glob(f"extensions/v{duckdb.__version__}/*/httpfs.duckdb_extension"))
    if not found:
        raise FusionrecError(f"no httpfs extension for DuckDB {duckdb.__version__} under {base}; "
                             "install duckdb-ext-httpfs matching the DuckDB version")
    return found[0]


class EventStore:
    """A DuckDB file holding events, quarantine, items, users and the ingest log.

    With `key`, the file is encrypted (AES-GCM inside DuckDB); without the key it cannot be opened.
    """

    def __init__(self, path: Path | str = ":memory:", key: str | None = None, read_only: bool = False,
                 memory_limit: str = "1500MB", pseudonym_key: str | None = None) -> None:
        self.path = str(path)
        self.pseudonym_key = pseudonym_key
        self.encrypted = bool(key)
        self._key = key  # kept in memory only: snapshots are encrypted with it
        try:
            if key:
                self.con = duckdb.connect(":memory:")
                self.con.execute(f"LOAD {sql_str(_httpfs_extension())}")
                ro = ", READ_ONLY" if read_only else ""
                self.con.execute(f"ATTACH {sql_str(self.path)} AS store (ENCRYPTION_KEY {sql_str(key)}{ro})")
                self.con.execute("USE store")
            else:
                self.con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as exc:
            raise FusionrecError(f"{self.path}: cannot open the event store ({str(exc).splitlines()[0]})") from None
        tmp = Path(tempfile.gettempdir()) / "fusionrec-duckdb"
        # allocator_background_threads: jemalloc purges freed pages in the background; without it a
        # long-running server keeps the peak of every scan (a retrain snapshot, a dashboard query) as
        # resident memory (measured: about 130 MB more after snapshots of a 300k-event store)
        self.con.execute(f"SET TimeZone='UTC'; SET threads={thread_count()}; SET memory_limit={sql_str(memory_limit)}; "
                         f"SET temp_directory={sql_str(tmp)}; SET preserve_insertion_order=true; "
                         "SET allocator_background_threads=true")
        if not read_only:
            self.con.execute(_DDL)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ingest -------------------------------------------------------------------------------
    def ingest(self, paths: Sequence[Path | str], fmt: str, rules: ValidationRules | None = None,
               progress: Callable[[str], None] | None = None) -> IngestReport:
        """Load files or folders of a FORMAT; returns counts where rows in = accepted + rejected + duplicates."""
        import time

        t0 = time.perf_counter()
        report = IngestReport(fmt)
        for path in paths:
            plan = plan_source(path, fmt)
            report.notes.extend(n for n in plan.notes if n not in report.notes)
            self._ingest_plan(plan, rules, report, progress)
        report.seconds = time.perf_counter() - t0
        return report

    def _ingest_plan(self, plan: SourcePlan, rules: ValidationRules | None, report: IngestReport,
                     progress: Callable[[str], None] | None) -> None:
        base = rules or ValidationRules()
        rules = ValidationRules(behaviors=base.behaviors,
                                time_range=base.time_range or plan.time_range,
                                require_timestamp=base.require_timestamp and plan.has_timestamps,
                                pseudonym_key=base.pseudonym_key or self.pseudonym_key)
        con = self.con
        for raw in plan.events:
            if progress:
                progress(str(raw.source))
            counts = IngestCounts(str(raw.source))
            # staging happens outside the transaction: rowids of transaction-local rows are not 0-based
            if not self._stage_fast(raw, rules):
                for stmt in raw.setup:
                    con.execute(stmt)
                con.execute(f"CREATE OR REPLACE TEMP TABLE staged AS {validated_sql(raw, rules)}")
            # staging needed the file order; grouping and inserting do not, and run freer without it
            con.execute("SET preserve_insertion_order=false")
            con.execute("BEGIN TRANSACTION")
            try:
                if raw.items_sql:
                    con.execute(f"INSERT OR REPLACE INTO items ({S.ITEM_ID}, {S.CATEGORY}) {raw.items_sql}")
                counts.rows_in = con.execute("SELECT count(*) FROM staged").fetchone()[0]  # type: ignore[index]
                con.execute(f"INSERT INTO quarantine SELECT s.{S.SOURCE}, s.{S.LINE}, s.reason, s.raw, now() "
                            "FROM staged s WHERE s.reason IS NOT NULL AND NOT EXISTS (SELECT 1 FROM quarantine q "
                            f"WHERE q.{S.SOURCE} = s.{S.SOURCE} AND q.{S.LINE} = s.{S.LINE} AND q.{S.REASON} = s.reason)")
                counts.reasons = dict(con.execute(
                    "SELECT split_part(reason, ':', 1), count(*) FROM staged "
                    "WHERE reason IS NOT NULL GROUP BY 1 ORDER BY 2 DESC").fetchall())
                counts.rejected = sum(counts.reasons.values())
                cols = ", ".join(CONTENT_COLUMNS)
                # exact duplicates inside the file: GROUP BY every content column (fast in DuckDB, no collisions)
                fresh = (f"SELECT {cols}, min({S.SEQ}) AS {S.SEQ}, min({S.SOURCE}) AS {S.SOURCE}, "
                         f"min({S.LINE}) AS {S.LINE} FROM staged WHERE reason IS NULL GROUP BY ALL")
                # equal rows hash equally, so all-distinct hashes prove there is no duplicate to group away
                n_ok, n_hash = con.execute(f"SELECT count(*), count(DISTINCT hash({cols})) FROM staged "
                                           "WHERE reason IS NULL").fetchone()  # type: ignore[misc]
                if n_ok == n_hash:
                    fresh = f"SELECT {cols}, {S.SEQ}, {S.SOURCE}, {S.LINE} FROM staged WHERE reason IS NULL"
                before = self.count("events")
                # ... and against what the store already holds (skipped when it is empty)
                novel = "" if before == 0 else f"WHERE NOT EXISTS (SELECT 1 FROM events e WHERE {_SAME})"
                con.execute(f"INSERT INTO events ({cols}, {S.SEQ}, {S.SOURCE}, {S.LINE}) "
                            f"SELECT {cols}, {S.SEQ}, {S.SOURCE}, {S.LINE} FROM ({fresh}) f {novel}")
                counts.accepted = self.count("events") - before
                counts.duplicates = counts.rows_in - counts.accepted - counts.rejected
                con.execute("INSERT INTO ingests VALUES (?, ?, ?, ?, ?, ?, ?, now())",
                            [str(raw.source), plan.format, _checksum_or_empty(raw.source), counts.rows_in,
                             counts.accepted, counts.rejected, counts.duplicates])
                self._drop_staging()
                for table in raw.temp_tables:
                    con.execute(f"DROP TABLE IF EXISTS {table}")
                con.execute("COMMIT")
                con.execute("SET preserve_insertion_order=true")
            except BaseException:
                con.execute("ROLLBACK")
                con.execute("SET preserve_insertion_order=true")
                self._drop_staging()
                for table in raw.temp_tables:
                    con.execute(f"DROP TABLE IF EXISTS {table}")
                raise
            report.sources.append(counts)
        if plan.items is not None:
            self.upsert_items(plan.items)
        if plan.users is not None:
            self.upsert_users(plan.users)

    def _stage_fast(self, raw: Any, rules: ValidationRules) -> bool:
        """Stage with the adapter's fast plan when its parser rejects no line; False: use the exact plan."""
        if raw.fast is None:
            return False
        con = self.con
        before = self._parse_rejects()
        con.execute(f"CREATE OR REPLACE TEMP TABLE staged_fast AS {validated_sql(raw.fast, rules)}")
        if self._parse_rejects() != before:
            con.execute("DROP TABLE staged_fast")
            return False
        # number the lines from the file order kept by the table (header = line 1)
        con.execute(f"CREATE OR REPLACE TEMP VIEW staged AS SELECT * REPLACE (rowid + 2 AS {S.LINE}, "
                    f"rowid + 2 AS {S.SEQ}) FROM staged_fast")
        return True

    def _drop_staging(self) -> None:
        for stmt in ("DROP VIEW IF EXISTS staged", "DROP TABLE IF EXISTS staged", "DROP TABLE IF EXISTS staged_fast"):
            try:
                self.con.execute(stmt)
            except duckdb.Error:  # a view dropped as a table or the reverse: nothing left to drop
                pass

    def _parse_rejects(self) -> int:
        try:
            return int(self.con.execute("SELECT count(*) FROM reject_errors").fetchone()[0])  # type: ignore[index]
        except duckdb.Error:
            return 0

    def upsert_items(self, items: pl.DataFrame) -> int:
        """Insert or replace catalogue rows by item_id; rows without an id are ignored."""
        frame = _conform(items, S.ITEM_COLUMNS)
        self.con.register("_items_in", frame.to_arrow())
        try:
            self.con.execute(f"""INSERT OR REPLACE INTO items SELECT {S.ITEM_ID}, {S.TITLE}, {S.CATEGORY}, {S.BRAND},
                TRY_CAST({S.PRICE} AS DOUBLE), TRY_CAST({S.AVAILABLE} AS BOOLEAN), {S.ATTRIBUTES}, {S.TEXT}
                FROM (SELECT * FROM _items_in WHERE {S.ITEM_ID} IS NOT NULL QUALIFY row_number() OVER (PARTITION BY {S.ITEM_ID}) = 1)""")
        finally:
            self.con.unregister("_items_in")
        return frame.height

    def upsert_users(self, users: pl.DataFrame) -> int:
        frame = _conform(users, S.USER_COLUMNS)
        self.con.register("_users_in", frame.to_arrow())
        uid = S.USER_ID
        if self.pseudonym_key:
            from fusionrec.privacy import pseudonym_sql

            uid = pseudonym_sql(S.USER_ID, self.pseudonym_key)
        try:
            self.con.execute(f"""INSERT OR REPLACE INTO users SELECT {uid}, {S.ATTRIBUTES}
                FROM (SELECT * FROM _users_in WHERE {S.USER_ID} IS NOT NULL QUALIFY row_number() OVER (PARTITION BY {S.USER_ID}) = 1)""")
        finally:
            self.con.unregister("_users_in")
        return frame.height

    def snapshot(self, path: Path | str) -> None:
        """Copy the events and the catalogue into a new store file, encrypted with this store's key:
        what a retrain in another process reads while this one keeps writing (a DuckDB file is open in
        one process at a time). Each table is copied by one statement, so each is consistent."""
        enc = f" (ENCRYPTION_KEY {sql_str(self._key)})" if self._key else ""
        self.con.execute(f"ATTACH {sql_str(str(path))} AS fusionrec_snapshot{enc}")
        try:
            for table in ("events", "items", "users"):
                self.con.execute(f"CREATE TABLE fusionrec_snapshot.{table} AS SELECT * FROM {table}")
        finally:
            self.con.execute("DETACH fusionrec_snapshot")

    # -- reading ------------------------------------------------------------------------------
    def events(self, where: str = "", columns: Sequence[str] = EVENT_COLUMNS) -> pl.DataFrame:
        """Accepted events in (timestamp, seq) order as a Polars frame, with `columns` (a training run
        reads only the five it uses: the others cost gigabytes at tens of millions of events)."""
        unknown = sorted(set(columns) - set(EVENT_COLUMNS))
        if unknown:
            raise ValueError(f"unknown event columns {unknown}")
        cols = ", ".join(columns)
        sql = f"SELECT {cols} FROM events {('WHERE ' + where) if where else ''} ORDER BY {S.TIMESTAMP} NULLS LAST, {S.SEQ}"
        df = self.con.execute(sql).pl()
        return df.with_columns(pl.col(S.TIMESTAMP).dt.replace_time_zone("UTC")) if S.TIMESTAMP in columns else df

    def items(self) -> pl.DataFrame:
        return self.con.execute("SELECT * FROM items ORDER BY item_id").pl()

    def users(self) -> pl.DataFrame:
        return self.con.execute("SELECT * FROM users ORDER BY user_id").pl()

    def quarantine(self, limit: int | None = None) -> pl.DataFrame:
        lim = f" LIMIT {int(limit)}" if limit else ""
        return self.con.execute(f"SELECT source, line, reason, raw FROM quarantine ORDER BY source, line{lim}").pl()

    def count(self, table: str = "events") -> int:
        if table not in ("events", "quarantine", "items", "users", "ingests"):
            raise ValueError(table)
        return int(self.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]

    def stats(self) -> dict[str, Any]:
        """Counts per behaviour, users, items, density, date range and funnel conversion."""
        con = self.con
        n_events, n_users, n_items, t0, t1 = con.execute(
            f"SELECT count(*), count(DISTINCT {S.USER_ID}), count(DISTINCT {S.ITEM_ID}), min({S.TIMESTAMP}), "
            f"max({S.TIMESTAMP}) FROM events").fetchone()  # type: ignore[misc]
        per = dict(con.execute(f"SELECT {S.BEHAVIOR}, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC").fetchall())
        pairs = con.execute(f"SELECT count(*) FROM (SELECT DISTINCT {S.USER_ID}, {S.ITEM_ID} FROM events)").fetchone()[0]  # type: ignore[index]
        funnel = {}
        steps = [b for b in S.FUNNEL if b in per] if per else []
        for a, b in zip(steps, steps[1:]):
            funnel[f"{b}/{a}"] = round(per[b] / per[a], 4) if per.get(a) else None
        return {
            "events": n_events, "users": n_users, "items": n_items,
            "catalogue_items": self.count("items"),
            "density": (pairs / (n_users * n_items)) if n_users and n_items else 0.0,
            "first": t0.isoformat() if t0 else None, "last": t1.isoformat() if t1 else None,
            "behaviors": per, "funnel": funnel, "quarantined": self.count("quarantine"),
            "bot_users": self.bot_users().height,
        }

    def bot_users(self, max_events_per_minute: float = 30.0, min_events: int = 50) -> pl.DataFrame:
        """Users flagged as bots or outliers (busiest minute above the cap); flagged, never deleted."""
        from fusionrec.data.preprocessing import bots_from_minutes

        per_minute = self.con.execute(
            f"SELECT {S.USER_ID}, date_trunc('minute', {S.TIMESTAMP}) AS minute, count(*)::UINTEGER AS len "
            f"FROM events WHERE {S.TIMESTAMP} IS NOT NULL GROUP BY ALL").pl()
        return bots_from_minutes(per_minute, max_events_per_minute, min_events).filter(pl.col("bot"))


def _checksum_or_empty(path: Path) -> str:
    try:
        return file_checksum(Path(path))
    except OSError:
        return ""


def _conform(frame: pl.DataFrame, columns: Iterable[str]) -> pl.DataFrame:
    cols = list(columns)
    return frame.select([
        (pl.col(c).cast(pl.Utf8) if c in frame.columns else pl.lit(None, dtype=pl.Utf8)).alias(c) for c in cols
    ])
