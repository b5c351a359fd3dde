"""Event logs into Spark: the native format and Taobao UserBehavior, CSV or Parquet, from a path or glob.

Text files are read line by line (as the embedded adapters do), so every row keeps its file and
physical line and a malformed line is quarantined alone. An object-store URL (s3a://, gs://, abfss://,
hdfs://) is handed to Spark as it is. The raw columns match `fusionrec.data.adapters.RawEvents`.
"""

from __future__ import annotations

import glob as globlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fusionrec import schema as S
from fusionrec.data.adapters import MAX_LINE_BYTES, sniff
from fusionrec.errors import FormatError

__all__ = ["SparkSource", "read_source", "number_rows", "RAW_COLUMNS", "SPARK_FORMATS"]

RAW_COLUMNS = (S.USER_ID, S.ITEM_ID, S.BEHAVIOR, S.TIMESTAMP, S.SESSION_ID, S.QUANTITY, S.PRICE, S.CONTEXT, S.SPLIT)
SPARK_FORMATS = ("fusionrec", "taobao")
_URL = ("s3://", "s3a://", "s3n://", "gs://", "abfs://", "abfss://", "hdfs://", "wasb://", "wasbs://", "file:")
_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz", ".txt", ".txt.gz")


@dataclass
class SparkSource:
    """Raw events (string fields + seq, source, line, reject, raw) and an optional catalogue DataFrame."""

    format: str
    events: Any  # pyspark DataFrame
    items: Any | None = None  # pyspark DataFrame with item_id and any catalogue columns
    time_range: tuple[datetime, datetime] | None = None
    paths: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _is_url(path: str) -> bool:
    return path.startswith(_URL)


