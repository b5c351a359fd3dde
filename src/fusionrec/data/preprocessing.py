"""Preprocessing over event tables: sessions, k-core filtering, bot flagging. Vectorised in Polars."""

from __future__ import annotations

import polars as pl

from fusionrec import schema as S

__all__ = ["assign_sessions", "kcore", "flag_bots", "bots_from_minutes", "DEFAULT_SESSION_GAP_MINUTES"]

DEFAULT_SESSION_GAP_MINUTES = 30.0


def assign_sessions(events: pl.DataFrame, gap_minutes: float = DEFAULT_SESSION_GAP_MINUTES,
                    column: str = "session") -> pl.DataFrame:
    """Add an integer session number: a user's new session starts after `gap_minutes` of inactivity.

    Events without timestamps form one session per user. Output is sorted by user, time, seq.
    """
    order = [S.USER_ID] + ([S.TIMESTAMP] if S.TIMESTAMP in events.columns else []) + (
        [S.SEQ] if S.SEQ in events.columns else [])
    ev = events.sort(order, nulls_last=True)
    if S.TIMESTAMP not in ev.columns:
        return ev.with_columns(pl.col(S.USER_ID).rank("dense").cast(pl.Int64).alias(column) - 1)
    gap = pl.duration(microseconds=int(gap_minutes * 60 * 1_000_000))
    new_user = pl.col(S.USER_ID) != pl.col(S.USER_ID).shift(1)
    new_gap = (pl.col(S.TIMESTAMP) - pl.col(S.TIMESTAMP).shift(1)) > gap
    starts = (new_user | new_gap).fill_null(True)
    return ev.with_columns((starts.cast(pl.Int64).cum_sum() - 1).alias(column))


def kcore(events: pl.DataFrame, min_user: int = 5, min_item: int = 5, max_rounds: int = 50) -> pl.DataFrame:
    """Keep users and items with at least `min_user` / `min_item` distinct partners, repeated to a fixed point."""
    ev = events
    for _ in range(max_rounds):
        pairs = ev.select(S.USER_ID, S.ITEM_ID).unique()
        users = pairs.group_by(S.USER_ID).len().filter(pl.col("len") >= min_user)[S.USER_ID]
        items = pairs.group_by(S.ITEM_ID).len().filter(pl.col("len") >= min_item)[S.ITEM_ID]
        kept = ev.filter(pl.col(S.USER_ID).is_in(users.implode()) & pl.col(S.ITEM_ID).is_in(items.implode()))
        if kept.height == ev.height:
            return kept
        ev = kept
    return ev


def flag_bots(events: pl.DataFrame, max_events_per_minute: float = 30.0, min_events: int = 50) -> pl.DataFrame:
    """Users whose busiest minute exceeds the cap (and who have at least `min_events`), with their peak rate.

    Flagged users are reported, not dropped: the caller decides (training excludes them by default).
    """
    if S.TIMESTAMP not in events.columns:
        events = events.with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias(S.TIMESTAMP))
    per_minute = (events.filter(pl.col(S.TIMESTAMP).is_not_null())
                  .group_by(S.USER_ID, pl.col(S.TIMESTAMP).dt.truncate("1m").alias("minute")).len())
    return bots_from_minutes(per_minute, max_events_per_minute, min_events)


def bots_from_minutes(per_minute: pl.DataFrame, max_events_per_minute: float = 30.0,
                      min_events: int = 50) -> pl.DataFrame:
    """The bot rule over (user_id, minute, len) counts, so a store can aggregate in SQL first."""
    out = per_minute.group_by(S.USER_ID).agg(pl.col("len").sum().alias("events"),
                                             pl.col("len").max().alias("peak_per_minute"))
    return out.with_columns(
        ((pl.col("peak_per_minute") > max_events_per_minute) & (pl.col("events") >= min_events)).alias("bot")
    ).sort("peak_per_minute", descending=True)
