"""Validation on Spark: the embedded path's rules and reasons (`fusionrec.data.validation`) as Spark SQL.

Every raw row is accepted, quarantined with the same reason text, or dropped as an exact duplicate
(the same content columns), so rows in = accepted + rejected + duplicates, as in the DuckDB store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timezone
from typing import Any

from fusionrec import schema as S
from fusionrec.data.validation import CONTENT_COLUMNS, MAX_ID_LENGTH, IngestCounts, ValidationRules, _behavior_case
from fusionrec.errors import ConfigError

__all__ = ["validated", "deduplicated", "ValidationResult", "validate_and_dedup"]


def _ts_expr() -> str:
    """ISO 8601 (a trailing offset is honoured; the session is UTC), else epoch seconds or milliseconds.

    DuckDB tries the timestamp cast first; Spark's cast also reads bare numbers as years ('2017'), so
    numbers are recognised first here, which gives DuckDB's answer for every input either accepts.
    """
    num = "try_cast(timestamp AS DOUBLE)"
    numeric = (f"CASE WHEN abs({num}) >= 1e15 THEN NULL "
               f"WHEN abs({num}) >= 1e11 THEN timestamp_micros(CAST(round({num} * 1000) AS BIGINT)) "
               f"ELSE timestamp_micros(CAST(round({num} * 1000000) AS BIGINT)) END")
    return (f"CASE WHEN timestamp IS NULL THEN NULL WHEN {num} IS NOT NULL THEN {numeric} "
            f"ELSE try_cast(timestamp AS TIMESTAMP) END")


def validated(raw: Any, rules: ValidationRules) -> Any:
    """Typed event columns plus `reason` (NULL when accepted), source, line and raw text (rejects only)."""
    from pyspark.sql import functions as F

    if rules.pseudonym_key:
        raise ConfigError("pseudonymised user ids (FUSIONREC_PSEUDONYM_KEY) are not supported by the Spark engine yet")
    lo, hi = rules.bounds()
    lo_s = lo.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    hi_s = hi.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    need_ts = "TRUE" if rules.require_timestamp else "FALSE"
    reason = f"""CASE
         WHEN reject IS NOT NULL THEN reject
         WHEN user_id IS NULL THEN 'missing user_id'
         WHEN item_id IS NULL THEN 'missing item_id'
         WHEN octet_length(user_id) > {MAX_ID_LENGTH} THEN 'user_id too long: over {MAX_ID_LENGTH} bytes'
         WHEN octet_length(item_id) > {MAX_ID_LENGTH} THEN 'item_id too long: over {MAX_ID_LENGTH} bytes'
         WHEN behavior IS NULL THEN 'missing behavior'
         WHEN beh IS NULL THEN 'unknown behavior: ' || chr(39) || left(behavior, 40) || chr(39)
         WHEN timestamp IS NULL AND {need_ts} THEN 'missing timestamp'
         WHEN timestamp IS NOT NULL AND ts IS NULL THEN 'timestamp does not parse: ' || chr(39) || left(timestamp, 40) || chr(39)
         WHEN ts < TIMESTAMP '{lo_s}' OR ts > TIMESTAMP '{hi_s}'
           THEN 'timestamp out of range: ' || date_format(ts, "yyyy-MM-dd'T'HH:mm:ss'Z'") || ' is outside {lo_s[:10]}..{hi_s[:10]}'
         WHEN price IS NOT NULL AND try_cast(price AS DOUBLE) IS NULL THEN 'price is not a number: ' || chr(39) || left(price, 40) || chr(39)
         WHEN try_cast(price AS DOUBLE) < 0 THEN 'negative price: ' || price
         WHEN isnan(coalesce(try_cast(price AS DOUBLE), 0)) OR abs(coalesce(try_cast(price AS DOUBLE), 0)) = double('Infinity')
           THEN 'price is not a number: ' || price
         WHEN quantity IS NOT NULL AND try_cast(quantity AS INT) IS NULL THEN 'quantity is not an integer: ' || chr(39) || left(quantity, 40) || chr(39)
         WHEN try_cast(quantity AS INT) <= 0 THEN 'quantity is not positive: ' || quantity
         WHEN split IS NOT NULL AND split NOT IN ('train', 'valid', 'test') THEN 'unknown split: expected train, valid or test'
       END"""
    df = raw.withColumn("beh", F.expr(_behavior_case(rules))).withColumn("ts", F.expr(_ts_expr()))
    df = df.withColumn(S.REASON, F.expr(reason))
    return df.select(
        S.USER_ID, S.ITEM_ID, F.col("beh").alias(S.BEHAVIOR), F.col("ts").alias(S.TIMESTAMP), S.SEQ,
        F.expr(f"CASE WHEN ts IS NULL THEN {S.SEQ} END").alias("order_key"), S.SESSION_ID,
        F.expr(f"try_cast({S.QUANTITY} AS INT)").alias(S.QUANTITY), F.expr(f"try_cast({S.PRICE} AS DOUBLE)").alias(S.PRICE),
        S.CONTEXT, S.SPLIT, S.SOURCE, S.LINE, F.expr(f"CASE WHEN {S.REASON} IS NOT NULL THEN left(raw, 1000) END").alias("raw"),
        S.REASON)


def deduplicated(accepted: Any) -> Any:
    """One row per distinct content (CONTENT_COLUMNS), keeping the first seq, source and line."""
    from pyspark.sql import functions as F

    return accepted.groupBy(*CONTENT_COLUMNS).agg(F.min(S.SEQ).alias(S.SEQ), F.min(S.SOURCE).alias(S.SOURCE),
                                                   F.min(S.LINE).alias(S.LINE))


@dataclass
class ValidationResult:
    """Where the accepted events and the quarantine were written, and the counts."""

    events_path: str
    quarantine_path: str
    counts: IngestCounts
    notes: list[str] = field(default_factory=list)


def validate_and_dedup(raw: Any, rules: ValidationRules, events_path: str, quarantine_path: str,
                       source: str = "total") -> ValidationResult:
    """Validate, write the quarantine (source, line, reason, raw) and the de-duplicated events as Parquet."""
    from pyspark.sql import functions as F

    v = validated(raw, rules).persist()
    try:
        per = v.groupBy(F.split_part(F.col(S.REASON), F.lit(":"), F.lit(1)).alias("r")).count().collect()
        counts = IngestCounts(source)
        counts.rows_in = int(sum(r["count"] for r in per))
        reasons = sorted(((r["r"], int(r["count"])) for r in per if r["r"] is not None), key=lambda x: -x[1])
        counts.reasons = dict(reasons)
        counts.rejected = sum(counts.reasons.values())
        (v.where(F.col(S.REASON).isNotNull()).select(S.SOURCE, S.LINE, S.REASON, "raw")
         .write.mode("overwrite").parquet(quarantine_path))
        deduplicated(v.where(F.col(S.REASON).isNull())).write.mode("overwrite").parquet(events_path)
    finally:
        v.unpersist()
    spark = raw.sparkSession
    counts.accepted = int(spark.read.parquet(events_path).count())
    counts.duplicates = counts.rows_in - counts.accepted - counts.rejected
    return ValidationResult(events_path, quarantine_path, counts)
