"""What the dashboard shows, read from the server's state: SQL aggregates in DuckDB, in-memory histories, metrics.

Store-wide aggregates (events per day and behaviour, funnel, top users and items) are a cached
summary: one full aggregate in a background thread at start and then every `full_every` seconds,
and in between only the live events written since (source 'api', seq above the last one counted),
which DuckDB finds through the zone maps of the seq column without scanning the stored history.
Per-user pages read the history the server already holds in memory; per-item pages use the items
table's primary key and aggregates filtered on one item. Nothing here writes.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fusionrec import schema as S
from fusionrec.config import thread_count

__all__ = ["DashboardData", "Summary", "LiveCounters", "ExperimentSeries", "find_evaluation", "wilson"]

log = logging.getLogger("fusionrec.ui")

#: names the dashboard looks for, in this order, for the evaluation run of a version
EVALUATION_FILES = ("evaluation.json", "eval.json")
GENERATOR_LABELS = {"itemknn": "also viewed (item-kNN)", "covisit": "also viewed in the same session",
                    "rp3beta": "related (RP3beta graph walk)", "content": "content-similar",
                    "content_embedding": "content-similar (embeddings)", "ease": "related (EASE)"}


def _iso(t: Any) -> str | None:
    return t.isoformat() if t is not None else None


def wilson(x: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion x / n (95% by default); (0, 0) when n is 0."""
    if n <= 0:
        return 0.0, 0.0
    p = x / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Summary:
    """Store-wide aggregates at one moment; `computed_at` is epoch seconds."""

    daily: dict[str, dict[str, int]] = field(default_factory=dict)  # day -> behaviour -> events
    behaviors: dict[str, int] = field(default_factory=dict)
    funnel_users: dict[str, int] = field(default_factory=dict)  # behaviour -> distinct users
    events: int = 0
    users: int = 0
    items: int = 0
    pairs: int = 0
    catalogue_items: int = 0
    first: str | None = None
    last: str | None = None
    top_users: list[tuple[str, int]] = field(default_factory=list)
    top_items: list[tuple[str, int]] = field(default_factory=list)
    categories: list[tuple[str, int]] = field(default_factory=list)
    watermark: int = 0  # the highest seq of an API event counted
    computed_at: float = 0.0  # the last top-up
    full_at: float = 0.0  # the last full aggregate
    full_seconds: float = 0.0
    agg: Any = None  # in-memory DuckDB: item_daily(item_id, day, behavior, n), buys(item_id, user_id)
    pending: bool = False  # the first full aggregate is still running: everything above is empty

    @property
    def density(self) -> float:
        return self.pairs / (self.users * self.items) if self.users and self.items else 0.0

    def funnel(self) -> list[dict[str, Any]]:
        """view -> cart -> buy: events and distinct users at each step and the rate from the step before."""
        rows: list[dict[str, Any]] = []
        prev_e = prev_u = None
        for b in S.FUNNEL:
            e, u = self.behaviors.get(b, 0), self.funnel_users.get(b, 0)
            rows.append({"step": b, "events": e, "users": u,
                         "event_rate": (e / prev_e) if prev_e else None, "user_rate": (u / prev_u) if prev_u else None})
            prev_e, prev_u = e, u
        return rows


