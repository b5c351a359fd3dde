"""The batch stages on Spark DataFrames: indexing, weights and decay, popularity, co-occurrence top-N,
sessions and co-visitation, ALS, feature aggregates and the ranker's temporal holdout.

Each stage is a Spark job over the indexed event table E (user_idx, item_idx, behavior, t, seq, w):
nothing here collects events to the driver. What comes back to the driver (`collect_*`) is compact:
per item, per user, per (user, item) pair, or top-N neighbour lists, the arrays of the model artefact.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from fusionrec import schema as S

__all__ = ["indexed_events", "pair_table", "item_counts", "neighbour_topk",
           "covisit_topk", "als_factors", "item_aggregates", "user_aggregates", "holdout_cut", "ranker_labels",
           "sample_users", "to_arrays", "IndexedEvents", "UIDX", "IIDX"]

UIDX = "user_idx"
IIDX = "item_idx"
DAY = 86400.0


def to_arrays(df: Any) -> dict[str, np.ndarray]:
    """A small DataFrame's columns as numpy arrays (through Arrow; nulls become NaN in float columns)."""
    table = df.toArrow()
    out = {}
    for name in table.column_names:
        col = table.column(name)
        arr = col.to_numpy(zero_copy_only=False) if col.num_chunks else np.empty(0)
        out[name] = arr
    return out


@dataclass
class IndexedEvents:
    """E and its vocabularies: user/item ids in index order (first seen by time, then source order)."""

    events: Any  # DataFrame user_idx, item_idx, behavior, t, seq, w
    user_ids: list[str]
    item_ids: list[str]  # event items first, then catalogue-only items by id (the embedded order)
    excluded_bot_users: int


def _bots(ev: Any, max_per_minute: float = 30.0, min_events: int = 50) -> Any:
    """Users whose busiest minute exceeds the cap (`EventStore.bot_users` on Spark)."""
    from pyspark.sql import functions as F

    per_minute = (ev.where(F.col(S.TIMESTAMP).isNotNull())
                  .groupBy(S.USER_ID, F.date_trunc("minute", S.TIMESTAMP).alias("m")).count())
    per_user = per_minute.groupBy(S.USER_ID).agg(F.sum("count").alias("n"), F.max("count").alias("peak"))
    return per_user.where((F.col("peak") > max_per_minute) & (F.col("n") >= min_events)).select(S.USER_ID)


def indexed_events(spark: Any, events_path: str, work: str, weights: Mapping[str, float],
                   catalogue_ids: list[str] | None = None, exclude_bots: bool = True) -> IndexedEvents:
    """Bots out, ids to dense indices in the embedded order, behaviour weights; E written as Parquet."""
    from pyspark.sql import functions as F

    from fusionrec.spark.readers import number_rows

    ev = spark.read.parquet(events_path)
    n_bots = 0
    if exclude_bots:
        bots = _bots(ev).persist()
        n_bots = int(bots.count())
        if n_bots:
            ev = ev.join(F.broadcast(bots) if n_bots < 1_000_000 else bots, S.USER_ID, "left_anti")
    ev = ev.withColumn("t", F.unix_micros(S.TIMESTAMP) / 1e6)
    # first appearance in (timestamp NULLS LAST, seq) order, as Interactions.from_frame sees the store
    first = F.min(F.struct(F.col("t").isNull(), F.col("t"), F.col(S.SEQ))).alias("k")
    uv = number_rows(ev.groupBy(S.USER_ID).agg(first), ["k"], UIDX).select(S.USER_ID, F.col(UIDX).cast("int"))
    iv = number_rows(ev.groupBy(S.ITEM_ID).agg(first), ["k"], IIDX).select(S.ITEM_ID, F.col(IIDX).cast("int"))
    uv.write.mode("overwrite").parquet(f"{work}/users")
    iv.write.mode("overwrite").parquet(f"{work}/items")
    uv, iv = spark.read.parquet(f"{work}/users"), spark.read.parquet(f"{work}/items")
    w = F.lit(1.0)
    case = None
    for beh, weight in weights.items():
        case = (F.when(F.col(S.BEHAVIOR) == beh, float(weight)) if case is None
                else case.when(F.col(S.BEHAVIOR) == beh, float(weight)))
    if case is not None:
        w = case.otherwise(1.0)
    e = (ev.join(uv, S.USER_ID).join(iv, S.ITEM_ID)
         .select(UIDX, IIDX, S.BEHAVIOR, "t", S.SEQ, w.alias("w")))
    e.write.mode("overwrite").parquet(f"{work}/events_indexed")
    if exclude_bots:
        bots.unpersist()
    users = to_arrays(uv.orderBy(UIDX).select(S.USER_ID))[S.USER_ID]
    items = to_arrays(iv.orderBy(IIDX).select(S.ITEM_ID))[S.ITEM_ID]
    item_ids = [str(x) for x in items]
    if catalogue_ids:
        seen = set(item_ids)
        item_ids += sorted({c for c in catalogue_ids if c is not None} - seen)
    return IndexedEvents(spark.read.parquet(f"{work}/events_indexed"), [str(x) for x in users], item_ids, n_bots)


