"""Adapters: one per input FORMAT of CONTRACT.md, each turning files into SQL over raw text fields.

Every text file is read line by line by DuckDB (vectorised, streamed, multi-threaded), so each
row keeps its physical line number and a malformed line is rejected alone instead of swallowing
the rest of the file. An adapter only says how fields map onto the raw event columns; validation
(`fusionrec.data.validation`) is shared by all formats.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import polars as pl

from fusionrec import schema as S
from fusionrec.errors import FormatError

__all__ = ["SourcePlan", "RawEvents", "plan_source", "FORMATS", "sql_str"]

#: a delimiter that never occurs in text, so DuckDB hands us whole lines
_NO_DELIM = "\x1f\x1e\x1d\x1c"
MAX_LINE_BYTES = 1 << 20  # longer lines are quarantined, not parsed
_READ_LIMIT = 64 << 20  # DuckDB refuses lines longer than this outright


def sql_str(value: str | Path) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class RawEvents:
    """A SELECT yielding raw VARCHAR event fields plus provenance for one source file.

    Columns: user_id, item_id, behavior, timestamp, session_id, quantity, price, context, split,
    seq (BIGINT), source, line (BIGINT), reject (parse-level reason or NULL), raw (the line's text).
    """

    sql: str
    source: Path
    setup: list[str] = field(default_factory=list)  # statements to run first (e.g. materialise lines)
    temp_tables: list[str] = field(default_factory=list)  # dropped afterwards
    items_sql: str | None = None  # catalogue rows found in the events file (item_id, category)
    #: a faster plan to try first (DuckDB's parser); the store falls back to this one on any parse reject
    fast: "RawEvents | None" = None


@dataclass
class SourcePlan:
    """What an adapter found: raw events per file, optional catalogue and users, and caveats."""

    format: str
    events: list[RawEvents]
    items: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    has_timestamps: bool = True
    time_range: tuple[datetime, datetime] | None = None
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


# -- reading text ------------------------------------------------------------------------------

def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8", errors="replace") if path.suffix == ".gz" else open(
        path, encoding="utf-8", errors="replace", newline="")


def sniff(path: Path, what: str) -> str:
    """The first line of a text file, after checks that fail fast on binary or empty files."""
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if path.is_dir():
        raise FormatError(f"{path}: is a folder, expected a file with {what}")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            head = fh.read(8192)
    except OSError as exc:
        raise FormatError(f"{path}: cannot be read ({exc}); expected {what}") from None
    if not head:
        raise FormatError(f"{path}: the file is empty; expected {what}")
    if b"\x00" in head:
        raise FormatError(f"{path}: binary data (NUL bytes); expected text with {what}")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multi-byte char cut at the buffer end is fine
            raise FormatError(f"{path}: not UTF-8 text (byte {exc.start}); expected {what}") from None
    first = head.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    return first.lstrip("\ufeff").rstrip("\r")


def _lines_table(path: Path) -> str:
    """The name of a temp table of a text file's lines, in file order (its rowid + 1 is the line).

    DuckDB's reader strips CR and the UTF-8 BOM itself; materialising the lines in parallel and
    numbering them by rowid is several times faster than a row_number() window.
    """
    return "_lines_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]


def lines_setup(path: Path) -> str:
    return (f"CREATE OR REPLACE TEMP TABLE {_lines_table(path)} AS SELECT l "
            f"FROM read_csv({sql_str(path)}, columns={{'l': 'VARCHAR'}}, header=false, delim='{_NO_DELIM}', "
            f"quote='', escape='', auto_detect=false, max_line_size={_READ_LIMIT}, compression='auto')")


def _lines_sql(path: Path) -> str:
    """(line, l): every physical line of a text file."""
    return f"(SELECT rowid + 1 AS line, l FROM {_lines_table(path)})"


def _split_expr(delim: str) -> str:
    """SQL splitting `l` into a list of fields; comma files honour double quotes."""
    if delim == " ":
        return "regexp_split_to_array(trim(l), '\\s+')"
    if delim == ",":
        quoted = (
            "list_transform(regexp_extract_all(l || ',', '(\"(?:[^\"]|\"\")*\"|[^,]*),', 1), "
            "x -> CASE WHEN starts_with(x, '\"') THEN replace(x[2:-2], '\"\"', '\"') ELSE x END)"
        )
        return f"CASE WHEN contains(l, '\"') THEN {quoted} ELSE string_split(l, ',') END"
    return f"string_split(l, {sql_str(delim)})"


def _fields_sql(path: Path, delim: str, n_fields: int, header: bool, extra_ok: bool = False) -> str:
    """(line, l, f, reject): split lines with a field-count check; blank lines are skipped."""
    cmp = ">=" if extra_ok else "="
    unterminated = ("WHEN contains(l, '\"') AND (strlen(l) - strlen(replace(l, '\"', ''))) % 2 = 1 "
                    "THEN 'unterminated quote: an odd number of double quotes' ") if delim == "," else ""
    names = {",": "commas", "\t": "tabs", ";": "semicolons", " ": "spaces"}.get(delim, "the delimiter")
    return (
        f"(SELECT line, l, f, CASE "
        f"WHEN strlen(l) > {MAX_LINE_BYTES} THEN 'line too long: over {MAX_LINE_BYTES} bytes' "
        f"{unterminated}WHEN NOT (len(f) {cmp} {n_fields}) THEN 'wrong number of fields: expected {n_fields} separated by {names}, found ' || len(f) "
        f"END AS reject FROM (SELECT line, l, CASE WHEN strlen(l) > {MAX_LINE_BYTES} THEN [] ELSE {_split_expr(delim)} END AS f "
        f"FROM {_lines_sql(path)} WHERE {'line > 1 AND ' if header else ''}trim(l) <> ''))"
    )


def _text_events(src: str, path: Path, cols: dict[str, str]) -> RawEvents:
    """RawEvents over a line-based text file."""
    return RawEvents(_event_select(src, path, cols), path, setup=[lines_setup(path)], temp_tables=[_lines_table(path)])


def _event_select(src: str, path: Path, cols: dict[str, str]) -> str:
    """Map expressions over a fields relation onto the raw event columns."""
    out = []
    for name in (S.USER_ID, S.ITEM_ID, S.BEHAVIOR, S.TIMESTAMP, S.SESSION_ID, S.QUANTITY, S.PRICE, S.CONTEXT, S.SPLIT):
        expr = cols.get(name, "NULL")
        out.append(f"CAST({expr} AS VARCHAR) AS {name}")
    seq = cols.get(S.SEQ, "line")
    out += [f"CAST({seq} AS BIGINT) AS {S.SEQ}", f"{sql_str(path)} AS {S.SOURCE}", f"CAST(line AS BIGINT) AS {S.LINE}",
            "reject", "l AS raw"]
    return f"SELECT {', '.join(out)} FROM {src}"


def _nullable(expr: str) -> str:
    """Empty -> NULL; surrounding spaces trimmed only where present (trim on every value is slow)."""
    return (f"CASE WHEN {expr} = '' THEN NULL WHEN starts_with({expr}, ' ') OR ends_with({expr}, ' ') "
            f"THEN nullif(trim({expr}), '') ELSE {expr} END")


# -- formats -----------------------------------------------------------------------------------

_NATIVE_EXPECT = "a header line with the columns user_id,item_id,behavior,timestamp (comma-separated)"
_EXT_CSV = (".csv", ".csv.gz", ".txt", ".txt.gz")
_EXT_PARQUET = (".parquet", ".pq")
_EXT_JSONL = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_EXT_PARQUET):
        return "parquet"
    if name.endswith(_EXT_JSONL):
        return "jsonl"
    if name.endswith(_EXT_CSV):
        return "csv"
    raise FormatError(f"{path}: unknown file type; expected .csv, .parquet or .jsonl (optionally .gz)")


def _native_table(folder: Path, stem: str) -> Path | None:
    for ext in _EXT_CSV[:2] + _EXT_PARQUET + _EXT_JSONL:
        p = folder / f"{stem}{ext}"
        if p.exists():
            return p
    return None


def _native_csv_events(path: Path) -> RawEvents:
    first = sniff(path, _NATIVE_EXPECT)
    names = [c.strip().strip('"').lower() for c in first.split(",")]
    missing = [c for c in S.REQUIRED_EVENT_COLUMNS if c not in names]
    if missing:
        hint = ""
        for d, label in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")):
            if d in first:
                hint = f" (it looks separated by {label}; fusionrec CSV uses commas)"
        raise FormatError(f"{path}: expected {_NATIVE_EXPECT}; the header is {first[:120]!r}{hint}")
    cols = {n: _nullable(f"f[{i + 1}]") for i, n in enumerate(names) if n in S.EVENT_COLUMNS or n == S.SPLIT}
    exact = _text_events(_fields_sql(path, ",", len(names), header=True), path, cols)
    exact.fast = _native_csv_fast(path, names)
    return exact


def _native_csv_fast(path: Path, names: list[str]) -> RawEvents:
    """DuckDB's own parallel CSV reader: used when its parser accepts every line (checked by the store).

    Lines are numbered afterwards from the staged table's rowid (+2: the header, 1-based), which is
    exact when no line was skipped; any parser reject sends the file to the exact line-based path.
    """
    fields = [f"c{i}" for i in range(len(names))]
    spec = ", ".join(f"'{f}': 'VARCHAR'" for f in fields)
    src = (f"(SELECT * FROM read_csv({sql_str(path)}, header=true, delim=',', quote='\"', escape='\"', "
           f"auto_detect=false, columns={{{spec}}}, store_rejects=true, ignore_errors=true, "
           f"max_line_size={MAX_LINE_BYTES}, compression='auto'))")
    cols = {n: _nullable(f"c{i}") for i, n in enumerate(names) if n in S.EVENT_COLUMNS or n == S.SPLIT}
    select = []
    for name in (S.USER_ID, S.ITEM_ID, S.BEHAVIOR, S.TIMESTAMP, S.SESSION_ID, S.QUANTITY, S.PRICE, S.CONTEXT, S.SPLIT):
        select.append(f"CAST({cols.get(name, 'NULL')} AS VARCHAR) AS {name}")
    select += [f"NULL::BIGINT AS {S.SEQ}", f"{sql_str(path)} AS {S.SOURCE}", f"NULL::BIGINT AS {S.LINE}",
               "NULL::VARCHAR AS reject", f"concat_ws(',', {', '.join(fields)}) AS raw"]
    return RawEvents(f"SELECT {', '.join(select)} FROM {src}", path)


def _native_jsonl_events(path: Path) -> RawEvents:
    sniff(path, "JSON objects, one per line")
    src = (
        f"(SELECT line, l, CASE WHEN strlen(l) > {MAX_LINE_BYTES} THEN 'line too long: over {MAX_LINE_BYTES} bytes' "
        "WHEN j IS NULL OR json_type(j) <> 'OBJECT' THEN 'not JSON: expected one object per line' END AS reject, j "
        f"FROM (SELECT line, l, CASE WHEN strlen(l) <= {MAX_LINE_BYTES} AND coalesce(json_valid(l), false) THEN l END AS j "
        f"FROM {_lines_sql(path)} WHERE trim(l) <> ''))"
    )
    get = {n: f"CASE WHEN reject IS NULL THEN {_nullable(f'json_extract_string(j, {sql_str(chr(36) + chr(46) + n)})')} END"
           for n in S.EVENT_COLUMNS + (S.SPLIT,)}
    return _text_events(src, path, get)


def _native_parquet_events(path: Path, con_columns: list[str]) -> RawEvents:
    missing = [c for c in S.REQUIRED_EVENT_COLUMNS if c not in con_columns]
    if missing:
        raise FormatError(f"{path}: expected Parquet columns {', '.join(S.REQUIRED_EVENT_COLUMNS)}; missing {', '.join(missing)}")
    src = (f"(SELECT file_row_number + 1 AS line, NULL::VARCHAR AS l, NULL::VARCHAR AS reject, * "
           f"FROM read_parquet({sql_str(path)}, file_row_number=true))")
    cols = {n: _nullable(f'CAST("{n}" AS VARCHAR)') for n in con_columns if n in S.EVENT_COLUMNS or n == S.SPLIT}
    if S.TIMESTAMP in cols:
        # typed timestamps come back as '2026-01-05 10:11:12', which the validator parses as UTC
        cols[S.TIMESTAMP] = _nullable(f'CAST("{S.TIMESTAMP}" AS VARCHAR)')
    return RawEvents(_event_select(src, path, cols), path)


def _read_side_table(path: Path, key: str, columns: tuple[str, ...]) -> pl.DataFrame:
    """A catalogue or users table in the native format: `key` required, other known columns optional."""
    kind = _kind(path)
    try:
        if kind == "parquet":
            df = pl.read_parquet(path)
        elif kind == "jsonl":
            df = pl.read_ndjson(path, infer_schema_length=None)
        else:
            sniff(path, f"a header line with a {key} column")
            df = pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
    except FormatError:
        raise
    except Exception as exc:  # polars' own message names the problem; we add the file
        raise FormatError(f"{path}: cannot be parsed ({str(exc).splitlines()[0]})") from None
    df = df.rename({c: c.lstrip("\ufeff").strip().lower() for c in df.columns})
    if key not in df.columns:
        raise FormatError(f"{path}: expected a column {key!r}; found {', '.join(df.columns)[:200]}")
    keep = [c for c in columns if c in df.columns]
    return df.select([pl.col(c).cast(pl.Utf8) for c in keep])


def _plan_fusionrec(path: Path) -> SourcePlan:
    import duckdb

    folder = path if path.is_dir() else None
    events_path = _native_table(path, "events") if folder else path
    if events_path is None:
        raise FormatError(f"{path}: expected events.csv, events.parquet or events.jsonl in this folder")
    kind = _kind(events_path)
    if kind == "csv":
        ev = _native_csv_events(events_path)
    elif kind == "jsonl":
        ev = _native_jsonl_events(events_path)
    else:
        try:
            cols = [c[0] for c in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet({sql_str(events_path)})").fetchall()]
        except duckdb.Error as exc:
            raise FormatError(f"{events_path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        ev = _native_parquet_events(events_path, cols)
    plan = SourcePlan("fusionrec", [ev], files=[events_path])
    if folder:
        items = _native_table(folder, "items")
        users = _native_table(folder, "users")
        if items:
            plan.items = _read_side_table(items, S.ITEM_ID, S.ITEM_COLUMNS)
            plan.files.append(items)
        if users:
            plan.users = _read_side_table(users, S.USER_ID, S.USER_COLUMNS)
            plan.files.append(users)
    return plan


def _plan_taobao(path: Path) -> SourcePlan:
    files = sorted(p for p in path.iterdir() if p.name.endswith((".csv", ".csv.gz"))) if path.is_dir() else [path]
    if not files:
        raise FormatError(f"{path}: expected UserBehavior CSV files (user,item,category,behavior,timestamp)")
    events = []
    for f in files:
        first = sniff(f, "UserBehavior CSV lines user,item,category,behavior,timestamp")
        if len(first.split(",")) != 5:
            raise FormatError(f"{f}: expected 5 comma-separated fields user,item,category,behavior,timestamp; "
                              f"the first line is {first[:120]!r}")
        src = _fields_sql(f, ",", 5, header=False)
        ev = _text_events(src, f, {S.USER_ID: "f[1]", S.ITEM_ID: "f[2]", S.BEHAVIOR: "f[4]", S.TIMESTAMP: "f[5]"})
        ev.items_sql = (f"SELECT f[2] AS {S.ITEM_ID}, max(f[3]) AS {S.CATEGORY} FROM {src} "
                        f"WHERE reject IS NULL AND nullif(trim(f[2]), '') IS NOT NULL GROUP BY 1")
        events.append(ev)
    # The dataset covers 2017-11-25 .. 2017-12-03 China time; rows outside are known noise (README).
    lo = datetime(2017, 11, 24, 16, 0, tzinfo=timezone.utc)
    hi = datetime(2017, 12, 3, 16, 0, tzinfo=timezone.utc)
    plan = SourcePlan("taobao", events, time_range=(lo, hi), files=files,
                      notes=["timestamps outside 2017-11-25..2017-12-03 (UTC+8) are rejected, as the authors advise"])
    return plan


def _list_lines_events(path: Path, behavior: str, split: str | None, prefix: str = "") -> RawEvents:
    """`user item item ...` lines: one event per item; seq keeps the line order (time order in s3rec)."""
    sniff(path, "lines 'user item item ...' separated by spaces")
    src = (f"(SELECT line, l, reject, u, unnest(items) AS item, unnest(generate_series(1, len(items))) AS pos FROM "
           f"(SELECT line, l, CASE WHEN strlen(l) > {MAX_LINE_BYTES} THEN 'line too long: over {MAX_LINE_BYTES} bytes' END AS reject, "
           f"f[1] AS u, CASE WHEN len(f) > 1 THEN f[2:] ELSE [NULL] END AS items FROM "
           f"(SELECT line, l, CASE WHEN strlen(l) > {MAX_LINE_BYTES} THEN [NULL] ELSE regexp_split_to_array(trim(l), '\\s+') END AS f "
           f"FROM {_lines_sql(path)} WHERE trim(l) <> '')))")
    pre = sql_str(prefix)
    return _text_events(src, path, {
        S.USER_ID: f"{pre} || u", S.ITEM_ID: f"{pre} || item", S.BEHAVIOR: sql_str(behavior),
        S.SPLIT: sql_str(split) if split else "NULL", S.SEQ: "line * 100000 + pos"})


def _plan_lightgcn(path: Path) -> SourcePlan:
    if path.is_dir():
        files = [(path / f"{s}.txt", s) for s in ("train", "valid", "test") if (path / f"{s}.txt").exists()]
        if not files:
            raise FormatError(f"{path}: expected train.txt and test.txt with lines 'user item item ...'")
    else:
        stem = path.name.split(".")[0]
        files = [(path, stem if stem in ("train", "valid", "test") else None)]
    events = [_list_lines_events(f, "view", s) for f, s in files]
    return SourcePlan("lightgcn", events, has_timestamps=False, files=[f for f, _ in files],
                      notes=["no timestamps: the order of items on each line is kept as seq"])


def _ehcf_events(path: Path, behavior: str, split: str | None) -> RawEvents:
    first = sniff(path, "TSV lines 'uid<TAB>sid' with a header")
    n = len(first.split("\t"))
    if n < 2:
        raise FormatError(f"{path}: expected tab-separated columns uid, sid; the header is {first[:120]!r}")
    src = _fields_sql(path, "\t", 2, header=True, extra_ok=True)
    return _text_events(src, path, {S.USER_ID: "f[1]", S.ITEM_ID: "f[2]", S.BEHAVIOR: sql_str(behavior),
                                    S.SPLIT: sql_str(split) if split else "NULL"})


def _plan_ehcf(path: Path) -> SourcePlan:
    if not path.is_dir():
        raise FormatError(f"{path}: expected a folder with buy.train.txt, buy.test.txt and optional <behavior>.csv")
    events, files = [], []
    for f in sorted(path.iterdir()):
        m = re.fullmatch(r"([a-z]+)\.(train|test|valid)\.txt", f.name)
        m2 = re.fullmatch(r"([a-z]+)\.csv", f.name)
        if m:
            events.append(_ehcf_events(f, m.group(1), m.group(2)))
        elif m2:
            events.append(_ehcf_events(f, m2.group(1), "train"))
        else:
            continue
        files.append(f)
    if not events:
        raise FormatError(f"{path}: expected buy.train.txt and buy.test.txt (TSV uid sid)")
    return SourcePlan("ehcf", events, has_timestamps=False, files=files,
                      notes=["no timestamps: file order kept as seq; auxiliary behaviours belong to train"])


def _s3rec_attributes(path: Path, prefix: str) -> pl.DataFrame | None:
    stem = path.name.split(".")[0]
    for cand in (path.parent / f"{stem}_item2attributes.json.gz", path.parent / f"{stem}_item2attributes.json"):
        if cand.exists():
            try:
                with _open_text(cand) as fh:
                    mapping = json.load(fh)
            except (json.JSONDecodeError, OSError) as exc:
                raise FormatError(f"{cand}: expected a JSON object item -> [attribute ids] ({exc})") from None
            ids = list(mapping)
            attrs = [json.dumps({"attribute_ids": mapping[i]}) for i in ids]
            text = [" ".join(f"a{a}" for a in mapping[i]) for i in ids]
            return pl.DataFrame({S.ITEM_ID: [prefix + i for i in ids], S.ATTRIBUTES: attrs, S.TEXT: text})
    return None


def _plan_s3rec(path: Path) -> SourcePlan:
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if re.fullmatch(r".+\.txt(\.gz)?", p.name) and "_item2attributes" not in p.name)
    else:
        files = [path]
    if not files:
        raise FormatError(f"{path}: expected <Name>.txt(.gz) files with lines 'user item item ...'")
    multi = len(files) > 1
    events, items = [], []
    for f in files:
        prefix = f.name.split(".")[0] + "/" if multi else ""
        events.append(_list_lines_events(f, "buy", None, prefix))
        attrs = _s3rec_attributes(f, prefix)
        if attrs is not None:
            items.append(attrs)
    notes = ["no timestamps: items on each line are in time order (kept as seq)"]
    if multi:
        notes.append("several datasets in one folder: ids are prefixed with the file name")
    return SourcePlan("s3rec", events, items=pl.concat(items) if items else None, has_timestamps=False,
                      files=files, notes=notes)


def _recbole_header(path: Path) -> list[str]:
    first = sniff(path, "a RecBole header 'name:type<TAB>...'")
    return [c.split(":")[0].strip().lower() for c in first.split("\t")]


def _plan_movielens(path: Path) -> SourcePlan:
    folder = path if path.is_dir() else path.parent
    inters = sorted(folder.glob("*.inter")) if path.is_dir() else [path]
    if not inters:
        raise FormatError(f"{path}: expected a RecBole .inter file")
    events = []
    for f in inters:
        names = _recbole_header(f)
        if "user_id" not in names or "item_id" not in names:
            raise FormatError(f"{f}: expected RecBole columns user_id:token and item_id:token; found {names}")
        pos = {n: i + 1 for i, n in enumerate(names)}
        cols = {S.USER_ID: f"f[{pos['user_id']}]", S.ITEM_ID: f"f[{pos['item_id']}]", S.BEHAVIOR: "'view'"}
        if "timestamp" in pos:
            cols[S.TIMESTAMP] = f"f[{pos['timestamp']}]"
        if "rating" in pos:
            cols[S.CONTEXT] = f"CASE WHEN reject IS NULL THEN '{{\"rating\": ' || f[{pos['rating']}] || '}}' END"
        events.append(_text_events(_fields_sql(f, "\t", len(names), header=True), f, cols))
    plan = SourcePlan("movielens", events, files=list(inters),
                      notes=["ratings are kept in context; every rating counts as a view"])
    item_files = sorted(folder.glob("*.item")) if path.is_dir() else [p for p in [path.with_suffix(".item")] if p.exists()]
    if item_files:
        df = pl.read_csv(item_files[0], separator="\t", infer_schema=False, quote_char=None)
        df = df.rename({c: c.split(":")[0].lower() for c in df.columns})
        genres = df["class"] if "class" in df.columns else pl.Series([None] * df.height, dtype=pl.Utf8)
        plan.items = pl.DataFrame({
            S.ITEM_ID: df["item_id"],
            S.TITLE: df["movie_title"] if "movie_title" in df.columns else None,
            S.CATEGORY: genres.str.split(" ").list.first().str.to_lowercase(),
            S.ATTRIBUTES: pl.DataFrame({"year": df.get_column("release_year") if "release_year" in df.columns else None,
                                        "genres": genres}).select(pl.struct(pl.all()).struct.json_encode())[:, 0],
        })
        plan.files.append(item_files[0])
    user_files = sorted(folder.glob("*.user")) if path.is_dir() else []
    if user_files:
        df = pl.read_csv(user_files[0], separator="\t", infer_schema=False, quote_char=None)
        df = df.rename({c: c.split(":")[0].lower() for c in df.columns})
        other = [c for c in df.columns if c != "user_id"]
        plan.users = pl.DataFrame({S.USER_ID: df["user_id"],
                                   S.ATTRIBUTES: df.select(pl.struct(other).struct.json_encode())[:, 0]})
        plan.files.append(user_files[0])
    return plan


def _yoochoose_events(path: Path, split: str | None) -> RawEvents:
    first = sniff(path, "TSV with header SessionId ItemId Time")
    names = [c.strip().lower() for c in first.split("\t")]
    if not {"sessionid", "itemid", "time"} <= set(names):
        raise FormatError(f"{path}: expected a tab-separated header SessionId, ItemId, Time; found {first[:120]!r}")
    pos = {n: i + 1 for i, n in enumerate(names)}
    src = _fields_sql(path, "\t", len(names), header=True)
    s = f"f[{pos['sessionid']}]"
    return _text_events(src, path, {S.USER_ID: s, S.SESSION_ID: s, S.ITEM_ID: f"f[{pos['itemid']}]",
                                    S.BEHAVIOR: "'click'", S.TIMESTAMP: f"f[{pos['time']}]",
                                    S.SPLIT: sql_str(split) if split else "NULL"})


def _plan_yoochoose(path: Path) -> SourcePlan:
    if path.is_dir():
        full = sorted(path.glob("*_train_full.txt"))
        pick = [(p, "train") for p in full] or [(p, "train") for p in sorted(path.glob("*_train_tr.txt"))] + [
            (p, "valid") for p in sorted(path.glob("*_train_valid.txt"))]
        pick += [(p, "test") for p in sorted(path.glob("*_test.txt"))]
        if not pick:
            raise FormatError(f"{path}: expected *_train_full.txt and *_test.txt session files")
    else:
        split = "test" if path.name.endswith("_test.txt") else ("train" if "_train" in path.name else None)
        pick = [(path, split)]
    return SourcePlan("yoochoose", [_yoochoose_events(p, s) for p, s in pick], files=[p for p, _ in pick],
                      notes=["anonymous sessions: each session is its own user"])


def _plan_diginetica(path: Path) -> SourcePlan:
    folder = path if path.is_dir() else path.parent
    logs = [(folder / "train-purchases.csv", "buy"), (folder / "train-item-views.csv", "view")]
    logs = [(p, b) for p, b in logs if p.exists()] if path.is_dir() else [(path, "view" if "view" in path.name else "buy")]
    if not logs:
        raise FormatError(f"{path}: expected train-purchases.csv or train-item-views.csv (';'-separated)")
    events = []
    for f, beh in logs:
        first = sniff(f, "';'-separated header sessionId;userId;...;itemId")
        names = [c.strip().lower() for c in first.split(";")]
        if not {"sessionid", "userid", "itemid", "eventdate"} <= set(names):
            raise FormatError(f"{f}: expected ';'-separated columns sessionId, userId, itemId, eventdate; found {first[:120]!r}")
        pos = {n: f"f[{i + 1}]" for i, n in enumerate(names)}
        tf = pos.get("timeframe", "'0'")
        ts = (f"CASE WHEN TRY_CAST({pos['eventdate']} AS DATE) IS NOT NULL AND TRY_CAST({tf} AS BIGINT) IS NOT NULL THEN "
              f"strftime(CAST({pos['eventdate']} AS DATE) + to_milliseconds(CAST({tf} AS BIGINT)), '%Y-%m-%dT%H:%M:%S.%g') "
              f"ELSE {pos['eventdate']} END")
        user = f"CASE WHEN {pos['userid']} IN ('NA', '') THEN 's' || {pos['sessionid']} ELSE {pos['userid']} END"
        events.append(_text_events(_fields_sql(f, ";", len(names), header=True), f, {
            S.USER_ID: user, S.ITEM_ID: pos["itemid"], S.BEHAVIOR: sql_str(beh), S.TIMESTAMP: ts,
            S.SESSION_ID: pos["sessionid"]}))
    plan = SourcePlan("diginetica", events, files=[p for p, _ in logs],
                      notes=["anonymous buyers (userId NA) are keyed by their session as 's<sessionId>'"])
    cats = folder / "product-categories.csv"
    if cats.exists():
        df = pl.read_csv(cats, separator=";", infer_schema=False)
        plan.items = pl.DataFrame({S.ITEM_ID: df[df.columns[0]], S.CATEGORY: df[df.columns[1]]})
        plan.files.append(cats)
    return plan


FORMATS: dict[str, Callable[[Path], SourcePlan]] = {
    "fusionrec": _plan_fusionrec,
    "taobao": _plan_taobao,
    "lightgcn": _plan_lightgcn,
    "ehcf": _plan_ehcf,
    "s3rec": _plan_s3rec,
    "movielens": _plan_movielens,
    "yoochoose": _plan_yoochoose,
    "diginetica": _plan_diginetica,
}


def plan_source(path: Path | str, fmt: str) -> SourcePlan:
    """The adapter's plan for one path (file or folder) of a FORMAT."""
    path = Path(path)
    if fmt not in FORMATS:
        raise FormatError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    return FORMATS[fmt](path)
