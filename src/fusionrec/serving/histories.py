"""Every user's history (stored events plus live ones) in memory, the catalogue and online trending counters.

Histories are indexed by server-wide user and item codes (a `Vocabulary` each) that do not depend on
a model version, so a hot swap only rebuilds the small code -> model index map. Stored events sit in
CSR arrays built once at start; live events go to a per-user packed array, so a new event is part of
the user's next query at once. Trending is a sum of exponentially decayed event weights per item.
"""

from __future__ import annotations

import math
import threading
from array import array
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import polars as pl

from fusionrec import schema as S
from fusionrec.data.vocabulary import Vocabulary

__all__ = ["Catalogue", "HistoryStore", "UserHistory", "VERBS"]

#: doubles per live event in a user's packed array: item code, behaviour code, epoch seconds, sequence number
LIVE_FIELDS = 4
_NO_LIVE = np.empty((0, LIVE_FIELDS))
_NO_LIVE.flags.writeable = False


def _unpack(live: array | None) -> np.ndarray:
    """[events, LIVE_FIELDS] a copy of a user's packed live events (none: an empty table); a copy, so the
    array may grow while the caller reads it."""
    if live is None:
        return _NO_LIVE
    return np.array(live, np.float64).reshape(-1, LIVE_FIELDS)


