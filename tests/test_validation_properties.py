"""Property tests of ingest validation: for any rows, rows in = accepted + rejected + duplicates, every
rejection keeps a reason and its line, and valid rows come out of the store as they went in."""

from __future__ import annotations

import json
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionrec.data.validation import ValidationRules
from fusionrec.serving.events import EventWriter
from fusionrec.store.event_store import EventStore

# bounded: each example opens an in-memory DuckDB; the whole module stays within a few seconds
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    derandomize=True)

ID = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12)
BEHAVIOR = st.sampled_from(["view", "cart", "buy", "fav", "pv", "ADDTOCART", " view "])
CANON = {"view": "view", "cart": "cart", "buy": "buy", "fav": "fav", "pv": "view", "ADDTOCART": "cart",
         " view ": "view"}
WHEN = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2025, 12, 31)).map(
    lambda d: d.replace(microsecond=0, tzinfo=timezone.utc))
# text without line breaks, commas and quotes included: the CSV splitter must cope with anything on a line
JUNK = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
               max_size=40)


def _iso(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


@st.composite
def valid_row(draw) -> tuple[str, str, str, datetime]:
    return draw(ID), draw(ID), draw(BEHAVIOR), draw(WHEN)


@st.composite
def csv_line(draw) -> str:
    kind = draw(st.sampled_from(["valid", "valid", "valid", "fields", "behavior", "time", "user", "item",
                                 "range", "long", "junk", "epoch"]))
    u, i, b, t = draw(valid_row())
    if kind == "valid":
        return f"{u},{i},{b},{_iso(t)}"
    if kind == "epoch":
        return f"{u},{i},{b},{int(t.timestamp())}"
    if kind == "fields":
        return ",".join([u, i, b, _iso(t)][: draw(st.integers(1, 3))]) + draw(st.sampled_from(["", ",x,y"]))
    if kind == "behavior":
        return f"{u},{i},teleport{draw(ID)},{_iso(t)}"
    if kind == "time":
        return f"{u},{i},{b},not-a-time-{draw(ID)}"
    if kind == "user":
        return f",{i},{b},{_iso(t)}"
    if kind == "item":
        return f"{u},,{b},{_iso(t)}"
    if kind == "range":
        return f"{u},{i},{b},{_iso(t.replace(year=1850))}"
    if kind == "long":
        return f"{'u' * 300},{i},{b},{_iso(t)}"
    return draw(JUNK)


def _ingest(text: str, name: str) -> tuple[EventStore, object]:
    folder = Path(tempfile.mkdtemp(prefix="fusionrec-prop-"))
    try:
        path = folder / name
        path.write_text(text, encoding="utf-8")
        store = EventStore(":memory:")
        return store, store.ingest([path], "fusionrec").total
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_balance(store: EventStore, counts, n_lines: int, first_line: int) -> None:
    assert counts.rows_in == counts.accepted + counts.rejected + counts.duplicates
    assert counts.duplicates >= 0
    assert counts.accepted == store.count("events")
    q = store.quarantine()
    assert q.height == counts.rejected
    for row in q.iter_rows(named=True):
        assert row["reason"], row  # every rejection says why ...
        assert row["line"] is not None and first_line <= row["line"] < first_line + n_lines, row  # ... and where


@SETTINGS
@given(st.lists(csv_line(), min_size=1, max_size=30))
def test_csv_rows_are_accepted_rejected_or_duplicates(lines):
    store, counts = _ingest("user_id,item_id,behavior,timestamp\n" + "\n".join(lines) + "\n", "events.csv")
    with store:
        _check_balance(store, counts, len(lines), first_line=2)
        # every non-blank line is a row in; blank ones are skipped
        assert counts.rows_in == sum(1 for ln in lines if ln.strip(" ") != "")


@SETTINGS
@given(st.lists(valid_row(), min_size=1, max_size=30, unique_by=lambda r: (r[0], r[1], CANON[r[2]], r[3])))
def test_valid_csv_rows_round_trip(rows):
    text = "user_id,item_id,behavior,timestamp\n" + "".join(f"{u},{i},{b},{_iso(t)}\n" for u, i, b, t in rows)
    store, counts = _ingest(text, "events.csv")
    with store:
        assert (counts.rows_in, counts.accepted, counts.rejected, counts.duplicates) == (len(rows), len(rows), 0, 0)
        ev = store.events()
        got = sorted((r["user_id"], r["item_id"], r["behavior"], r["timestamp"].replace(tzinfo=timezone.utc))
                     for r in ev.iter_rows(named=True))
        assert got == sorted((u, i, CANON[b], t) for u, i, b, t in rows)


@SETTINGS
@given(st.lists(valid_row(), min_size=1, max_size=10), st.integers(1, 3))
def test_exact_repeats_are_counted_as_duplicates(rows, times):
    unique = {(u, i, b, t) for u, i, b, t in rows}
    lines = [f"{u},{i},{b},{_iso(t)}" for u, i, b, t in rows] * times
    store, counts = _ingest("user_id,item_id,behavior,timestamp\n" + "\n".join(lines) + "\n", "events.csv")
    with store:
        _check_balance(store, counts, len(lines), first_line=2)
        assert counts.accepted == len(unique) and counts.rejected == 0


@st.composite
def json_line(draw) -> str:
    kind = draw(st.sampled_from(["valid", "valid", "missing", "wrongtype", "junk", "array"]))
    u, i, b, t = draw(valid_row())
    obj: dict = {"user_id": u, "item_id": i, "behavior": b, "timestamp": _iso(t)}
    if kind == "missing":
        obj.pop(draw(st.sampled_from(sorted(obj))))
    elif kind == "wrongtype":
        obj[draw(st.sampled_from(sorted(obj)))] = draw(st.one_of(st.integers(), st.floats(allow_nan=False),
                                                                 st.booleans(), st.none(), st.lists(st.integers(), max_size=2)))
    elif kind == "junk":
        return draw(JUNK)
    elif kind == "array":
        return json.dumps([u, i, b])
    return json.dumps(obj, ensure_ascii=draw(st.booleans()))


@SETTINGS
@given(st.lists(json_line(), min_size=1, max_size=30))
def test_jsonl_lines_are_accepted_rejected_or_duplicates(lines):
    store, counts = _ingest("\n".join(lines) + "\n", "events.jsonl")
    with store:
        _check_balance(store, counts, len(lines), first_line=1)
        assert counts.rows_in == sum(1 for ln in lines if ln.strip(" ") != "")


API_VALUE = st.one_of(st.none(), ID, JUNK, st.integers(-10**12, 10**13), st.floats(allow_nan=True, allow_infinity=True))


@st.composite
def api_event(draw) -> dict:
    if draw(st.booleans()):
        u, i, b, t = draw(valid_row())
        ev = {"user_id": u, "item_id": i, "behavior": b, "timestamp": draw(st.sampled_from([_iso(t), None]))}
    else:
        ev = {k: draw(API_VALUE) for k in ("user_id", "item_id", "behavior", "timestamp")}
    for extra in ("price", "quantity"):
        if draw(st.booleans()):
            ev[extra] = draw(API_VALUE)
    return ev


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.lists(api_event(), min_size=1, max_size=20))
def test_api_events_each_accepted_or_rejected_with_a_reason(events):
    with EventStore(":memory:") as store:
        writer = EventWriter(store)
        try:
            res = writer.write(events)
        finally:
            writer.close()
        assert len(res.accepted) + len(res.rejected) == len(events)
        assert sorted(r["index"] for r in res.rejected) == sorted(set(r["index"] for r in res.rejected))
        assert all(0 <= r["index"] < len(events) and r["reason"] for r in res.rejected)
        assert store.count("events") == len(res.accepted)
        assert store.quarantine().height == len(res.rejected)
        now = datetime.now(timezone.utc).timestamp()
        for user, item, behavior, t in res.accepted:
            assert user and item and behavior in ValidationRules().behaviors.weights
            assert now - 40 * 365 * 86400 < t < now + timedelta(days=2).total_seconds()


