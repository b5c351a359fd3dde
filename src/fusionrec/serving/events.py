"""Events in over HTTP: validated by the ingest rules and committed to the store before the answer.

One writer thread owns the store's write connection. Requests hand it their events and wait; it
takes every request waiting at that moment, validates them together with the same SQL as
`fusionrec ingest` (`validated_sql`), inserts the accepted rows and quarantines the rejected ones in
one transaction, and commits (DuckDB fsyncs its WAL on commit) before any of those requests is
answered. Grouping keeps the per-event cost low under concurrency without a second log to replay.
A group's rows go to a temporary inbox table; validation and insert are one prepared statement over
it (INSERT ... SELECT over the validation of the inbox, RETURNING what was stored); when some rows are
rejected, a second prepared query reads them and they are quarantined in the same transaction, their
raw JSON built for them alone; the inbox is emptied before the commit.

Prepared, because planning the validation statement was most of a small group's cost (4.6 of 7 ms for
one event: the prepared statement runs in about 2). A prepared plan outlives the data it was planned on,
so DuckDB's statistics propagation is off for the store's database: with it, DuckDB 1.4.4 folded the
validation's `user_id IS NULL` to false with the statistics of an earlier group's rows and stored an
event it had to reject (tests/test_validation_properties.py sends such groups one after another). The
server runs the store on one DuckDB thread (`ServingSettings.store_threads`), since handing a few rows
to a pool cost more than the work.
"""

from __future__ import annotations

import copy
import json
import logging
import queue
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from fusionrec import schema as S
from fusionrec.data.adapters import RawEvents, sql_str
from fusionrec.data.validation import CONTENT_COLUMNS, ValidationRules, validated_sql
from fusionrec.store.event_store import EventStore

__all__ = ["EventWriter", "WriteResult", "store_reader", "RAW_FIELDS"]

log = logging.getLogger("fusionrec.serving")

#: the event fields the API takes (the raw columns of the shared validation)
RAW_FIELDS = (S.USER_ID, S.ITEM_ID, S.BEHAVIOR, S.TIMESTAMP, S.SESSION_ID, S.QUANTITY, S.PRICE, S.CONTEXT)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_GROUP_EVENTS = 5000
#: how long the writer waits for more requests to join a group when the last group had several
_LINGER_SECONDS = 0.002
#: the writer connection's temporary inbox table and its two prepared statements
_INBOX, _INSERT, _REJECTED = "_fusionrec_api_inbox", "_fusionrec_api_insert", "_fusionrec_api_rejected"
#: optimizers whose plans depend on the data seen when a statement is planned (see the module docstring)
_DATA_DEPENDENT_OPTIMIZERS = ("statistics_propagation", "compressed_materialization")


@dataclass
class WriteResult:
    """Per request: the accepted events (user_id, item_id, canonical behaviour, epoch seconds) and rejects."""

    accepted: list[tuple[str, str, str, float]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"index", "reason"}


def store_reader(store: EventStore) -> EventStore:
    """An EventStore on its own DuckDB cursor, for reads in another thread while the writer works."""
    reader = copy.copy(store)
    reader.con = store.con.cursor()
    if store.encrypted:
        reader.con.execute("USE store")
    reader.con.execute("SET TimeZone='UTC'")
    return reader


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _column(values: list[Any]) -> pa.Array:
    """One raw field of a group as text (most values are text or missing already: no call for those)."""
    return pa.array([v if v is None or v.__class__ is str else _text(v) for v in values], pa.string())