def now_of(e: Any) -> float:
    """The newest event time (epoch seconds), NaN without timestamps."""
    from pyspark.sql import functions as F

    v = e.agg(F.max("t")).collect()[0][0]
    return float("nan") if v is None else float(v)


def _decayed(e: Any, half_life_days: float | None, now: float) -> Any:
    """The event weight column, decayed by half per `half_life_days` before `now` (ages clipped at 0)."""
    from pyspark.sql import functions as F

    if not half_life_days or not np.isfinite(now):
        return F.col("w")
    age = F.greatest(F.coalesce((F.lit(now) - F.col("t")) / DAY, F.lit(0.0)), F.lit(0.0))
    return F.col("w") * F.pow(F.lit(0.5), age / float(half_life_days))


def pair_table(e: Any, now: float, half_life_days: float | None = None) -> Any:
    """P: one row per (user, item) with the matrix value x (summed, decayed weights), counts per
    behaviour and the last event time; the user x item matrix every generator starts from."""
    from pyspark.sql import functions as F

    b = F.col(S.BEHAVIOR)
    return e.groupBy(UIDX, IIDX).agg(
        F.sum(_decayed(e, half_life_days, now)).alias("x"),
        F.sum(F.when(b.isin("view", "click"), 1).otherwise(0)).alias("n_view"),
        F.sum(F.when(b == "fav", 1).otherwise(0)).alias("n_fav"),
        F.sum(F.when(b == "cart", 1).otherwise(0)).alias("n_cart"),
        F.sum(F.when(b == "buy", 1).otherwise(0)).alias("n_buy"),
        F.max("t").alias("t_last"))


def item_counts(e: Any, now: float, half_life_days: float | None = None) -> Any:
    """(item_idx, c): summed event weights per item, decayed when `half_life_days` is set (popularity)."""
    from pyspark.sql import functions as F

    return e.groupBy(IIDX).agg(F.sum(_decayed(e, half_life_days, now)).alias("c"))