class LiveCounters:
    """Events per minute, requests per second and p99 latency from the server's Prometheus metrics.

    Each call samples the counters (at most once a second) and compares with the sample about a
    minute old, so the numbers are rates over the last minute (or since start when younger).
    """

    WINDOW = 60.0

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self._samples: deque[tuple[float, float, float, np.ndarray]] = deque(maxlen=600)
        self._lock = threading.Lock()
        self._started = time.time()

    def _read(self) -> tuple[float, float, np.ndarray]:
        events = float(self.metrics.registry.get_sample_value("fusionrec_events_ingested_total") or 0.0)
        requests = 0.0
        buckets: dict[float, float] = {}
        for metric in self.metrics.requests.collect():
            for s in metric.samples:
                if s.name.endswith("_total") and not s.labels.get("route", "").startswith("/ui"):
                    requests += s.value
        for metric in self.metrics.latency.collect():
            for s in metric.samples:
                if s.name.endswith("_bucket") and not s.labels.get("route", "").startswith("/ui"):
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
        bounds = sorted(buckets)
        return events, requests, np.asarray([[b, buckets[b]] for b in bounds], np.float64).reshape(-1, 2)

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        events, requests, hist = self._read()
        with self._lock:
            if not self._samples or now - self._samples[-1][0] >= 1.0:
                self._samples.append((now, events, requests, hist))
            old = next((s for s in self._samples if now - s[0] <= self.WINDOW), self._samples[0])
        t0, e0, r0, h0 = old
        if now - t0 < 1.0:  # no older sample yet: rates since the server started
            t0, e0, r0, h0 = self._started, 0.0, 0.0, np.zeros_like(hist)
        span = max(now - t0, 1e-9)
        delta = hist.copy()
        if len(h0) == len(hist) and len(hist):
            delta[:, 1] = hist[:, 1] - h0[:, 1]
        return {"events_per_minute": (events - e0) * 60.0 / span, "requests_per_second": (requests - r0) / span,
                "p99_ms": _quantile_ms(delta, 0.99), "window_seconds": round(span, 1), "events_total": events,
                "requests_total": requests}


def _quantile_ms(cumulative: np.ndarray, q: float) -> float | None:
    """A quantile of a Prometheus histogram (cumulative counts per upper bound), interpolated in its bucket."""
    if not len(cumulative) or cumulative[-1, 1] <= 0:
        return None
    total = cumulative[-1, 1]
    rank = q * total
    lo_bound, lo_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lo_bound * 1000.0
            frac = (rank - lo_count) / (count - lo_count) if count > lo_count else 1.0
            return (lo_bound + frac * (bound - lo_bound)) * 1000.0
        lo_bound, lo_count = bound, count
    return lo_bound * 1000.0


class ExperimentSeries:
    """Per experiment and variant, cumulative CTR and conversion sampled over time (in memory, bounded)."""

    def __init__(self, every: float = 5.0, keep: int = 720) -> None:
        self.every = every
        self._points: dict[str, deque[dict[str, Any]]] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self.keep = keep

    def record(self, report: dict[str, Any]) -> list[dict[str, Any]]:
        name, now = report["name"], time.time()
        with self._lock:
            points = self._points.setdefault(name, deque(maxlen=self.keep))
            if now - self._last.get(name, 0.0) >= self.every or not points:
                self._last[name] = now
                point: dict[str, Any] = {"t": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
                                         "variants": {}}
                for v in report["variants"]:
                    n = int(v["impressions"])
                    point["variants"][v["name"]] = {
                        "impressions": n, "ctr": v["ctr"], "ctr_ci": wilson(int(v["clicks"]), n),
                        "conversion_rate": v["conversion_rate"], "conversion_ci": wilson(int(v["conversions"]), n)}
                points.append(point)
            return list(points)


