"""Malformed input: every bad row is quarantined with file, line and reason; nothing is lost."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from fusionrec.errors import FormatError
from fusionrec.store.event_store import EventStore

HEADER = "user_id,item_id,behavior,timestamp\n"


def ingest(path: Path, fmt: str = "fusionrec"):
    store = EventStore(":memory:")
    report = store.ingest([path], fmt)
    return store, report


def write(tmp_path: Path, text: str | bytes, name: str = "events.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_each_bad_row_is_quarantined_with_line_and_reason(tmp_path):
    p = write(tmp_path, HEADER + "\n".join([
        "u1,i1,view,2026-01-05T10:00:00Z",  # line 2 ok
        "u2,i2",  # 3 truncated
        "u3,i3,teleport,2026-01-05T10:00:00Z",  # 4 unknown behaviour
        "u4,i4,buy,yesterday",  # 5 timestamp does not parse
        ",i5,buy,2026-01-05T10:00:00Z",  # 6 missing user
        "u6,,buy,2026-01-05T10:00:00Z",  # 7 missing item
        "u7,i7,buy,1850-01-01T00:00:00Z",  # 8 out of range
        "u8,i8,pv,1767607200",  # 9 alias + epoch seconds: ok
        "u9,i9,ADDTOCART,1767607200000",  # 10 alias, upper case, epoch ms: ok
    ]) + "\n")
    store, report = ingest(p)
    t = report.total
    assert (t.rows_in, t.accepted, t.rejected, t.duplicates) == (9, 3, 6, 0)
    q = {row["line"]: row["reason"] for row in store.quarantine().iter_rows(named=True)}
    assert set(q) == {3, 4, 5, 6, 7, 8}
    assert q[3].startswith("wrong number of fields")
    assert q[4] == "unknown behavior: 'teleport'"
    assert q[5].startswith("timestamp does not parse")
    assert q[6] == "missing user_id" and q[7] == "missing item_id"
    assert q[8].startswith("timestamp out of range")
    ev = store.events()
    assert sorted(ev["behavior"].to_list()) == ["cart", "view", "view"]


def test_price_and_quantity_checks(tmp_path):
    p = write(tmp_path, "user_id,item_id,behavior,timestamp,price,quantity\n"
              "u1,i1,buy,2026-01-05T10:00:00Z,9.99,2\n"
              "u1,i2,buy,2026-01-05T10:00:00Z,-1,1\n"
              "u1,i3,buy,2026-01-05T10:00:00Z,abc,1\n"
              "u1,i4,buy,2026-01-05T10:00:00Z,5,0\n")
    store, report = ingest(p)
    assert (report.total.accepted, report.total.rejected) == (1, 3)
    reasons = store.quarantine()["reason"].to_list()
    assert any(r.startswith("negative price") for r in reasons)
    assert any(r.startswith("price is not a number") for r in reasons)
    assert any(r.startswith("quantity is not positive") for r in reasons)
    assert store.events()["price"].to_list() == [9.99]


def test_bom_crlf_and_quotes(tmp_path):
    text = "\ufeff" + HEADER.replace("\n", "\r\n") + 'u1,i1,view,2026-01-05T10:00:00Z\r\n"u,2",i2,cart,2026-01-05T11:00:00Z\r\n'
    store, report = ingest(write(tmp_path, text))
    assert report.total.accepted == 2 and report.total.rejected == 0
    assert sorted(store.events()["user_id"].to_list()) == ["u,2", "u1"]


def test_exact_duplicates_counted_and_reingest_adds_nothing(tmp_path):
    p = write(tmp_path, HEADER + "u1,i1,view,2026-01-05T10:00:00Z\n" * 3 + "u1,i1,view,2026-01-05T10:00:01Z\n")
    store = EventStore(":memory:")
    first = store.ingest([p], "fusionrec").total
    assert (first.rows_in, first.accepted, first.duplicates) == (4, 2, 2)
    second = store.ingest([p], "fusionrec").total
    assert (second.rows_in, second.accepted, second.duplicates) == (4, 0, 4)
    assert store.count("events") == 2
    assert store.count("ingests") == 2


def test_events_read_back_in_time_order_with_the_columns_asked_for(tmp_path):
    p = write(tmp_path, HEADER + "u2,i2,buy,2026-01-05T10:00:02Z\nu1,i1,view,2026-01-05T10:00:00Z\n")
    store, _ = ingest(p)
    full = store.events()
    assert full.columns[:5] == ["user_id", "item_id", "behavior", "timestamp", "seq"] and "context" in full.columns
    lean = store.events(columns=("user_id", "item_id", "timestamp"))
    assert lean.columns == ["user_id", "item_id", "timestamp"] and lean["user_id"].to_list() == ["u1", "u2"]
    assert str(lean.schema["timestamp"].time_zone) == "UTC"
    with pytest.raises(ValueError, match="secret"):
        store.events(columns=("user_id", "secret"))


def test_unterminated_quote_does_not_swallow_the_rest(tmp_path):
    p = write(tmp_path, HEADER + '"u1,i1,view,2026-01-05T10:00:00Z\nu2,i2,view,2026-01-05T10:00:00Z\n'
              "u3,i3,view,2026-01-05T10:00:00Z\n")
    store, report = ingest(p)
    assert report.total.accepted == 2 and report.total.rejected == 1
    assert store.quarantine()["line"].to_list() == [2]


def test_ten_megabyte_line_is_rejected_alone(tmp_path):
    big = "u1,i" + "x" * (10 << 20) + ",view,2026-01-05T10:00:00Z"
    p = write(tmp_path, HEADER + "u0,i0,view,2026-01-05T10:00:00Z\n" + big + "\nu2,i2,buy,2026-01-05T10:00:00Z\n")
    store, report = ingest(p)
    t = report.total
    assert (t.rows_in, t.accepted, t.rejected) == (3, 2, 1)
    row = store.quarantine().row(0, named=True)
    assert row["line"] == 3 and row["reason"].startswith("line too long")
    assert len(row["raw"]) <= 1000  # the quarantine keeps a prefix, not 10 MB


def test_wrong_types_in_native_jsonl(tmp_path):
    p = write(tmp_path, '{"user_id": "u1", "item_id": "i1", "behavior": "view", "timestamp": "2026-01-05T10:00:00Z"}\n'
              "not json at all\n"
              '{"user_id": "u2", "item_id": 7, "behavior": "buy", "timestamp": 1767607200, "price": "x"}\n',
              name="events.jsonl")
    store, report = ingest(p)
    assert (report.total.accepted, report.total.rejected) == (1, 2)
    q = store.quarantine()
    assert q["line"].to_list() == [2, 3]
    assert q["reason"][0].startswith("not JSON")


@pytest.mark.parametrize("content,needle", [
    (b"", "empty"),
    (b"\x00\x01\x02binary\x00", "binary"),
    (b"user_id;item_id;behavior;timestamp\nu1;i1;view;2026-01-05\n", "separated by ';'"),
    (b"a,b,c\n1,2,3\n", "expected a header line"),
])
def test_file_not_what_its_format_says_fails_fast(tmp_path, content, needle):
    p = write(tmp_path, content)
    with pytest.raises(FormatError) as err:
        ingest(p)
    msg = str(err.value)
    assert str(p) in msg and needle in msg and "\n" not in msg


def test_header_only_file_loads_nothing(tmp_path):
    store, report = ingest(write(tmp_path, HEADER))
    assert report.total.rows_in == 0 and store.count("events") == 0


def test_gzip_and_parquet(tmp_path):
    body = HEADER + "u1,i1,view,2026-01-05T10:00:00Z\nu2,i2,buy,2026-01-06T10:00:00Z\n"
    gz = tmp_path / "events.csv.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(body)
    _, report = ingest(gz)
    assert report.total.accepted == 2
    pq = tmp_path / "pq" / "events.parquet"
    pq.parent.mkdir()
    pl.DataFrame({"user_id": ["u1", None], "item_id": ["i1", "i2"], "behavior": ["view", "buy"],
                  "timestamp": ["2026-01-05T10:00:00Z", "2026-01-05T10:00:00Z"]}).write_parquet(pq)
    store, report = ingest(pq.parent)
    assert (report.total.accepted, report.total.rejected) == (1, 1)
    assert store.quarantine()["line"].to_list() == [2]


def test_timezone_offsets_are_converted_to_utc(tmp_path):
    store, _ = ingest(write(tmp_path, HEADER + "u1,i1,view,2026-01-05T12:00:00+02:00\n"))
    ts = store.events()["timestamp"][0]
    assert (ts.hour, ts.minute) == (10, 0)


def test_clean_file_takes_the_fast_parser_with_exact_lines(tmp_path):
    rows = [f"u{i},i{i},view,2026-01-05T10:00:{i:02d}Z" for i in range(40)]
    rows[10] = "u10,i10,teleport,2026-01-05T10:00:10Z"  # line 12 of the file
    rows[30] = 'u30,"i,30",buy,-5'  # quoted comma; out-of-range timestamp at line 32
    store, report = ingest(write(tmp_path, HEADER + "\n".join(rows) + "\n"))
    assert (report.total.accepted, report.total.rejected) == (38, 2)
    assert store.quarantine()["line"].to_list() == [12, 32]
    assert store.events().sort("seq")["seq"].to_list()[:3] == [2, 3, 4]