def neighbour_topk(pairs: Any, n_items: int, k: int, max_items_per_user: int, blocks: int, kind: str = "itemknn",
                   similarity: str = "cosine", alpha: float = 0.5, shrink: float = 0.0, beta: float = 0.0) -> Any:
    """Item-kNN's sim_ or RP3beta's W: (i, j, v), the k best j per item i, computed by blocks of items.

    Items are dealt into `blocks` blocks (item_idx modulo blocks). Each user's `max_items_per_user` most
    recent pairs go to every block the user has one of those items in, so one task holds the users
    x items matrix of the users who touched its items and runs the embedded generator's own sparse
    product and top-k (`product_topk`) for its items: only k rows per item leave the task. Compared
    with a self-join on the user, no pair row (one per two items of a user, the square of the history)
    is ever materialised or shuffled; the shuffle is the pair rows times the blocks a user reaches,
    at most `blocks` times. Norms (item-kNN) and degrees (RP3beta) count every pair, the cap only
    bounds what enters the product, so one heavy user cannot blow up a task.

    item-kNN: v = similarity(sum_u x_ui x_uj, |i|^2, |j|^2) with `shrink`, i != j.
    RP3beta: v = (1/pop_i)^alpha sum_u (x_uj / sum_j' x_uj')^alpha / pop_j^beta, i != j.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if kind not in ("itemknn", "rp3beta"):
        raise ValueError(f"kind must be 'itemknn' or 'rp3beta', got {kind!r}")
    stat = (F.sum(F.col("x") * F.col("x")) if kind == "itemknn" else F.count(F.lit(1)).cast("double")).alias("s")
    per_item = to_arrays(pairs.groupBy(IIDX).agg(stat))
    stats = np.zeros(n_items, np.float64)
    stats[np.asarray(per_item[IIDX], np.int64)] = np.asarray(per_item["s"], np.float64)
    recent = Window.partitionBy(UIDX).orderBy(F.col("t_last").desc_nulls_last(), F.col(IIDX))
    capped = (pairs.select(UIDX, IIDX, "x", "t_last")
              .withColumn("rs", F.sum("x").over(Window.partitionBy(UIDX)))
              .withColumn("rn", F.row_number().over(recent))
              .where(F.col("rn") <= max_items_per_user)
              .select(UIDX, IIDX, "x", "rs"))
    reach = capped.select(UIDX, (F.col(IIDX) % blocks).alias("b")).distinct()
    block = _NeighbourBlock(kind, n_items, k, blocks, stats, similarity, alpha, shrink, beta)

    def task(key, table):  # type: ignore[no-untyped-def]  # unannotated: Spark infers its kind from hints
        return block(key, table)

    with warnings.catch_warnings():  # pyspark's pandas version check: these tasks use Arrow and scipy, not pandas
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        return capped.join(reach, UIDX).groupBy("b").applyInArrow(task, schema="i int, j int, v float")


#: non-zeros of one slice of a block's product: bounds a Python worker's transient memory (~40 B each)
_TASK_BUDGET = 5.0e6


class _NeighbourBlock:
    """One block's neighbour lists, run in a Python worker (picklable: plain arrays and settings)."""

    def __init__(self, kind: str, n_items: int, k: int, blocks: int, stats: np.ndarray, similarity: str,
                 alpha: float, shrink: float, beta: float) -> None:
        self.kind, self.n_items, self.k, self.blocks, self.stats = kind, n_items, k, blocks, stats
        self.similarity, self.alpha, self.shrink, self.beta = similarity, alpha, shrink, beta

    def __call__(self, key: tuple[Any, ...], table: Any) -> Any:
        import pyarrow as pa
        import scipy.sparse as sp

        from fusionrec.candidates._similarity import pairwise_topk
        from fusionrec.candidates.rp3beta import rp3beta_topk

        b = int(key[0].as_py())
        users, rows = np.unique(table.column(UIDX).to_numpy(), return_inverse=True)
        n_users = len(users)
        i = table.column(IIDX).to_numpy().astype(np.int64)
        m = sp.csr_matrix((table.column("x").to_numpy().astype(np.float64), (rows, i)), shape=(n_users, self.n_items))
        mine = np.arange(b, self.n_items, self.blocks)
        if self.kind == "itemknn":
            top = pairwise_topk(m.T.tocsr()[mine], None, self.k, self.similarity, self.alpha, self.shrink,
                                self_index=mine, budget=_TASK_BUDGET, b_t=m, sq_b=self.stats, sq_a=self.stats[mine])
        else:
            row_sums = np.zeros(n_users)
            row_sums[rows] = table.column("rs").to_numpy()
            top = rp3beta_topk(m, self.alpha, self.beta, self.k, mine, self.stats, row_sums, _TASK_BUDGET)
        top = top.tocoo()
        return pa.table({"i": pa.array(mine[top.row].astype(np.int32)), "j": pa.array(top.col.astype(np.int32)),
                         "v": pa.array(top.data.astype(np.float32))})