def _live_slack(max_events: int) -> int:
    """How many events past `max_events` a user's live array may hold before it is cut back to the newest
    `max_events` (reads take the newest `max_events` anyway)."""
    return max(max_events // 4, 1)


#: how a behaviour reads in "because you ... X"
VERBS = {"view": "viewed", "click": "clicked", "fav": "saved", "cart": "added to your cart", "buy": "bought"}
TRENDING_HALF_LIFE_DAYS = 7.0
_MAX_CATEGORY_MASKS = 1024


@dataclass
class UserHistory:
    """One user's events, oldest first: global item codes, behaviour codes, epoch seconds (NaN unknown).

    `n_live`: how many of them arrived live after the serving model's training snapshot (see
    `HistoryStore.history`), i.e. events the model has not learned."""

    items: np.ndarray
    behaviors: np.ndarray
    times: np.ndarray
    n_live: int = 0

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class _Base:
    """Events folded into CSR arrays per user code (rows [indptr[u], indptr[u+1]), oldest first): the
    store's events at start, plus the live events of earlier retrains (`HistoryStore.rebase`)."""

    indptr: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int32 item codes
    behaviors: np.ndarray  # int8 behaviour codes
    times: np.ndarray  # float64 epoch seconds, NaN unknown

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def row(self, code: int, last: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The newest `last` events of a user, or None when the user has no row."""
        if code >= self.n_users:
            return None
        lo, hi = self.indptr[code], self.indptr[code + 1]
        lo = max(lo, hi - last)
        return self.items[lo:hi].astype(np.int64), self.behaviors[lo:hi], self.times[lo:hi]


@dataclass
class Catalogue:
    """Per global item code: category and brand codes (-1 unknown), availability, consumable, price."""

    category: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    brand: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    available: np.ndarray = field(default_factory=lambda: np.empty(0, bool))
    consumable: np.ndarray = field(default_factory=lambda: np.empty(0, bool))
    price: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    category_names: list[str] = field(default_factory=list)
    brand_names: list[str] = field(default_factory=list)

    @classmethod
    def from_frame(cls, items: pl.DataFrame | None, vocab: Vocabulary) -> "Catalogue":
        n = len(vocab)
        cat = cls(np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.ones(n, bool), np.zeros(n, bool),
                  np.full(n, np.nan))
        if items is None or items.height == 0 or S.ITEM_ID not in items.columns:
            return cat
        idx = vocab.indices(items[S.ITEM_ID].cast(pl.Utf8).to_list())
        ok = idx >= 0
        idx = idx[ok]
        items = items.filter(pl.Series(ok))
        for col, attr, names_attr in ((S.CATEGORY, "category", "category_names"), (S.BRAND, "brand", "brand_names")):
            if col in items.columns:
                values = items[col].cast(pl.Utf8)
                names = sorted(set(values.drop_nulls().to_list()) - {""})
                lookup = {name: i for i, name in enumerate(names)}
                getattr(cat, attr)[idx] = values.replace_strict(lookup, default=-1, return_dtype=pl.Int64).to_numpy()
                setattr(cat, names_attr, names)
        if S.AVAILABLE in items.columns:
            av = items[S.AVAILABLE].cast(pl.Utf8).str.to_lowercase()
            cat.available[idx] = ~av.is_in(["false", "0", "no"]).fill_null(False).to_numpy()
        if S.ATTRIBUTES in items.columns:
            attrs = items[S.ATTRIBUTES].cast(pl.Utf8)
            cat.consumable[idx] = attrs.str.contains('"consumable": ?true').fill_null(False).to_numpy()
        if S.PRICE in items.columns:
            cat.price[idx] = items[S.PRICE].cast(pl.Float64, strict=False).fill_null(float("nan")).to_numpy()
        return cat

    def __len__(self) -> int:
        return len(self.category)

    def lookup(self, codes: np.ndarray, attr: str, default: Any) -> np.ndarray:
        """`attr` for item codes; codes added after the catalogue was read get `default`."""
        values = getattr(self, attr)
        codes = np.asarray(codes, np.int64)
        out = np.full(len(codes), default, values.dtype)
        inside = (codes >= 0) & (codes < len(values))
        out[inside] = values[codes[inside]]
        return out

    def categories_under(self, prefix: str) -> np.ndarray:
        """Category codes equal to `prefix` or below it ("home" covers "home/kitchen")."""
        p = prefix.rstrip("/")
        return np.asarray([i for i, c in enumerate(self.category_names) if c == p or c.startswith(p + "/")], np.int64)


class HistoryStore:
    """User histories (stored + live events), the catalogue and trending counts, safe to share across threads."""

    def __init__(self, users: Vocabulary, items: Vocabulary, indptr: np.ndarray, item_codes: np.ndarray,
                 behavior_codes: np.ndarray, times: np.ndarray, behaviors: list[str], catalogue: Catalogue,
                 trend: np.ndarray, t_ref: float, max_events: int = 500) -> None:
        self.users = users
        self.items = items
        self.behaviors = list(behaviors)
        self.catalogue = catalogue
        self.max_events = max_events
        self._base = _Base(indptr, item_codes, behavior_codes, times)  # replaced whole, never edited
        # live events per user, oldest first, packed LIVE_FIELDS doubles each (item code, behaviour code,
        # epoch seconds, live sequence number: 32 bytes, where a tuple of Python objects took ~150): the
        # newest `max_events` received, up to a quarter more between cuts (a history never reads more), so
        # a busy user or a client replaying a log costs bounded memory and bounded work per request; a
        # retrain's swap folds the ones it learned into the base (`rebase`)
        self._live: dict[int, array] = {}
        self._live_seq = 0  # sequence number of the newest live event
        self._masked: set[int] = set()  # users forgotten: their stored rows no longer count
        self._revisions: dict[int, int] = {}  # per user code: bumped by each live event and by forget
        self._lock = threading.Lock()
        self._trend = np.zeros(max(len(items), 1) * 2, np.float64)
        self._trend[:len(trend)] = trend
        self._t_ref = t_ref if math.isfinite(t_ref) else 0.0
        self.newest = t_ref
        self._weights = np.asarray([S.DEFAULT_BEHAVIOR_WEIGHTS.get(b, 1.0) for b in self.behaviors], np.float32)
        self._category_masks: dict[str, np.ndarray] = {}
        self.live_events = 0

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_frames(cls, events: pl.DataFrame, items: pl.DataFrame | None = None,
                    bots: Iterable[str] = (), max_events: int = 500) -> "HistoryStore":
        """From events (user_id, item_id, behavior and timestamp or epoch seconds `t`) and the catalogue."""
        vocab = Vocabulary(items[S.ITEM_ID].cast(pl.Utf8).to_list() if items is not None and items.height else [])
        if events.height:
            vocab.extend(events[S.ITEM_ID].cast(pl.Utf8).unique(maintain_order=True).to_list())
        ev = events
        if "t" not in ev.columns:
            if S.TIMESTAMP in ev.columns and ev.schema[S.TIMESTAMP].is_temporal():
                ev = ev.with_columns((pl.col(S.TIMESTAMP).dt.epoch("ms").cast(pl.Float64) / 1000.0).alias("t"))
            else:
                ev = ev.with_columns(pl.lit(float("nan")).alias("t"))
        ev = ev.with_columns(pl.col("t").cast(pl.Float64).fill_null(float("nan")),
                             pl.col(S.USER_ID).cast(pl.Utf8), pl.col(S.ITEM_ID).cast(pl.Utf8))
        # stable sort: events of a user stay in the store's (timestamp, seq) order
        ev = ev.with_row_index("_pos").sort([S.USER_ID, "_pos"])
        behaviors = list(S.DEFAULT_BEHAVIOR_WEIGHTS)
        for b in ev[S.BEHAVIOR].unique().to_list() if ev.height else []:
            if b is not None and b not in behaviors:
                behaviors.append(b)
        per_user = ev.group_by(S.USER_ID, maintain_order=True).len()
        users = Vocabulary(per_user[S.USER_ID].to_list())
        indptr = np.concatenate([[0], np.cumsum(per_user["len"].to_numpy())]).astype(np.int64)
        if ev.height:
            item_codes = ev[S.ITEM_ID].cast(pl.Enum(vocab.ids())).to_physical().cast(pl.Int32).to_numpy()
            beh = ev[S.BEHAVIOR].replace_strict({b: i for i, b in enumerate(behaviors)},
                                                return_dtype=pl.Int8).to_numpy()
        else:
            item_codes, beh = np.empty(0, np.int32), np.empty(0, np.int8)
        t = ev["t"].to_numpy().astype(np.float64)
        catalogue = Catalogue.from_frame(items, vocab)
        t_ref = float(np.nanmax(t)) if len(t) and np.isfinite(t).any() else float("nan")
        bot_ids = pl.Series(list(bots), dtype=pl.Utf8).implode()
        human = ~ev[S.USER_ID].is_in(bot_ids).to_numpy() if ev.height else np.empty(0, bool)
        weights = np.asarray([S.DEFAULT_BEHAVIOR_WEIGHTS.get(b, 1.0) for b in behaviors])[beh] if len(beh) else \
            np.empty(0)
        if math.isfinite(t_ref):
            age = np.nan_to_num(t - t_ref, nan=0.0)
            weights = weights * np.exp2(age / (TRENDING_HALF_LIFE_DAYS * 86400.0))
        trend = np.bincount(item_codes[human], weights=weights[human], minlength=len(vocab)).astype(np.float64) \
            if len(item_codes) else np.zeros(len(vocab))
        return cls(users, vocab, indptr, item_codes, beh, t, behaviors, catalogue, trend, t_ref, max_events)

    @classmethod
    def from_store(cls, store: Any, max_events: int = 500) -> "HistoryStore":
        """Load every stored event of an EventStore (bot users get histories but do not count in trending)."""
        events = store.con.execute(
            f"SELECT {S.USER_ID}, {S.ITEM_ID}, {S.BEHAVIOR}, epoch({S.TIMESTAMP})::DOUBLE AS t FROM events "
            f"ORDER BY {S.TIMESTAMP} NULLS FIRST, {S.SEQ}").pl()
        items = store.items()
        bots = store.bot_users()[S.USER_ID].to_list() if events.height else []
        return cls.from_frames(events, items, bots=bots, max_events=max_events)

    @classmethod
    def from_model(cls, pipeline: Any, user_id: str | None = None) -> "HistoryStore":
        """What a saved pipeline alone knows: its catalogue, 7-day popularity as trending, and one
        user's training history rebuilt from the per-behaviour counts (for `fusionrec recommend`)."""
        from fusionrec.features.tables import ITEM_FEATURES

        f = pipeline.item_features_
        ids = pipeline.items_.ids()
        names = lambda codes, table: [table[c] if c >= 0 else None for c in codes.tolist()]  # noqa: E731
        items = pl.DataFrame({S.ITEM_ID: ids, S.CATEGORY: names(f.category, f.category_names),
                              S.BRAND: names(f.brand, f.brand_names), S.AVAILABLE: f.available.tolist(),
                              S.PRICE: f.price.tolist(),
                              S.ATTRIBUTES: ['{"consumable": true}' if c else "{}" for c in f.consumable.tolist()]})
        rows: list[tuple[str, str, str, float]] = []
        u = pipeline.users_.index(user_id) if user_id is not None else -1
        uf = pipeline.user_features_
        if u >= 0:
            last = uf.last_seen[u]
            for matrix, behavior in ((uf.views, "view"), (uf.favs, "fav"), (uf.carts, "cart"), (uf.buys, "buy")):
                row = matrix[u]
                for j, count in zip(row.indices.tolist(), row.data.tolist()):
                    days = float(last[0, j]) - 1.0 if last[0, j] > 0 else 0.0
                    rows += [(user_id, ids[j], behavior, uf.now - days * 86400.0)] * int(round(count))
        events = pl.DataFrame(rows, schema={S.USER_ID: pl.Utf8, S.ITEM_ID: pl.Utf8, S.BEHAVIOR: pl.Utf8,
                                            "t": pl.Float64}, orient="row").sort("t")
        store = cls.from_frames(events, items)
        pop = np.expm1(f.values[:, ITEM_FEATURES.index("item_pop_7d")].astype(np.float64))
        store._trend[:len(pop)] = pop
        store.newest = uf.now
        return store

    # -- reading ------------------------------------------------------------------------------
    def behavior_weights(self, codes: np.ndarray) -> np.ndarray:
        return self._weights[np.asarray(codes, np.int64)]

    def live_mark(self) -> int:
        """The sequence number of the newest live event so far: a retrain's snapshot, copied after this
        call, holds every live event up to it (events join the histories only after their commit)."""
        with self._lock:
            return self._live_seq

    def revision(self, user_id: str) -> int:
        """A number that changes whenever the user's history does (a live event, being forgotten):
        what an answer computed from the history depends on (see serving/answer_cache.py)."""
        code = self.users.index(user_id)
        return self._revisions.get(code, 0) if code >= 0 else -1

    def history(self, user_id: str, learned_through: int = 0) -> UserHistory | None:
        """The user's events, oldest first (at most `max_events`, the newest), or None for an unknown user.

        `learned_through`: the live mark of the serving model's training snapshot; live events up to it
        are in the model already, so only newer ones count in `n_live` (and call for a fold-in)."""
        code = self.users.index(user_id)
        if code < 0:
            return None
        with self._lock:  # the live events and the base they complete, read together
            live = _unpack(self._live.get(code))
            masked = code in self._masked
            base = self._base
        parts_i, parts_b, parts_t = [], [], []
        row = None if masked else base.row(code, self.max_events)
        if row is not None:
            parts_i.append(row[0])
            parts_b.append(row[1])
            parts_t.append(row[2])
        n_new = 0
        if len(live):
            parts_i.append(live[:, 0].astype(np.int64))
            parts_b.append(live[:, 1].astype(np.int8))
            parts_t.append(live[:, 2])
            n_new = int(np.count_nonzero(live[:, 3] > learned_through))
        if not parts_i:
            return UserHistory(np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0), 0)
        items, beh, t = np.concatenate(parts_i), np.concatenate(parts_b), np.concatenate(parts_t)
        if len(live):
            order = np.argsort(np.nan_to_num(t, nan=-np.inf), kind="stable")  # live events may come late
            items, beh, t = items[order], beh[order], t[order]
        if len(items) > self.max_events:
            items, beh, t = items[-self.max_events:], beh[-self.max_events:], t[-self.max_events:]
        return UserHistory(items, beh, t, n_new)

    def behavior_code(self, name: str) -> int:
        try:
            return self.behaviors.index(name)
        except ValueError:
            return -1

    def item_code(self, item_id: str) -> int:
        return self.items.index(item_id)

    def item_ids(self, codes: Iterable[int]) -> list[str]:
        return self.items.ids(list(codes))

    def ensure_items(self, ids: Iterable[str]) -> None:
        """Give codes to item ids the store has not seen (a model trained elsewhere, live events)."""
        with self._lock:
            self._ensure_items(ids)

    def _ensure_items(self, ids: Iterable[str]) -> None:
        self.items.extend(ids)
        if len(self.items) > len(self._trend):
            grown = np.zeros(len(self.items) * 2, np.float64)
            grown[:len(self._trend)] = self._trend
            self._trend = grown

    # -- live updates -------------------------------------------------------------------------
    def append(self, events: Iterable[tuple[str, str, str, float]]) -> int:
        """Add accepted live events (user_id, item_id, canonical behaviour, epoch seconds); returns how many.

        Ids, behaviour codes and the trending counters are handled for the whole batch at once; only
        each user's packed array of live events is appended to one event at a time."""
        events = list(events)
        if not events:
            return 0
        user_ids, item_ids, behaviors, times = zip(*events)
        with self._lock:
            self.users.extend(user_ids)
            self._ensure_items(item_ids)
            code = {}
            for behavior in dict.fromkeys(behaviors):  # a behaviour first seen live gets the next code
                code[behavior] = self.behavior_code(behavior)
                if code[behavior] < 0:
                    self.behaviors.append(behavior)
                    self._weights = np.append(self._weights, np.float32(S.DEFAULT_BEHAVIOR_WEIGHTS.get(behavior, 1.0)))
                    code[behavior] = len(self.behaviors) - 1
            users, items = self.users.indices(user_ids), self.items.indices(item_ids)
            codes = np.fromiter((code[b] for b in behaviors), np.int64, len(behaviors))
            keep, most = LIVE_FIELDS * self.max_events, LIVE_FIELDS * (self.max_events + _live_slack(self.max_events))
            for u, i, b, t in zip(users.tolist(), items.tolist(), codes.tolist(), times):
                live = self._live.get(u)
                if live is None:
                    live = self._live[u] = array("d")
                self._live_seq += 1
                live.extend((i, b, t, self._live_seq))
                self._revisions[u] = self._revisions.get(u, 0) + 1
                if len(live) > most:  # cut back in one piece, not one memmove per event
                    del live[:len(live) - keep]
            t = np.asarray(times, np.float64)
            w = self._weights[codes].astype(np.float64)
            timed = np.isfinite(t)
            if timed.any():
                newest = float(t[timed].max())
                self.newest = newest if not math.isfinite(self.newest) else max(self.newest, newest)
                age = t[timed] - self._t_ref
                w[timed] *= 2.0 ** np.minimum(age / (TRENDING_HALF_LIFE_DAYS * 86400.0), 1000.0)
            np.add.at(self._trend, items, w)  # in event order, as one event at a time would add them
            self.live_events += len(events)
        return len(events)

    def forget(self, user_id: str) -> bool:
        """Drop every event of the user from memory; True when there was anything to drop."""
        code = self.users.index(user_id)
        if code < 0:
            return False
        with self._lock:
            base = self._base
            had = bool(self._live.pop(code, None)) or (code < base.n_users and code not in self._masked
                                                       and base.indptr[code + 1] > base.indptr[code])
            self._masked.add(code)
            self._revisions[code] = self._revisions.get(code, 0) + 1
        return had

    def rebase(self, through: int) -> int:
        """Fold the live events up to sequence number `through` (a retrain's `live_mark`) into the base
        arrays, where an event costs 13 bytes instead of the live arrays' 32, so a server that runs for
        weeks holds only the events since its last retrain in those. Returns how many moved.

        The new base is built outside the lock (requests go on, reading the old base and the live
        arrays, which still hold every event); one short locked step installs it and drops the moved
        events from the live arrays, so a reader sees each event exactly once."""
        with self._lock:
            # a forgotten user who came back keeps new events live: their base row stays masked
            unpacked = {u: _unpack(ev) for u, ev in self._live.items() if u not in self._masked}
            base = self._base
            n_users = len(self.users)
        picked = {u: ev[ev[:, 3] <= through] for u, ev in unpacked.items()}
        picked = {u: ev for u, ev in picked.items() if len(ev)}
        n = sum(len(ev) for ev in picked.values())
        if not n:
            return 0
        users = np.repeat(np.fromiter(picked, np.int64, len(picked)), [len(ev) for ev in picked.values()])
        flat = np.concatenate(list(picked.values()))
        order = np.argsort(users, kind="stable")  # by user code, each user's events in their order
        users, flat = users[order], flat[order]
        # each event goes at the end of its user's row; users new since the base go after everything,
        # in code order (np.insert keeps the given order for equal positions)
        ends = np.concatenate([base.indptr[1:], np.full(n_users - base.n_users, base.indptr[-1])])
        at = ends[users]
        items = np.insert(base.items, at, flat[:, 0].astype(np.int32))
        beh = np.insert(base.behaviors, at, flat[:, 1].astype(np.int8))
        times = np.insert(base.times, at, flat[:, 2])
        old_len = np.zeros(n_users, np.int64)
        old_len[:base.n_users] = np.diff(base.indptr)
        indptr = np.concatenate([[0], np.cumsum(old_len + np.bincount(users, minlength=n_users))]).astype(np.int64)
        # live events may come late: the rows that took some are re-sorted by time (stable)
        rows = np.unique(users)
        lens = indptr[rows + 1] - indptr[rows]
        span = np.repeat(indptr[rows] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
        o = np.lexsort((np.nan_to_num(times[span], nan=-np.inf), np.repeat(rows, lens)))
        items[span], beh[span], times[span] = items[span][o], beh[span][o], times[span][o]
        with self._lock:
            self._base = _Base(indptr, items, beh, times)
            for u in picked:
                live = self._live.get(u)
                if live is None:  # forgotten meanwhile: their base row is masked
                    continue
                rest = _unpack(live)
                rest = rest[rest[:, 3] > through]
                if len(rest):
                    self._live[u] = array("d", rest.ravel().tolist())
                else:
                    del self._live[u]
        return n

    # -- trending -----------------------------------------------------------------------------
    def category_mask(self, prefix: str) -> np.ndarray | None:
        """Boolean mask over catalogue codes of items in a category (or below it); None if no such category."""
        key = prefix.rstrip("/")
        mask = self._category_masks.get(key)
        if mask is None:
            codes = self.catalogue.categories_under(key)
            if not len(codes):
                return None
            mask = np.isin(self.catalogue.category, codes)
            if len(self._category_masks) < _MAX_CATEGORY_MASKS:
                self._category_masks[key] = mask
        return mask

    def trending(self, n: int, category: str | None = None, brand: int | None = None,
                 exclude: np.ndarray | None = None, price_max: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The n items trending now (item codes, scores scaled to [0, 1]); available items only."""
        size = len(self.items)
        if n <= 0 or size == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        scores = self._trend[:size].copy()
        top = scores.max() if size else 0.0
        scores = scores / top if top > 0 else scores
        ok = np.ones(size, bool)
        cat = self.catalogue
        m = min(len(cat), size)
        ok[:m] &= cat.available[:m]
        if category:
            mask = self.category_mask(category)
            if mask is None:
                return np.empty(0, np.int64), np.empty(0, np.float32)
            ok[:m] &= mask[:m]
            ok[m:] = False
        if brand is not None:
            ok[:m] &= cat.brand[:m] == brand
            ok[m:] = False
        if price_max is not None:
            ok[:m] &= ~(cat.price[:m] > price_max)
        if exclude is not None and len(exclude):
            ex = np.asarray(exclude, np.int64)
            ok[ex[(ex >= 0) & (ex < size)]] = False
        ok &= scores > 0  # items nobody touched (a model's items missing from an empty store) are not trending
        idx = np.flatnonzero(ok)
        if not len(idx):
            return np.empty(0, np.int64), np.empty(0, np.float32)
        vals = scores[idx]
        if len(idx) > n:
            part = np.argpartition(-vals, n - 1)[:n]
            idx, vals = idx[part], vals[part]
        order = np.lexsort((idx, -vals))
        return idx[order].astype(np.int64), vals[order].astype(np.float32)

    def stats(self) -> dict[str, Any]:
        return {"users": len(self.users), "items": len(self.items), "stored_events": int(self._base.indptr[-1]),
                "live_events": self.live_events}