def test_concurrent_requests_share_commits_and_each_gets_its_own_result():
    """The writer commits the requests waiting together (and, under concurrency, waits a moment for
    more): each request must still get the outcome of its own events, rejects indexed within it."""
    with EventStore(":memory:") as store:
        writer = EventWriter(store)
        groups: list[int] = []
        commit = writer._commit
        writer._commit = lambda batches: (groups.append(len(batches)), commit(batches))[1]  # type: ignore[method-assign]

        def request(k: int) -> tuple[int, list[dict], object]:
            events = [{"user_id": f"u{k}", "item_id": f"i{j}", "behavior": "view"} for j in range(k % 3 + 1)]
            if k % 5 == 0:
                events.insert(1, {"user_id": f"u{k}", "behavior": "view"})  # no item: rejected at index 1
            return k, events, writer.submit(events)

        try:
            with ThreadPoolExecutor(8) as pool:
                sent = list(pool.map(request, range(200)))
            results = [(k, events, fut.result(timeout=60)) for k, events, fut in sent]
        finally:
            writer.close()
        assert max(groups) > 1 and sum(groups) == 200  # requests did share commits
        for k, events, res in results:
            assert len(res.accepted) == k % 3 + 1
            assert {(u, i) for u, i, _, _ in res.accepted} == {(f"u{k}", f"i{j}") for j in range(k % 3 + 1)}
            assert [r["index"] for r in res.rejected] == ([1] if k % 5 == 0 else [])
        assert store.count("events") == sum(k % 3 + 1 for k in range(200))