def _topk(df: Any, k: int, value: str = "v") -> Any:
    """Rows of (i, j, v) with v > 0, the k largest per i; ties go to the lower j (as top_k_per_row)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("i").orderBy(F.col(value).desc(), F.col("j"))
    return (df.where(F.col(value) > 0).withColumn("r", F.row_number().over(w)).where(F.col("r") <= k)
            .select("i", "j", F.col(value).alias("v")))


def covisit_topk(e: Any, k: int, gap_minutes: float, window: int, normalize: bool,
                 persisted: list[Any] | None = None) -> Any:
    """SessionCoVisitation's sim_: sessions split at silences over `gap_minutes`, repeats in a row
    collapsed, pairs up to `window` positions apart weighted 1 / distance, both directions, top k.

    Pairs come from lead() over each user's time-ordered events, never from a self-join, so a long
    session costs `window` rows per event. With `normalize` the sessionised events feed both the
    pairs and the per-item counts, so they are persisted once and added to `persisted` for the
    caller to unpersist after collecting the result.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy(UIDX).orderBy(F.col("t").asc_nulls_last(), F.col(S.SEQ))
    gap = gap_minutes * 60.0
    s = (e.select(UIDX, IIDX, "t", S.SEQ)
         .withColumn("rn", F.row_number().over(w))
         .withColumn("prev_t", F.lag("t").over(w))
         .withColumn("prev_i", F.lag(IIDX).over(w)))
    # NaN gaps (missing time) continue the session, as in the embedded generator
    start = (F.col("rn") == 1) | F.coalesce((F.col("t") - F.col("prev_t")) > gap, F.lit(False))
    s = s.withColumn("start", start.cast("int"))
    s = s.withColumn("session", F.sum("start").over(w.rowsBetween(Window.unboundedPreceding, 0)))
    s = s.where((F.col(IIDX) != F.col("prev_i")) | (F.col("start") == 1) | F.col("prev_i").isNull())
    if normalize:
        s = s.select(UIDX, IIDX, "t", S.SEQ, "session").persist()
        if persisted is not None:
            persisted.append(s)
    for d in range(1, window + 1):
        s = s.withColumn(f"_j{d}", F.lead(IIDX, d).over(w)).withColumn(f"_s{d}", F.lead("session", d).over(w))
    ahead = [F.struct(F.lit(d).alias("d"), F.col(f"_j{d}").alias("j"), F.col(f"_s{d}").alias("sj"))
             for d in range(1, window + 1)]
    pairs = (s.select(F.col(IIDX).alias("i"), "session", F.explode(F.array(*ahead)).alias("p"))
             .where((F.col("p.sj") == F.col("session")) & (F.col("p.j") != F.col("i")))
             .select("i", F.col("p.j").alias("j"), (F.lit(1.0) / F.col("p.d")).alias("v")))
    both = pairs.unionByName(pairs.select(F.col("j").alias("i"), F.col("i").alias("j"), "v"))
    co = both.groupBy("i", "j").agg(F.sum("v").alias("v"))
    if normalize:
        cnt = s.groupBy(IIDX).agg(F.count(F.lit(1)).cast("double").alias("n"))
        ci = cnt.select(F.col(IIDX).alias("i"), F.col("n").alias("n_i"))
        cj = cnt.select(F.col(IIDX).alias("j"), F.col("n").alias("n_j"))
        co = co.join(ci, "i").join(cj, "j").withColumn(
            "v", F.col("v") / F.sqrt(F.greatest(F.col("n_i"), F.lit(1.0))) / F.sqrt(F.greatest(F.col("n_j"), F.lit(1.0))))
    return _topk(co, k)


def als_factors(pairs: Any, factors: int, regularization: float, alpha: float, iterations: int, seed: int,
                blocks: int | None = None) -> tuple[Any, Any]:
    """pyspark.ml ALS (implicit preferences, confidence 1 + alpha x) on the pair values: (user, item) factor frames."""
    from pyspark.ml.recommendation import ALS as SparkALS

    als = SparkALS(rank=factors, maxIter=iterations, regParam=regularization, alpha=alpha, implicitPrefs=True,
                   userCol=UIDX, itemCol=IIDX, ratingCol="x", seed=seed, nonnegative=False,
                   coldStartStrategy="drop")
    if blocks:
        als = als.setNumUserBlocks(blocks).setNumItemBlocks(blocks)
    model = als.fit(pairs.select(UIDX, IIDX, "x"))
    return model.userFactors, model.itemFactors