def find_evaluation(version_path: Path | None, model_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The evaluation run stored with a version: VERSION/evaluation.json, else MODEL_DIR's, else the one
    `make demo` writes beside the model directory (DIR/eval.json for DIR/models)."""
    candidates: list[Path] = []
    for folder in [p for p in (version_path, model_dir, model_dir.parent) if p is not None]:
        candidates += [folder / name for name in EVALUATION_FILES]
    for path in candidates:
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("%s: not a readable evaluation JSON (%s)", path, exc)
                continue
            if isinstance(data, dict) and isinstance(data.get("models"), dict):
                return data, path
    return None, None


def _item_row(con: Any, item_id: str) -> dict[str, Any] | None:
    """The catalogue row of one item as a dict, or None."""
    row = con.execute(f"SELECT * FROM items WHERE {S.ITEM_ID} = ?", [item_id]).fetchone()
    return dict(zip([d[0] for d in con.description], row)) if row else None


class DashboardData:
    """The read side of the dashboard over a running server's state (`ServerState`)."""

    def __init__(self, state: Any, full_every: float = 300.0, delta_every: float = 3.0,
                 first_wait: float = 10.0) -> None:
        self.state = state
        self.first_wait = first_wait
        self.full_every = full_every
        self.delta_every = delta_every
        self.live = LiveCounters(state.metrics)
        self.experiments = ExperimentSeries()
        self._summary: Summary | None = None
        self._delta_lock = threading.Lock()  # one top-up at a time
        self._full_lock = threading.Lock()  # one full refresh at a time
        self._ready = threading.Event()
        self._refresh_in_background(first=True)

    # -- the cached summary ---------------------------------------------------------------------
    def _refresh_in_background(self, first: bool = False) -> None:
        if not self._full_lock.acquire(blocking=False):
            return

        def job() -> None:
            try:
                self._summary = self._read(self._full)
            except Exception:  # logged; pages keep the previous summary (the first one is retried on demand)
                log.exception("dashboard summary failed")
            finally:
                self._full_lock.release()
                self._ready.set()

        threading.Thread(target=job, name="fusionrec-ui-summary", daemon=True).start()

    def _read(self, fn: Callable[[Any], Any]) -> Any:
        """fn(connection) on a private cursor of the store, closed afterwards."""
        with self.state.reading() as reader:
            return fn(reader.con)

    def summary(self) -> Summary:
        """The cached summary, topped up with the live events when older than `delta_every` seconds.

        The full aggregate runs in a background thread (at start, then when older than `full_every`),
        so no page view waits for a scan of the whole store except the very first ones after start.
        """
        cur = self._summary
        if cur is None:
            self._ready.wait(timeout=self.first_wait)
            cur = self._summary
            if cur is None:
                if self._ready.is_set():  # the background refresh failed: try here, and let the error show
                    with self._full_lock:
                        cur = self._summary = self._read(self._full)
                else:  # a big store: pages say the summary is on its way and read what they need directly
                    return Summary(pending=True)
        now = time.time()
        # at most ~5% of one core on full refreshes: a 40 s aggregate (20M events) runs every 13 min or so
        if now - cur.full_at >= max(self.full_every, 20.0 * cur.full_seconds):
            self._refresh_in_background()
        if now - cur.computed_at < self.delta_every or not self._delta_lock.acquire(blocking=False):
            return cur
        try:
            cur = self._summary or cur
            if now - cur.computed_at >= self.delta_every:
                fresh = self._read(lambda con: self._delta(con, cur))
                if self._summary is cur:  # a full refresh that finished meanwhile wins
                    self._summary = fresh
            return self._summary or cur
        finally:
            self._delta_lock.release()

    def _full(self, con: Any) -> Summary:
        import duckdb

        t0 = time.perf_counter()
        s = Summary()
        wm = con.execute(f"SELECT coalesce(max({S.SEQ}), 0) FROM events WHERE {S.SOURCE} = 'api'").fetchone()[0]
        s.watermark = int(wm)
        upto = f"({S.SOURCE} IS DISTINCT FROM 'api' OR {S.SEQ} <= {s.watermark})"
        # per item, day and behaviour, and who bought what: kept in a private in-memory database sorted
        # by item, so an item page reads a few row groups instead of scanning every event
        agg = duckdb.connect(":memory:")
        daily = con.execute(f"SELECT {S.ITEM_ID}, {S.TIMESTAMP}::DATE AS day, {S.BEHAVIOR}, count(*)::BIGINT AS n "
                            f"FROM events WHERE {upto} GROUP BY ALL").fetch_arrow_table()
        buys = con.execute(f"SELECT DISTINCT {S.ITEM_ID}, {S.USER_ID} FROM events "
                           f"WHERE {S.BEHAVIOR} = 'buy' AND {upto}").fetch_arrow_table()
        agg.register("_daily", daily)
        agg.register("_buys", buys)
        agg.execute(f"SET threads={max(1, thread_count())}")
        agg.execute(f"CREATE TABLE item_daily AS SELECT * FROM _daily ORDER BY {S.ITEM_ID}")
        agg.execute(f"CREATE TABLE buys AS SELECT * FROM _buys ORDER BY {S.ITEM_ID}")
        agg.execute(f"CREATE TABLE buys_by_user AS SELECT * FROM _buys ORDER BY {S.USER_ID}")
        agg.unregister("_daily")
        agg.unregister("_buys")
        del daily, buys
        for day, b, n in agg.execute(f"SELECT day, {S.BEHAVIOR}, sum(n)::BIGINT FROM item_daily "
                                     "WHERE day IS NOT NULL GROUP BY ALL ORDER BY 1").fetchall():
            s.daily.setdefault(day.isoformat(), {})[b] = int(n)
        s.behaviors = {b: int(n) for b, n in agg.execute(
            f"SELECT {S.BEHAVIOR}, sum(n)::BIGINT FROM item_daily GROUP BY 1 ORDER BY 2 DESC").fetchall()}
        s.events = sum(s.behaviors.values())
        s.top_items = [(i, int(n)) for i, n in agg.execute(
            f"SELECT {S.ITEM_ID}, sum(n)::BIGINT AS n FROM item_daily GROUP BY 1 ORDER BY n DESC, 1 LIMIT 1000").fetchall()]
        s.agg = agg
        funnel = ", ".join(f"count(DISTINCT {S.USER_ID}) FILTER (WHERE {S.BEHAVIOR} = '{b}')" for b in S.FUNNEL)
        row = con.execute(f"SELECT count(DISTINCT {S.USER_ID}), count(DISTINCT {S.ITEM_ID}), min({S.TIMESTAMP}), "
                          f"max({S.TIMESTAMP}), {funnel} FROM events").fetchone()
        s.users, s.items, s.first, s.last = int(row[0]), int(row[1]), _iso(row[2]), _iso(row[3])
        s.funnel_users = {b: int(n) for b, n in zip(S.FUNNEL, row[4:])}
        s.pairs = int(con.execute(f"SELECT count(*) FROM (SELECT DISTINCT {S.USER_ID}, {S.ITEM_ID} FROM events)")
                      .fetchone()[0])
        s.top_users = [(u, int(n)) for u, n in con.execute(
            f"SELECT {S.USER_ID}, count(*) AS n FROM events GROUP BY 1 ORDER BY n DESC, 1 LIMIT 1000").fetchall()]
        s.catalogue_items = int(con.execute("SELECT count(*) FROM items").fetchone()[0])
        s.categories = [(c, int(n)) for c, n in con.execute(
            f"SELECT {S.CATEGORY}, count(*) FROM items WHERE {S.CATEGORY} IS NOT NULL GROUP BY 1 ORDER BY 1").fetchall()]
        s.computed_at = s.full_at = time.time()
        s.full_seconds = time.perf_counter() - t0
        log.info("dashboard summary over %d events in %.2f s", s.events, s.full_seconds)
        return s

    def _delta(self, con: Any, cur: Summary) -> Summary:
        rows = con.execute(
            f"SELECT {S.TIMESTAMP}::DATE, {S.BEHAVIOR}, count(*), max({S.SEQ}) FROM events "
            f"WHERE {S.SOURCE} = 'api' AND {S.SEQ} > ? GROUP BY ALL", [cur.watermark]).fetchall()
        s = replace(cur, daily={d: dict(v) for d, v in cur.daily.items()}, behaviors=dict(cur.behaviors))
        for day, b, n, top in rows:
            if day is not None:
                per = s.daily.setdefault(day.isoformat(), {})
                per[b] = per.get(b, 0) + int(n)
            s.behaviors[b] = s.behaviors.get(b, 0) + int(n)
            s.events += int(n)
            s.watermark = max(s.watermark, int(top))
        if rows:
            s.daily = dict(sorted(s.daily.items()))
            newest = max((d.isoformat() for d, *_ in rows if d is not None), default="")
            s.last = max(s.last or "", newest) or s.last
        s.computed_at = time.time()
        return s

    # -- overview -------------------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        s = self.summary()
        model = self.state.current
        behaviours = [b for b in S.DEFAULT_BEHAVIOR_WEIGHTS if b in s.behaviors] + \
            [b for b in s.behaviors if b not in S.DEFAULT_BEHAVIOR_WEIGHTS]
        days = list(s.daily)
        return {
            "events": s.events, "users": s.users, "items": s.items, "catalogue_items": s.catalogue_items,
            "density": s.density, "first": s.first, "last": s.last, "behaviors": s.behaviors,
            "funnel": s.funnel(), "model_version": model.version if model else None,
            "model_created": model.manifest.get("created_at") if model else None,
            "chart": {"days": days, "series": {b: [s.daily[d].get(b, 0) for d in days] for b in behaviours}},
            "summary_age_seconds": round(time.time() - s.computed_at, 1), "summary_seconds": round(s.full_seconds, 3),
            "live_users": len(self.state.histories.users), "live": self.live.snapshot(), "pending": s.pending,
        }

    # -- models ---------------------------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        model = self.state.current
        manifest = model.manifest if model else {}
        evaluation, path = find_evaluation(model.path if model else None, self.state.model_dir)
        out: dict[str, Any] = {"model_version": model.version if model else None, "manifest": manifest,
                               "evaluation": None, "evaluation_path": str(path) if path else None,
                               "importances": [], "generators": []}
        if model is not None:
            fuser = getattr(model.pipeline, "fuser_", None)
            if fuser is not None and hasattr(fuser, "feature_importance") and getattr(fuser, "boosters_", None):
                try:
                    out["importances"] = list(fuser.feature_importance().items())[:25]
                except Exception:  # a fuser without importances: the page says so
                    log.exception("feature importances")
            out["generators"] = list(model.pipeline.generators_)
            out["fuser"] = type(fuser).__name__ if fuser is not None else None
        if evaluation is not None:
            out["evaluation"] = _leaderboard(evaluation)
        return out

    # -- users ----------------------------------------------------------------------------------
    def user_list(self, page: int, per_page: int) -> tuple[list[tuple[str, int]], int]:
        top = self.summary().top_users
        h = self.state.histories
        rows = top[page * per_page:(page + 1) * per_page]
        # a user forgotten since the summary was built is not shown, not even by id
        return [(u, n) for u, n in rows if len(h.history(u) or ()) > 0], len(top)

    def user(self, user_id: str, page: int = 0, per_page: int = 50, k: int = 10) -> dict[str, Any] | None:
        """A user's history (newest first, one page), recommendations with their explanations, A/B variant;
        None for a user neither the store nor the model knows."""
        st = self.state
        stored = st.stored_id(user_id)
        hist = st.histories.history(stored)
        model, assigned = st.model_for(stored)
        in_model = model is not None and model.user_index(stored) >= 0
        if (hist is None or len(hist) == 0) and not in_model:
            return None
        h = st.histories
        events: list[dict[str, Any]] = []
        n = len(hist) if hist is not None else 0
        if hist is not None and n:
            order = np.arange(n)[::-1]
            sel = order[page * per_page:(page + 1) * per_page]
            ids = h.item_ids(hist.items[sel].tolist())
            for j, item in zip(sel.tolist(), ids):
                t = float(hist.times[j])
                events.append({"item_id": item, "behavior": h.behaviors[int(hist.behaviors[j])],
                               "time": datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")
                               if math.isfinite(t) else None, "live": j >= n - hist.n_live})
        timeline = []
        if hist is not None and n:
            tail = slice(max(0, n - 300), n)
            for t, b in zip(hist.times[tail].tolist(), hist.behaviors[tail].tolist()):
                if math.isfinite(t):
                    timeline.append({"x": int(t * 1000), "b": h.behaviors[b]})
        recs = st.recommender.for_user(model, stored, k)  # read only: no A/B impression is logged
        history_ids = set(h.item_ids(hist.items.tolist())) if hist is not None and n else set()
        rows = []
        for rank, it in enumerate(recs, start=1):
            gens = [(r["generator"], r["rank"]) for r in it["reasons"] if r.get("type") == "generator"]
            because = [{"item_id": r["item_id"], "behavior": r.get("behavior"), "text": r.get("text"),
                        "weight": r.get("weight"), "in_history": r["item_id"] in history_ids}
                       for r in it["reasons"] if r.get("type") == "history"]
            other = [r.get("text") for r in it["reasons"] if r.get("type") not in ("generator", "history")]
            rows.append({"rank": rank, "item_id": it["item_id"], "score": it["score"], "generators": gens,
                         "because": because, "other": [o for o in other if o]})
        titles = self.titles([e["item_id"] for e in events] + [r["item_id"] for r in rows]
                             + [b["item_id"] for r in rows for b in r["because"]])
        variant = None
        if assigned is not None:
            exp, v = assigned
            variant = {"experiment": exp.name, "variant": v.name, "model": v.model,
                       "model_version": model.version if model else None}
        elif st.tracker.experiments:
            variant = {"experiment": None, "variant": "not in any experiment (outside the traffic shares)"}
        return {"user_id": user_id, "n_events": n, "events": events, "page": page, "per_page": per_page,
                "pages": max(1, math.ceil(n / per_page)), "timeline": timeline, "recommendations": rows,
                "titles": titles, "variant": variant, "in_model": in_model,
                "model_version": model.version if model else None}

    # -- items ----------------------------------------------------------------------------------
    def titles(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Catalogue rows (title, category, brand, price, available) of some item ids: primary-key lookups."""
        uniq = list(dict.fromkeys(i for i in ids if i))[:500]
        if not uniq:
            return {}
        rows = self._read(lambda con: con.execute(
            f"SELECT {S.ITEM_ID}, {S.TITLE}, {S.CATEGORY}, {S.BRAND}, {S.PRICE}, {S.AVAILABLE} FROM items "
            f"WHERE {S.ITEM_ID} IN (SELECT unnest(?::VARCHAR[]))", [uniq]).fetchall())
        return {r[0]: {"title": r[1], "category": r[2], "brand": r[3], "price": r[4], "available": r[5]} for r in rows}

    def item_list(self, page: int, per_page: int, q: str | None = None,
                  category: str | None = None) -> tuple[list[dict[str, Any]], int]:
        where, params = [], []
        if q:
            where.append(f"({S.ITEM_ID} ILIKE ? OR {S.TITLE} ILIKE ?)")
            params += [f"%{q}%", f"%{q}%"]
        if category:
            where.append(f"({S.CATEGORY} = ? OR {S.CATEGORY} LIKE ?)")
            params += [category, category.rstrip("/") + "/%"]
        cond = ("WHERE " + " AND ".join(where)) if where else ""

        def run(con: Any) -> tuple[list[dict[str, Any]], int]:
            total = int(con.execute(f"SELECT count(*) FROM items {cond}", params).fetchone()[0])
            rows = con.execute(f"SELECT {S.ITEM_ID}, {S.TITLE}, {S.CATEGORY}, {S.BRAND}, {S.PRICE}, {S.AVAILABLE} "
                               f"FROM items {cond} ORDER BY {S.ITEM_ID} LIMIT ? OFFSET ?",
                               params + [per_page, page * per_page]).fetchall()
            cols = ("item_id", "title", "category", "brand", "price", "available")
            return [dict(zip(cols, r)) for r in rows], total

        return self._read(run)

    def item(self, item_id: str, k: int = 8) -> dict[str, Any] | None:
        """Attributes, popularity per day, similar items by source, and the users it suits most; None if unknown."""
        summary = self.summary()

        def run(con: Any) -> tuple[Any, list[Any]]:
            attrs = _item_row(con, item_id)
            # events since the summary: only the live ones, found through the seq zone maps
            live = con.execute(f"SELECT {S.TIMESTAMP}::DATE, {S.BEHAVIOR}, count(*) FROM events "
                               f"WHERE {S.SOURCE} = 'api' AND {S.SEQ} > ? AND {S.ITEM_ID} = ? GROUP BY ALL",
                               [summary.watermark, item_id]).fetchall()
            return attrs, live

        if summary.agg is None:  # no cached aggregates yet: filtered scans of the store (slower on big stores)
            attrs, daily, bought = self._read(lambda con: self._item_direct(con, item_id, k))
        else:
            attrs, live = self._read(run)
            daily, bought = self._item_cached(summary.agg, item_id, live, k)
        return self._item_page(item_id, attrs, daily, bought, k)

    def _item_direct(self, con: Any, item_id: str, k: int) -> tuple[Any, list[Any], list[Any]]:
        attrs = _item_row(con, item_id)
        daily = con.execute(f"SELECT {S.TIMESTAMP}::DATE, {S.BEHAVIOR}, count(*) FROM events "
                            f"WHERE {S.ITEM_ID} = ? AND {S.TIMESTAMP} IS NOT NULL GROUP BY ALL ORDER BY 1",
                            [item_id]).fetchall()
        bought = con.execute(
            f"WITH buyers AS (SELECT DISTINCT {S.USER_ID} FROM events WHERE {S.ITEM_ID} = ? AND {S.BEHAVIOR} = 'buy') "
            f"SELECT e.{S.ITEM_ID}, count(DISTINCT e.{S.USER_ID}) AS n FROM events e JOIN buyers b USING ({S.USER_ID}) "
            f"WHERE e.{S.BEHAVIOR} = 'buy' AND e.{S.ITEM_ID} <> ? GROUP BY 1 ORDER BY n DESC, 1 LIMIT ?",
            [item_id, item_id, k]).fetchall()
        return attrs, daily, bought

    def _item_cached(self, aggregates: Any, item_id: str, live: list[Any], k: int) -> tuple[list[Any], list[Any]]:
        agg = aggregates.cursor()
        try:
            counts: dict[tuple[Any, str], int] = {}
            for d, b, n in agg.execute(f"SELECT day, {S.BEHAVIOR}, n FROM item_daily WHERE {S.ITEM_ID} = ? "
                                       "AND day IS NOT NULL", [item_id]).fetchall() + live:
                if d is not None:
                    counts[(d, b)] = counts.get((d, b), 0) + int(n)
            daily = [(d, b, n) for (d, b), n in sorted(counts.items())]
            # customers who bought this item, and what else they bought
            bought = agg.execute(
                f"SELECT o.{S.ITEM_ID}, count(*) AS n FROM buys b JOIN buys_by_user o USING ({S.USER_ID}) "
                f"WHERE b.{S.ITEM_ID} = ? AND o.{S.ITEM_ID} <> ? GROUP BY 1 ORDER BY n DESC, 1 LIMIT ?",
                [item_id, item_id, k]).fetchall()
        finally:
            agg.close()
        return daily, bought

    def _item_page(self, item_id: str, attrs: dict[str, Any] | None, daily: list[Any], bought: list[Any],
                   k: int) -> dict[str, Any] | None:
        st = self.state
        code = st.histories.item_code(item_id)
        if attrs is None and code < 0:
            return None
        if attrs and attrs.get(S.ATTRIBUTES):
            try:
                extra = json.loads(attrs[S.ATTRIBUTES])
                attrs = {**{k: v for k, v in attrs.items() if k != S.ATTRIBUTES},
                         **({f"{k}": v for k, v in extra.items()} if isinstance(extra, dict) else {})}
            except ValueError:
                pass
        days = sorted({d.isoformat() for d, _, _ in daily})
        pos = {d: i for i, d in enumerate(days)}
        series: dict[str, list[int]] = {}
        for d, b, n in daily:
            series.setdefault(b, [0] * len(days))[pos[d.isoformat()]] = int(n)
        model = st.current
        similar: list[dict[str, Any]] = []
        m = int(model.to_model(np.asarray([code]))[0]) if model is not None and code >= 0 else -1
        if m >= 0 and model is not None:
            for name, gen in model.similar_sources:
                try:
                    found = gen.similar_items(m, k + 1)
                except Exception:
                    log.exception("similar items of %s by %s", item_id, name)
                    continue
                ids = [model.item_ids[j] for j in found.items.tolist() if j != m][:k]
                scores = [float(x) for j, x in zip(found.items.tolist(), found.scores.tolist()) if j != m][:k]
                similar.append({"source": name, "label": GENERATOR_LABELS.get(name, f"similar ({name})"),
                                "items": [{"item_id": i, "score": s} for i, s in zip(ids, scores)]})
        similar.append({"source": "also_bought", "label": "also bought (customers who bought this)",
                        "items": [{"item_id": i, "score": float(n)} for i, n in bought]})
        fused = st.recommender.similar(model, item_id, k)
        similar.insert(0, {"source": "served", "label": "customers also viewed (as served by /items/{id}/similar)",
                           "items": [{"item_id": it["item_id"], "score": it["score"]} for it in fused]})
        users = self._users_for_item(model, m, 10)
        titles = self.titles([it["item_id"] for s in similar for it in s["items"]])
        return {"item_id": item_id, "attributes": attrs or {}, "days": days, "series": series, "similar": similar,
                "users": users, "titles": titles, "events": int(sum(n for _, _, n in daily))}

    def _users_for_item(self, model: Any, m: int, n: int) -> dict[str, Any]:
        """The users whose factor-model score for the item is highest: those it is recommended to most."""
        if model is None or m < 0:
            return {"source": None, "users": []}
        for name, gen in model.pipeline.generators_.items():
            uf, itf = getattr(gen, "user_factors_", None), getattr(gen, "item_factors_", None)
            if uf is None or itf is None or m >= len(itf) or not len(uf):
                continue
            scores = uf @ itf[m]
            top = np.argpartition(-scores, min(n, len(scores) - 1))[:n]
            top = top[np.argsort(-scores[top])]
            ids = model.pipeline.users_.ids(top.tolist())
            return {"source": name, "users": [{"user_id": u, "score": float(scores[t])} for u, t in zip(ids, top)]}
        return {"source": None, "users": []}

    # -- experiments ----------------------------------------------------------------------------
    def experiment_reports(self) -> list[dict[str, Any]]:
        out = []
        for name in self.state.tracker.experiments:
            report = self.state.tracker.report(name, self.state.variant_versions(name))
            if report is None:
                continue
            for v in report["variants"]:
                v["ctr_ci"] = wilson(int(v["clicks"]), int(v["impressions"]))
                v["conversion_ci"] = wilson(int(v["conversions"]), int(v["impressions"]))
            report["series"] = self.experiments.record(report)
            out.append(report)
        return out

    # -- storefront -----------------------------------------------------------------------------
    def categories(self) -> list[tuple[str, int]]:
        return self.summary().categories

    def sample_users(self, n: int = 8) -> list[str]:
        return [u for u, c in self.summary().top_users[5:5 + 4 * n] if c < 400][:n]


def _leaderboard(ev: dict[str, Any]) -> dict[str, Any]:
    """The evaluation JSON shaped for the page: rows per model, metric families by K, the plots' series."""
    ks = [int(k) for k in ev.get("k", [])]
    models = ev["models"]
    primary = ev.get("primary_metric") or (f"ndcg@{max(ks)}" if ks else None)
    families = [f for f in ("ndcg", "recall", "precision", "hr", "map", "mrr", "coverage", "diversity", "novelty")
                if any(f"{f}@{k}" in m.get("metrics", {}) for m in models.values() for k in ks)]
    rows = []
    for name, m in models.items():
        rows.append({"model": name, "metrics": m.get("metrics", {}), "ci": m.get("ci", {}),
                     "fit_seconds": m.get("fit_seconds"), "recommend_seconds": m.get("recommend_seconds")})
    if primary:
        rows.sort(key=lambda r: -(r["metrics"].get(primary) or 0.0))
    kmax = max(ks) if ks else None
    metric_vs_k = {f: {r["model"]: [r["metrics"].get(f"{f}@{k}") for k in ks] for r in rows}
                   for f in ("ndcg", "recall") if f in families}
    ci_vs_k = {f: {r["model"]: [r["ci"].get(f"{f}@{k}") for k in ks] for r in rows} for f in metric_vs_k}
    tradeoff = [{"model": r["model"], "x": r["metrics"].get(f"coverage@{kmax}"), "y": r["metrics"].get(f"ndcg@{kmax}")}
                for r in rows if r["metrics"].get(f"coverage@{kmax}") is not None]
    comparisons = [c for c in ev.get("comparisons", []) if c.get("metric") == primary][:20]
    return {"dataset": ev.get("dataset"), "protocol": ev.get("protocol"), "k": ks, "kmax": kmax,
            "n_users_evaluated": ev.get("n_users_evaluated"), "n_items": ev.get("n_items"),
            "primary_metric": primary, "best_model": ev.get("best_model"), "families": families, "rows": rows,
            "metric_vs_k": metric_vs_k, "ci_vs_k": ci_vs_k, "tradeoff": tradeoff, "comparisons": comparisons,
            "split": ev.get("split", [])}