def test_api_time_range_follows_the_clock_of_a_long_running_writer(monkeypatch):
    """The default range ends at now + 1 day: a writer that has run for two days still takes current events."""
    import fusionrec.data.validation as validation
    import fusionrec.serving.events as events

    later = timedelta(days=2)

    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + later

    def event(when: datetime) -> dict:
        return {"user_id": "u", "item_id": "i", "behavior": "view", "timestamp": _iso(when)}

    with EventStore(":memory:") as store:
        writer = EventWriter(store)
        try:
            soon = datetime.now(timezone.utc) + timedelta(days=1, hours=12)
            first = writer.write([event(soon)])
            assert [r["reason"][:22] for r in first.rejected] == ["timestamp out of range"]
            # two days on: the event that was too far ahead is current now
            wall = events.time.time
            monkeypatch.setattr(validation, "datetime", Later)
            monkeypatch.setattr(events.time, "time", lambda: wall() + later.total_seconds())
            assert len(writer.write([event(soon)]).accepted) == 1
        finally:
            writer.close()


@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.lists(st.lists(api_event(), min_size=1, max_size=8), min_size=2, max_size=5))
def test_a_long_running_writer_judges_each_group_as_a_fresh_one_would(groups):
    """The writer's statements are prepared once and run on every group: what an earlier group held
    (no missing user, only short ids, ...) must not change how a later one is judged."""
    def outcome(res):
        return sorted((r["index"], r["reason"]) for r in res.rejected), len(res.accepted)

    with EventStore(":memory:") as store:
        writer = EventWriter(store)
        try:
            kept = [outcome(writer.write(g)) for g in groups]
        finally:
            writer.close()
        assert store.count("events") == sum(n for _, n in kept)
    for g, got in zip(groups, kept):
        with EventStore(":memory:") as fresh:
            w = EventWriter(fresh)
            try:
                assert outcome(w.write(g)) == got
            finally:
                w.close()


def test_a_missing_user_after_groups_without_one_is_rejected():
    # DuckDB's statistics propagation once folded `user_id IS NULL` to false in the prepared statement,
    # planned on a first group where no user was missing: the event then failed on another check
    with EventStore(":memory:") as store:
        writer = EventWriter(store)
        try:
            assert not writer.write([{"user_id": "u", "item_id": "i", "behavior": "view"}]).rejected
            res = writer.write([{"item_id": "i", "behavior": "view"}, {"user_id": "u" * 300, "item_id": "i",
                                                                       "behavior": "view"}])
        finally:
            writer.close()
    assert [r["reason"] for r in res.rejected] == ["missing user_id", "user_id too long: over 256 bytes"]