def item_aggregates(e: Any, now: float) -> Any:
    """Per item: events, events in the last 1/7/30 days, views (+clicks), carts, buys, first time."""
    from pyspark.sql import functions as F

    b = F.col(S.BEHAVIOR)

    def recent(days: int) -> Any:
        if not np.isfinite(now):
            return F.lit(0).alias(f"n{days}")
        return F.sum(F.when(F.col("t") >= now - days * DAY, 1).otherwise(0)).alias(f"n{days}")

    return e.groupBy(IIDX).agg(
        F.count(F.lit(1)).alias("n"), recent(1), recent(7), recent(30),
        F.sum(F.when(b.isin("view", "click"), 1).otherwise(0)).alias("views"),
        F.sum(F.when(b == "cart", 1).otherwise(0)).alias("carts"),
        F.sum(F.when(b == "buy", 1).otherwise(0)).alias("buys"),
        F.min("t").alias("first_t"))


def user_aggregates(e: Any, item_side: Any | None) -> Any:
    """Per user: events, last time, behaviour counts, distinct categories, median price of their events.

    `item_side` is a small (item_idx, category, price) frame from the catalogue (or None).
    """
    from pyspark.sql import functions as F

    b = F.col(S.BEHAVIOR)
    aggs = [F.count(F.lit(1)).alias("n"), F.max("t").alias("last_t"),
            F.sum(F.when(b.isin("view", "click"), 1).otherwise(0)).alias("views"),
            F.sum(F.when(b == "fav", 1).otherwise(0)).alias("favs"),
            F.sum(F.when(b == "cart", 1).otherwise(0)).alias("carts"),
            F.sum(F.when(b == "buy", 1).otherwise(0)).alias("buys")]
    if item_side is None:
        return e.groupBy(UIDX).agg(*aggs, F.lit(0).alias("n_cat"), F.lit(None).cast("double").alias("price_median"))
    x = e.join(F.broadcast(item_side), IIDX, "left")
    return x.groupBy(UIDX).agg(
        *aggs, F.countDistinct(F.when(F.col("category") >= 0, F.col("category"))).alias("n_cat"),
        F.percentile(F.when(~F.isnan("price"), F.col("price")), F.lit(0.5)).alias("price_median"))


def holdout_cut(e: Any, valid_days: float | None) -> tuple[float, float]:
    """(cut, days): events after `cut` label the ranker; days defaults to 15% of the span, at least an hour."""
    from pyspark.sql import functions as F

    lo, hi = e.agg(F.min("t"), F.max("t")).collect()[0]
    days = valid_days if valid_days else max((hi - lo) / DAY * 0.15, 1 / 24)
    return hi - days * DAY, days


def ranker_labels(e: Any, cut: float, grades: Mapping[str, float], exclude_seen: bool) -> tuple[Any, Any]:
    """(pre, labels): events up to the cut, and the best grade per (user, item) after it, for users
    with a history before it; pairs the user already had are dropped when `exclude_seen`."""
    from pyspark.sql import functions as F

    pre = e.where(F.col("t").isNull() | (F.col("t") <= cut))
    held = e.where(F.col("t") > cut)
    grade = None
    for beh, g in grades.items():
        grade = F.when(F.col(S.BEHAVIOR) == beh, float(g)) if grade is None else grade.when(F.col(S.BEHAVIOR) == beh, float(g))
    lab = held.groupBy(UIDX, IIDX).agg(F.max(grade.otherwise(1.0)).alias("y"))  # type: ignore[union-attr]
    seen = pre.select(UIDX, IIDX).distinct()
    if exclude_seen:
        lab = lab.join(seen, [UIDX, IIDX], "left_anti")
    lab = lab.join(seen.select(UIDX).distinct(), UIDX, "left_semi")
    return pre, lab


def sample_users(labels: Any, max_users: int, seed: int) -> Any:
    """At most `max_users` users of the label table, a seeded hash sample (the same users every run)."""
    from pyspark.sql import functions as F

    users = labels.select(UIDX).distinct().withColumn("h", F.xxhash64(F.col(UIDX), F.lit(seed)))
    return users.orderBy("h", UIDX).limit(max_users).select(UIDX)