class EventWriter:
    """The single writer of the store: validated event batches and other write jobs, in one thread."""

    def __init__(self, store: EventStore, rules: ValidationRules | None = None) -> None:
        self.store = store
        self.rules = rules or ValidationRules()
        self._queue: queue.Queue[tuple[str, Any, Future] | None] = queue.Queue()
        self._last_seq = 0
        self._last_group = 0  # requests in the last group written
        self._sql_hour = -1  # the hour the prepared statements were built for (-1: not yet)
        self._thread = threading.Thread(target=self._run, name="fusionrec-store-writer", daemon=True)
        self._closed = False
        self._thread.start()

    # -- public -------------------------------------------------------------------------------
    def write(self, events: list[dict[str, Any]], timeout: float = 30.0) -> WriteResult:
        """Validate and store events (dicts of RAW_FIELDS); returns once they are committed."""
        return self.submit(events).result(timeout=timeout)

    def submit(self, events: list[dict[str, Any]]) -> Future:
        """Hand events to the writer; the future's result (a WriteResult) is set once they are committed."""
        fut: Future = Future()
        if not events:
            fut.set_result(WriteResult())
        else:
            self._queue.put(("events", events, fut))
        return fut

    def call(self, fn: Callable[[Any], Any], timeout: float = 300.0) -> Any:
        """Run fn(connection) in the writer thread (inside no transaction) and return its result."""
        fut: Future = Future()
        self._queue.put(("call", fn, fut))
        return fut.result(timeout=timeout)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=10)

    # -- the writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job[0] == "call":
                self._run_call(job)
                continue
            group = [job]
            n = len(job[1])
            after: list[tuple[str, Any, Future] | None] = []  # a call or the stop mark ends the group
            # under concurrency (the last group had several requests) wait a moment for more: a group
            # costs a few ms (its statements, its commit) however few events it has; alone, a request
            # never waits
            linger_until = time.monotonic() + _LINGER_SECONDS if self._last_group > 1 else 0.0
            while n < _MAX_GROUP_EVENTS and not after:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    wait = linger_until - time.monotonic()
                    if wait <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=wait)
                    except queue.Empty:
                        break
                if nxt is None or nxt[0] == "call":
                    after.append(nxt)
                else:
                    group.append(nxt)
                    n += len(nxt[1])
            self._last_group = len(group)
            self._write_group(group)
            for nxt in after:
                if nxt is None:
                    return
                self._run_call(nxt)

    def _run_call(self, job: tuple[str, Any, Future]) -> None:
        _, fn, fut = job
        try:
            fut.set_result(fn(self.store.con))
        except BaseException as exc:  # the caller sees the exception
            fut.set_exception(exc)

    def _write_group(self, group: list[tuple[str, Any, Future]]) -> None:
        try:
            results = self._commit([g[1] for g in group])
        except Exception as exc:
            if len(group) > 1:  # one bad request must not fail its neighbours: retry each alone
                for g in group:
                    self._write_group([g])
                return
            log.exception("storing %d events failed", len(group[0][1]))
            group[0][2].set_exception(exc)
            return
        for g, res in zip(group, results):
            g[2].set_result(res)

    def _prepare(self, rows: pa.Table) -> None:
        """The inbox (shaped like `rows`, a group's table) and the prepared validation statements, rebuilt
        every hour: the validation's default time range ends at now + 1 day, so statements built once at
        start would reject current events after the server's first day."""
        hour = int(time.time() // 3600)
        if hour == self._sql_hour:
            return
        con = self.store.con
        if self._sql_hour < 0:
            disabled = {o.strip() for o in con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0]
                        .split(",") if o.strip()}
            con.execute(f"SET disabled_optimizers = {sql_str(','.join(sorted(disabled | set(_DATA_DEPENDENT_OPTIMIZERS))))}")
            con.register("_fusionrec_api_shape", rows.schema.empty_table())
            try:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {_INBOX} AS SELECT * FROM _fusionrec_api_shape")
            finally:
                con.unregister("_fusionrec_api_shape")
        validated = validated_sql(RawEvents(sql=f"SELECT * FROM {_INBOX}", source=Path("api")), self.rules)
        ins = ", ".join(CONTENT_COLUMNS)
        con.execute(f"PREPARE {_INSERT} AS INSERT INTO events ({ins}, {S.SEQ}, {S.SOURCE}, {S.LINE}) "
                    f"SELECT {ins}, {S.SEQ}, {S.SOURCE}, {S.LINE} FROM ({validated}) WHERE reason IS NULL "
                    f"RETURNING {S.SEQ}, {S.USER_ID}, {S.ITEM_ID}, {S.BEHAVIOR}, {S.TIMESTAMP}")
        con.execute(f"PREPARE {_REJECTED} AS SELECT {S.SEQ}, {S.SOURCE}, {S.LINE}, reason FROM ({validated}) "
                    "WHERE reason IS NOT NULL")
        self._sql_hour = hour

    def _next_seqs(self, n: int) -> list[int]:
        # microseconds since the epoch, strictly increasing: orders API events after each other
        start = max(int(time.time() * 1e6), self._last_seq + 1)
        self._last_seq = start + n - 1
        return list(range(start, start + n))

    def _commit(self, batches: list[list[dict[str, Any]]]) -> list[WriteResult]:
        rows = [ev for batch in batches for ev in batch]
        seqs = self._next_seqs(len(rows))
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        cols = {c: _column([ev.get(c) for ev in rows]) for c in RAW_FIELDS}
        # the contract: timestamp is optional, the server's clock fills it
        cols[S.TIMESTAMP] = pc.fill_null(cols[S.TIMESTAMP], now)
        n = len(rows)
        reject = pa.nulls(n, pa.string())
        for c in (S.BEHAVIOR, S.ITEM_ID, S.USER_ID):  # the first field with one names the rejection
            bad = pc.fill_null(pc.match_substring_regex(cols[c], _CONTROL.pattern), False)
            reject = pc.if_else(bad, pa.scalar(f"{c} contains a control character"), reject)
        table = pa.table({**cols, S.SPLIT: pa.nulls(n, pa.string()), S.SEQ: pa.array(seqs, pa.int64()),
                          S.SOURCE: pa.array(["api"] * n, pa.string()), S.LINE: pa.array(seqs, pa.int64()),
                          "reject": reject, "raw": pa.nulls(n, pa.string())})
        con = self.store.con
        self._prepare(table)
        con.execute("BEGIN TRANSACTION")
        try:
            con.from_arrow(table).insert_into(_INBOX)
            # validation and insert in one statement; the rejected rows (rare) are read in a second
            stored = con.execute(f"EXECUTE {_INSERT}").fetch_arrow_table()
            rejected = None
            if stored.num_rows < n:
                rejected = con.execute(f"EXECUTE {_REJECTED}").fetch_arrow_table()
                self._quarantine(con, rejected, rows, seqs)
            if stored.num_rows + (rejected.num_rows if rejected is not None else 0) != n:
                raise RuntimeError(f"validation of {n} events returned a different number of rows")
            con.execute(f"DELETE FROM {_INBOX}")
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")  # the inbox's rows too
            except Exception:  # a failed COMMIT (disk full) already ended the transaction: keep its error
                pass
            raise
        first = seqs[0]  # the group's seqs are consecutive: seq - first is the row's position
        micros = pc.cast(pc.cast(stored.column(S.TIMESTAMP), pa.timestamp("us")), pa.int64())
        when = pc.fill_null(pc.divide(pc.cast(micros, pa.float64(), safe=False), 1e6), float("nan"))  # epoch seconds
        outcome: list[Any] = [None] * n  # per row: the accepted tuple, or the rejection reason
        for seq, user, item, behavior, t in zip(stored.column(S.SEQ).to_pylist(), stored.column(S.USER_ID).to_pylist(),
                                                stored.column(S.ITEM_ID).to_pylist(),
                                                stored.column(S.BEHAVIOR).to_pylist(), when.to_pylist()):
            outcome[seq - first] = (user, item, behavior, t)
        if rejected is not None:
            for seq, reason in zip(rejected.column(S.SEQ).to_pylist(), rejected.column("reason").to_pylist()):
                outcome[seq - first] = reason
        results, pos = [], 0
        for batch in batches:
            res = WriteResult()
            for index in range(len(batch)):
                got = outcome[pos]
                if isinstance(got, tuple):
                    res.accepted.append(got)
                else:
                    res.rejected.append({"index": index, "reason": got})
                pos += 1
            results.append(res)
        return results

    def _quarantine(self, con: Any, rejected: pa.Table, rows: list[dict[str, Any]], seqs: list[int]) -> None:
        """The rejected rows with their reason and raw JSON (built only for them; none when ids are
        pseudonymised, since the raw text would hold the real id)."""
        first = seqs[0]  # the batch's seqs are consecutive: seq - first is the row's position
        raw = None if self.rules.pseudonym_key else [
            json.dumps({k: v for k, v in rows[seq - first].items() if k in RAW_FIELDS and v is not None},
                       sort_keys=True, default=str)[:1000] for seq in rejected.column(S.SEQ).to_pylist()]
        q = pa.table({S.SOURCE: rejected.column(S.SOURCE), S.LINE: rejected.column(S.LINE),
                      S.REASON: rejected.column("reason"),
                      "raw": pa.array(raw or [None] * rejected.num_rows, pa.string())})
        con.register("_api_bad", q)
        try:
            con.execute(f"INSERT INTO quarantine SELECT {S.SOURCE}, {S.LINE}, {S.REASON}, raw, now() FROM _api_bad")
        finally:
            con.unregister("_api_bad")