def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[{")


def _expand_local(path: str, what: str) -> list[str]:
    """Local files of a path or glob, sorted; a clear error when nothing matches."""
    found = sorted(globlib.glob(path)) if _has_glob(path) else ([path] if Path(path).exists() else [])
    if not found:
        raise FormatError(f"{path}: no such file or folder (expected {what})")
    return found


def number_rows(df: Any, order: list[Any], name: str, start: int = 0, partition_col: str | None = None,
                checkpoint: bool | None = None) -> Any:
    """`df` with a dense 0-based (+start) row number `name` in `order`, without one partition holding all rows.

    The JVM-only zipWithIndex: a sort (or the file scan's own order when `order` is empty), the row
    count of every partition (a small table on the driver), then each row's offset inside its partition.
    With `partition_col` the numbering restarts for each value of that column (lines of each file).
    """
    from pyspark.sql import functions as F

    base = df.orderBy(*order) if order else df
    base = base.withColumn("_pid", F.spark_partition_id()).withColumn("_mid", F.monotonically_increasing_id())
    if checkpoint if checkpoint is not None else bool(order):
        # materialised once, so the counts and the numbering see the same partitions (a file scan
        # partitions the same way every time; a sort's range boundaries come from a sample)
        base = base.localCheckpoint(eager=True)
    keys = ([partition_col] if partition_col else []) + ["_pid"]
    stats = base.groupBy(*keys).agg(F.count(F.lit(1)).alias("_n"), F.min("_mid").alias("_m0")).collect()
    offsets: dict[Any, int] = {}
    rows = []
    for r in sorted(stats, key=lambda r: tuple((r[k] is None, r[k]) for k in keys)):
        group = r[partition_col] if partition_col else None
        at = offsets.get(group, 0)
        rows.append(tuple(r[k] for k in keys) + (at - r["_m0"],))
        offsets[group] = at + r["_n"]
    spark = df.sparkSession
    off = spark.createDataFrame(rows, schema=", ".join(f"`{k}` {'string' if k == partition_col else 'int'}"
                                                      for k in keys) + ", _shift long")
    out = base.join(F.broadcast(off), on=keys, how="left")
    return out.withColumn(name, F.col("_mid") + F.col("_shift") + F.lit(start)).drop("_pid", "_mid", "_shift")


def _text_lines(spark: Any, paths: list[str]) -> Any:
    """(source, line, l): every non-blank physical line with its 1-based line number in its file."""
    from pyspark.sql import functions as F

    df = spark.read.option("lineSep", "\n").text(paths).select(
        F.regexp_replace("_metadata.file_path", "^file:", "").alias(S.SOURCE),
        # DuckDB's line reader drops CR and the UTF-8 byte-order mark; so do we
        F.regexp_replace(F.regexp_replace("value", "\r$", ""), "^\ufeff", "").alias("l"))
    df = number_rows(df, [], S.LINE, start=1, partition_col=S.SOURCE)
    return df.where(F.trim("l") != "")


def _fields(df: Any, delim: str, n_fields: int, extra_ok: bool = False) -> Any:
    """Adds `f` (array of fields, DuckDB's splitting: quotes honoured for commas) and `reject`."""
    from pyspark.sql import functions as F

    if delim == ",":
        quoted = ("transform(regexp_extract_all(l || ',', '(\"(?:[^\"]|\"\")*\"|[^,]*),', 1), "
                  "x -> CASE WHEN startswith(x, '\"') THEN replace(substr(x, 2, length(x) - 2), '\"\"', '\"') ELSE x END)")
        split = f"CASE WHEN contains(l, '\"') THEN {quoted} ELSE split(l, ',', -1) END"
        unterminated = ("WHEN contains(l, '\"') AND (length(l) - length(replace(l, '\"', ''))) % 2 = 1 "
                        "THEN 'unterminated quote: an odd number of double quotes' ")
    else:
        split = f"split(l, '{delim}', -1)"
        unterminated = ""
    names = {",": "commas", "\t": "tabs", ";": "semicolons"}.get(delim, "the delimiter")
    cmp = ">=" if extra_ok else "="
    df = df.withColumn("f", F.expr(f"CASE WHEN octet_length(l) > {MAX_LINE_BYTES} THEN array() ELSE {split} END"))
    return df.withColumn("reject", F.expr(
        f"CASE WHEN octet_length(l) > {MAX_LINE_BYTES} THEN 'line too long: over {MAX_LINE_BYTES} bytes' "
        f"{unterminated}WHEN NOT (size(f) {cmp} {n_fields}) THEN 'wrong number of fields: expected {n_fields} "
        f"separated by {names}, found ' || size(f) END"))


def _nullable(expr: str) -> str:
    """Empty -> NULL, surrounding spaces trimmed (the embedded adapters' rule)."""
    return f"nullif(trim({expr}), '')"


def _raw_select(df: Any, cols: dict[str, str], raw: str = "l") -> Any:
    from pyspark.sql import functions as F

    out = [F.expr(f"CAST({cols.get(n, 'NULL')} AS STRING)").alias(n) for n in RAW_COLUMNS]
    out += [F.col(S.LINE).cast("long").alias(S.SEQ), F.col(S.SOURCE), F.col(S.LINE).cast("long"),
            F.col("reject").cast("string"), F.expr(raw).alias("raw")]
    return df.select(*out)


def _first_line(spark: Any, path: str, what: str) -> str:
    if not _is_url(path) and Path(path).is_file():
        return sniff(Path(path), what)
    row = spark.read.text(path).limit(1).collect()
    if not row:
        raise FormatError(f"{path}: the file is empty; expected {what}")
    return str(row[0][0]).lstrip("\ufeff").rstrip("\r")


def _native_paths(path: str) -> tuple[list[str], str, list[str]]:
    """(event files or a URL/glob, kind csv|parquet, catalogue files) of a native-format PATH_OR_GLOB."""
    if _is_url(path):
        kind = "csv" if path.lower().endswith(_CSV) else "parquet"
        return [path], kind, []
    p = Path(path)
    if p.is_dir():
        for ext, kind in ((".csv", "csv"), (".csv.gz", "csv"), (".parquet", "parquet")):
            if (p / f"events{ext}").exists():
                items = [str(q) for q in (p / "items.csv", p / "items.csv.gz", p / "items.parquet") if q.exists()]
                return [str(p / f"events{ext}")], kind, items[:1]
        if list(p.glob("*.parquet")):
            return [str(p)], "parquet", []  # a Parquet dataset folder (e.g. written by Spark)
        raise FormatError(f"{path}: expected events.csv or events.parquet in this folder")
    files = _expand_local(path, "native event files (.csv or .parquet)")
    if any(f.lower().endswith((".jsonl", ".jsonl.gz", ".json")) for f in files):
        raise FormatError(f"{path}: JSON lines are not read by the Spark engine; convert to Parquet or CSV")
    kinds = {"parquet" if f.lower().endswith(_PARQUET) else "csv" if f.lower().endswith(_CSV) else "?" for f in files}
    if kinds == {"?"} or len(kinds) > 1:
        raise FormatError(f"{path}: expected .csv or .parquet event files (not a mix); found {', '.join(files[:3])}")
    return files, kinds.pop(), []


def _read_native(spark: Any, path: str, items_path: str | None) -> SparkSource:
    from pyspark.sql import functions as F

    files, kind, items = _native_paths(path)
    if kind == "parquet":
        df = spark.read.parquet(*files)
        missing = [c for c in S.REQUIRED_EVENT_COLUMNS if c not in df.columns]
        if missing:
            raise FormatError(f"{path}: expected Parquet columns {', '.join(S.REQUIRED_EVENT_COLUMNS)}; "
                              f"missing {', '.join(missing)}")
        present = [c for c in RAW_COLUMNS if c in df.columns]
        df = df.select(*[F.col(c) for c in present], F.regexp_replace("_metadata.file_path", "^file:", "").alias(S.SOURCE),
                       (F.col("_metadata.row_index") + 1).alias(S.LINE), F.lit(None).cast("string").alias("reject"))
        cols = {c: _nullable(f"CAST(`{c}` AS STRING)") for c in present}
        raw = "concat_ws(',', " + ", ".join(f"CAST(`{c}` AS STRING)" for c in present) + ")"
        events = _raw_select(df, cols, raw)
    else:
        expect = "a header line with the columns user_id,item_id,behavior,timestamp (comma-separated)"
        first = _first_line(spark, files[0], expect)
        names = [c.strip().strip('"').lower() for c in first.split(",")]
        missing = [c for c in S.REQUIRED_EVENT_COLUMNS if c not in names]
        if missing:
            raise FormatError(f"{files[0]}: expected {expect}; the header is {first[:120]!r}")
        lines = _fields(_text_lines(spark, files).where(F.col(S.LINE) > 1), ",", len(names))
        cols = {n: _nullable(f"get(f, {i})") for i, n in enumerate(names) if n in RAW_COLUMNS}
        events = _raw_select(lines, cols)
    src = SparkSource("fusionrec", events, paths=files)
    cat = items_path or (items[0] if items else None)
    if cat:
        src.items = _read_catalogue(spark, cat)
    return src


def _read_catalogue(spark: Any, path: str) -> Any:
    from pyspark.sql import functions as F

    if path.lower().endswith(_PARQUET) or (not _is_url(path) and Path(path).is_dir()):
        df = spark.read.parquet(path)
    else:
        df = spark.read.option("header", True).option("multiLine", False).option("escape", '"').csv(path)
    df = df.toDF(*[c.lstrip("\ufeff").strip().lower() for c in df.columns])
    if S.ITEM_ID not in df.columns:
        raise FormatError(f"{path}: expected a column {S.ITEM_ID!r}; found {', '.join(df.columns)[:200]}")
    keep = [c for c in S.ITEM_COLUMNS if c in df.columns]
    return df.select(*[F.col(c).cast("string") for c in keep])


def _read_taobao(spark: Any, path: str) -> SparkSource:
    from pyspark.sql import functions as F

    if _is_url(path):
        files = [path]
    elif Path(path).is_dir():
        files = sorted(str(p) for p in Path(path).iterdir() if p.name.endswith((".csv", ".csv.gz")))
        if not files:
            raise FormatError(f"{path}: expected UserBehavior CSV files (user,item,category,behavior,timestamp)")
    else:
        files = _expand_local(path, "UserBehavior CSV files")
    if not _is_url(files[0]):
        first = sniff(Path(files[0]), "UserBehavior CSV lines user,item,category,behavior,timestamp")
        if len(first.split(",")) != 5:
            raise FormatError(f"{files[0]}: expected 5 comma-separated fields user,item,category,behavior,timestamp; "
                              f"the first line is {first[:120]!r}")
    lines = _fields(_text_lines(spark, files), ",", 5)
    events = _raw_select(lines, {S.USER_ID: "get(f, 0)", S.ITEM_ID: "get(f, 1)", S.BEHAVIOR: "get(f, 3)",
                                   S.TIMESTAMP: "get(f, 4)"})
    items = (lines.where(F.col("reject").isNull() & (F.expr("nullif(trim(get(f, 1)), '')").isNotNull()))
             .groupBy(F.expr("get(f, 1)").alias(S.ITEM_ID)).agg(F.max(F.expr("get(f, 2)")).alias(S.CATEGORY)))
    # the dataset covers 2017-11-25 .. 2017-12-03 China time; rows outside are known noise (its README)
    lo = datetime(2017, 11, 24, 16, 0, tzinfo=timezone.utc)
    hi = datetime(2017, 12, 3, 16, 0, tzinfo=timezone.utc)
    return SparkSource("taobao", events, items=items, time_range=(lo, hi), paths=files,
                       notes=["timestamps outside 2017-11-25..2017-12-03 (UTC+8) are rejected, as the authors advise"])


def read_source(spark: Any, path: str, fmt: str, items: str | None = None) -> SparkSource:
    """The raw events (and catalogue) of PATH_OR_GLOB in FORMAT; nothing is read to the driver."""
    if fmt not in SPARK_FORMATS:
        raise FormatError(f"the Spark engine reads formats {', '.join(SPARK_FORMATS)}; got {fmt!r} "
                          "(train with the embedded engine for the others)")
    if fmt == "taobao":
        if items:
            raise FormatError("--items: the taobao format takes its catalogue (categories) from the events")
        return _read_taobao(spark, path)
    return _read_native(spark, path, items)
