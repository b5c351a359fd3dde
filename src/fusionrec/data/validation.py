"""Validation that loses nothing: every raw row is either accepted, quarantined with a reason, or a duplicate.

The checks are one vectorised SQL expression over an adapter's raw rows, shared by every format and
by both the in-memory loader and the DuckDB event store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from fusionrec import schema as S
from fusionrec.data.adapters import RawEvents, sql_str

__all__ = ["ValidationRules", "validated_sql", "IngestCounts", "CONTENT_COLUMNS", "MAX_ID_LENGTH"]

MAX_ID_LENGTH = 256
#: the columns that make two events the same event (exact duplicates are dropped and counted)
CONTENT_COLUMNS = (S.USER_ID, S.ITEM_ID, S.BEHAVIOR, S.TIMESTAMP, "order_key", S.SESSION_ID, S.QUANTITY, S.PRICE,
                   S.CONTEXT, S.SPLIT)


@dataclass(frozen=True)
class ValidationRules:
    """What an accepted event must satisfy; `time_range` defaults to 1990-01-01 .. now + 1 day."""

    behaviors: S.BehaviorVocabulary = field(default_factory=S.BehaviorVocabulary)
    time_range: tuple[datetime, datetime] | None = None
    require_timestamp: bool = True
    #: when set, user ids are replaced by their keyed HMAC (fusionrec.privacy) and rejected rows keep
    #: no raw text, so no raw id reaches the store
    pseudonym_key: str | None = field(default=None, repr=False)

    def bounds(self) -> tuple[datetime, datetime]:
        if self.time_range is not None:
            return self.time_range
        return datetime(1990, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc) + timedelta(days=1)


@dataclass
class IngestCounts:
    """rows_in = accepted + rejected + duplicates, per source and in total."""

    source: str
    rows_in: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.accepted + self.rejected + self.duplicates

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows_in": self.rows_in, "accepted": self.accepted,
                "rejected": self.rejected, "duplicates": self.duplicates, "reasons": dict(self.reasons)}


def _behavior_case(rules: ValidationRules) -> str:
    canon = ", ".join(sql_str(k) for k in rules.behaviors.weights)
    aliases = {a: c for a, c in rules.behaviors.aliases.items() if c in rules.behaviors.weights}
    aliases.update({k: k for k in rules.behaviors.weights})
    whens = " ".join(f"WHEN {sql_str(a)} THEN {sql_str(c)}" for a, c in sorted(aliases.items()))
    # the common case (already canonical) skips the alias lookup
    return f"CASE WHEN behavior IN ({canon}) THEN behavior ELSE (CASE lower(trim(behavior)) {whens} END) END"


def _ts_expr() -> str:
    """ISO 8601 (a trailing UTC offset is honoured; the session is UTC), else epoch seconds or milliseconds."""
    has_offset = ("(strlen(timestamp) > 19 AND (timestamp[-6:-6] IN ('+', '-') OR timestamp[-5:-5] IN ('+', '-')))")
    num = "TRY_CAST(timestamp AS DOUBLE)"
    numeric = (f"CASE WHEN abs({num}) >= 1e15 THEN NULL "
               f"WHEN abs({num}) >= 1e11 THEN make_timestamp(CAST({num} * 1000 AS BIGINT)) "
               f"ELSE make_timestamp(CAST({num} * 1000000 AS BIGINT)) END")
    return (f"CASE WHEN timestamp IS NULL THEN NULL "
            f"WHEN {has_offset} THEN CAST(TRY_CAST(timestamp AS TIMESTAMPTZ) AS TIMESTAMP) "
            f"WHEN TRY_CAST(timestamp AS TIMESTAMP) IS NOT NULL THEN TRY_CAST(timestamp AS TIMESTAMP) "
            f"ELSE {numeric} END")


def validated_sql(raw: RawEvents, rules: ValidationRules) -> str:
    """SELECT of typed event columns plus `reason` (NULL when accepted), source, line and raw text."""
    lo, hi = rules.bounds()
    lo_s = sql_str(lo.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" "))
    hi_s = sql_str(hi.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" "))
    need_ts = "TRUE" if rules.require_timestamp else "FALSE"
    if rules.pseudonym_key:
        from fusionrec.privacy import pseudonym_sql

        outer = (f"SELECT * EXCLUDE (user_id, raw), CASE WHEN user_id IS NOT NULL THEN "
                 f"{pseudonym_sql('user_id', rules.pseudonym_key)} END AS user_id, NULL::VARCHAR AS raw FROM (")
    else:
        outer = "SELECT * EXCLUDE (raw), CASE WHEN reason IS NOT NULL THEN left(raw, 1000) END AS raw FROM ("
    return f"""
{outer}
SELECT user_id, item_id, beh AS behavior, ts AS timestamp, seq,
       CASE WHEN ts IS NULL THEN seq END AS order_key,
       session_id, TRY_CAST(quantity AS INTEGER) AS quantity, TRY_CAST(price AS DOUBLE) AS price, context, split,
       source, line, raw,
       CASE
         WHEN reject IS NOT NULL THEN reject
         WHEN user_id IS NULL THEN 'missing user_id'
         WHEN item_id IS NULL THEN 'missing item_id'
         WHEN strlen(user_id) > {MAX_ID_LENGTH} THEN 'user_id too long: over {MAX_ID_LENGTH} bytes'
         WHEN strlen(item_id) > {MAX_ID_LENGTH} THEN 'item_id too long: over {MAX_ID_LENGTH} bytes'
         WHEN behavior IS NULL THEN 'missing behavior'
         WHEN beh IS NULL THEN 'unknown behavior: ' || chr(39) || left(behavior, 40) || chr(39)
         WHEN timestamp IS NULL AND {need_ts} THEN 'missing timestamp'
         WHEN timestamp IS NOT NULL AND ts IS NULL THEN 'timestamp does not parse: ' || chr(39) || left(timestamp, 40) || chr(39)
         WHEN ts < TIMESTAMP {lo_s} OR ts > TIMESTAMP {hi_s}
           THEN 'timestamp out of range: ' || strftime(ts, '%Y-%m-%dT%H:%M:%SZ') || ' is outside {lo_s[1:11]}..{hi_s[1:11]}'
         WHEN price IS NOT NULL AND TRY_CAST(price AS DOUBLE) IS NULL THEN 'price is not a number: ' || chr(39) || left(price, 40) || chr(39)
         WHEN TRY_CAST(price AS DOUBLE) < 0 THEN 'negative price: ' || price
         WHEN NOT isfinite(coalesce(TRY_CAST(price AS DOUBLE), 0)) THEN 'price is not a number: ' || price
         WHEN quantity IS NOT NULL AND TRY_CAST(quantity AS INTEGER) IS NULL THEN 'quantity is not an integer: ' || chr(39) || left(quantity, 40) || chr(39)
         WHEN TRY_CAST(quantity AS INTEGER) <= 0 THEN 'quantity is not positive: ' || quantity
         WHEN split IS NOT NULL AND split NOT IN ('train', 'valid', 'test') THEN 'unknown split: expected train, valid or test'
       END AS reason
FROM (SELECT *, {_behavior_case(rules)} AS beh, {_ts_expr()} AS ts FROM ({raw.sql})))
"""
