"""Features of items, users and user x item pairs for the fusion ranker.

Item and user features are arrays indexed by item / user index, computed once at fit time from the
training events. Pair features are computed for a whole candidate table at once (row of the batch,
item index) with sparse products and fancy indexing: no Python loop per row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec import schema as S
from fusionrec.candidates._similarity import row_blocks
from fusionrec.candidates.content import catalogue_rows, tfidf_vectors
from fusionrec.data.interactions import ITEM_IDX, TIME, USER_IDX, Interactions, min_per_pair

__all__ = ["ItemFeatures", "UserFeatures", "pair_features", "recent_items", "SESSION_ITEMS", "ITEM_FEATURES",
           "USER_FEATURES", "PAIR_FEATURES"]

ITEM_FEATURES = ("item_pop", "item_pop_1d", "item_pop_7d", "item_pop_30d", "item_trend", "item_cart_rate",
                 "item_buy_rate", "item_price", "item_price_rel", "item_category", "item_brand", "item_age_days")
USER_FEATURES = ("user_events", "user_recency_days", "user_share_view", "user_share_fav", "user_share_cart",
                 "user_share_buy", "user_categories", "user_price_median")
PAIR_FEATURES = ("ui_weight", "ui_views", "ui_favs", "ui_carts", "ui_buys", "ui_days_since", "ui_cat_affinity",
                 "ui_brand_affinity", "ui_price_vs_band", "ui_hist_len", "ui_session_cooc", "ui_content_sim")

#: how many of a user's most recent distinct items make the "current session" of ui_session_cooc
SESSION_ITEMS = 5

_DAY = 86400.0


def _codes(values: pl.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes (-1 for null) and the names they stand for."""
    names = values.drop_nulls().unique().sort().to_list()
    lookup = {n: i for i, n in enumerate(names)}
    codes = values.replace_strict(lookup, default=-1, return_dtype=pl.Int64).to_numpy()
    return codes, names


@dataclass
class ItemFeatures:
    """Per item index: popularity windows and trend, conversion, price, category/brand codes, age."""

    values: np.ndarray  # float32 [n_items, len(ITEM_FEATURES)]
    category: np.ndarray  # int64 [n_items], -1 unknown
    brand: np.ndarray
    price: np.ndarray  # float64, NaN unknown
    available: np.ndarray  # bool
    consumable: np.ndarray  # bool
    category_names: list[str] = field(default_factory=list)
    brand_names: list[str] = field(default_factory=list)
    #: L2-normalised TF-IDF rows of each item's catalogue text (title, brand, category path, attributes,
    #: text) [n_items, tokens]; zero columns when the catalogue has none (ui_content_sim is then missing)
    content: sp.csr_matrix = field(default_factory=lambda: sp.csr_matrix((0, 0), dtype=np.float32))

    @classmethod
    def build(cls, data: Interactions, content: sp.csr_matrix | None = None) -> "ItemFeatures":
        """From the events and catalogue of `data`; `content`: the catalogue's TF-IDF rows when the caller
        already has them (`content_vectors` of the same catalogue), else built here."""
        n = data.n_items
        ev = data.events
        items = ev[ITEM_IDX].to_numpy()
        beh = ev[S.BEHAVIOR].to_numpy()
        t = ev[TIME].to_numpy()
        now = data.now()
        windows = []
        for days in (1, 7, 30):
            recent = t >= now - days * _DAY if np.isfinite(now) else np.zeros(len(t), bool)
            windows.append(np.bincount(items[recent], minlength=n).astype(np.float64))
        first = np.full(n, np.nan)
        if np.isfinite(now):
            order = np.argsort(t, kind="stable")
            first_pos = np.unique(items[order], return_index=True)
            first[first_pos[0]] = t[order][first_pos[1]]
        return cls.from_counts(
            count=np.bincount(items, minlength=n).astype(np.float64), windows=windows,
            views=np.bincount(items[(beh == "view") | (beh == "click")], minlength=n).astype(np.float64),
            carts=np.bincount(items[beh == "cart"], minlength=n).astype(np.float64),
            buys=np.bincount(items[beh == "buy"], minlength=n).astype(np.float64),
            first_seen=first, now=now, catalogue=data.catalogue, content=content)

    @classmethod
    def from_counts(cls, count: np.ndarray, windows: list[np.ndarray], views: np.ndarray, carts: np.ndarray,
                    buys: np.ndarray, first_seen: np.ndarray, now: float,
                    catalogue: pl.DataFrame | None, content: sp.csr_matrix | None = None) -> "ItemFeatures":
        """The features from per-item counts (all, last 1/7/30 days, views, carts, buys), the first time
        each item was seen and the catalogue (with item_idx); the Spark engine aggregates the same counts."""
        n = len(count)
        out = np.zeros((n, len(ITEM_FEATURES)), np.float32)
        out[:, 0] = np.log1p(count)
        for j, w in enumerate(windows, start=1):
            out[:, j] = np.log1p(w)
        out[:, 4] = (windows[1] / 7.0 + 0.1) / (windows[2] / 30.0 + 0.1)  # last week vs last month, per day
        out[:, 5] = (carts + 0.1) / (views + 1.0)  # smoothed so a single view does not look like 100%
        out[:, 6] = (buys + 0.05) / (views + 1.0)
        price = np.full(n, np.nan)
        category = np.full(n, -1, np.int64)
        brand = np.full(n, -1, np.int64)
        available = np.ones(n, bool)
        consumable = np.zeros(n, bool)
        cat_names: list[str] = []
        brand_names: list[str] = []
        cat = catalogue
        if cat is not None:
            idx = cat[ITEM_IDX].to_numpy()
            if S.PRICE in cat.columns:
                price[idx] = cat[S.PRICE].cast(pl.Float64, strict=False).fill_null(float("nan")).to_numpy()
            if S.CATEGORY in cat.columns:
                codes, cat_names = _codes(cat[S.CATEGORY].cast(pl.Utf8))
                category[idx] = codes
            if S.BRAND in cat.columns:
                codes, brand_names = _codes(cat[S.BRAND].cast(pl.Utf8))
                brand[idx] = codes
            if S.AVAILABLE in cat.columns:
                av = cat[S.AVAILABLE].cast(pl.Utf8).str.to_lowercase()
                available[idx] = ~av.is_in(["false", "0", "no"]).fill_null(False).to_numpy()
            if S.ATTRIBUTES in cat.columns:
                attrs = cat[S.ATTRIBUTES].cast(pl.Utf8)
                consumable[idx] = attrs.str.contains('"consumable": ?true').fill_null(False).to_numpy()
        out[:, 7] = np.nan_to_num(price, nan=-1.0)
        rel = np.full(n, np.nan)
        known = ~np.isnan(price)
        if known.any():
            key = np.where(category >= 0, category, -1)
            frame = pl.DataFrame({"c": key[known], "p": price[known]})
            med = dict(frame.group_by("c").agg(pl.col("p").median()).iter_rows())
            medians = np.asarray([med.get(int(c), np.nan) for c in range(-1, max(len(cat_names), 0))])
            rel[known] = price[known] / np.maximum(medians[key[known] + 1], 1e-6)
        out[:, 8] = np.nan_to_num(rel, nan=-1.0)
        out[:, 9] = category
        out[:, 10] = brand
        out[:, 11] = np.nan_to_num((now - first_seen) / _DAY, nan=-1.0) if np.isfinite(now) else -1.0
        return cls(values=out, category=category, brand=brand, price=price, available=available,
                   consumable=consumable, category_names=cat_names, brand_names=brand_names,
                   content=content_vectors(cat, n) if content is None else content)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"item_values": self.values, "item_category": self.category, "item_brand": self.brand,
                "item_price": self.price, "item_available": self.available, "item_consumable": self.consumable,
                "item_content": self.content}

    def names_json(self) -> str:
        return json.dumps({"category": self.category_names, "brand": self.brand_names})

    @classmethod
    def from_arrays(cls, a: dict[str, Any], names: str) -> "ItemFeatures":
        meta = json.loads(names)
        return cls(values=a["item_values"], category=a["item_category"], brand=a["item_brand"],
                   price=a["item_price"], available=a["item_available"].astype(bool),
                   consumable=a["item_consumable"].astype(bool), category_names=meta["category"],
                   content=sp.csr_matrix(a["item_content"], dtype=np.float32) if "item_content" in a
                   else sp.csr_matrix((len(a["item_values"]), 0), dtype=np.float32),
                   brand_names=meta["brand"])


@dataclass
class UserFeatures:
    """Per user index: activity, recency, behaviour mix, category breadth, price band; plus per-behaviour
    user x item count matrices and the last interaction time per pair (for "viewed this very item")."""

    values: np.ndarray  # float32 [n_users, len(USER_FEATURES)]
    views: sp.csr_matrix
    favs: sp.csr_matrix
    carts: sp.csr_matrix
    buys: sp.csr_matrix
    last_seen: sp.csr_matrix  # days before `now` of the last event on the pair, +1 (0 = never)
    now: float
    #: the user's SESSION_ITEMS most recent distinct items, valued by recency (1 = the newest), in the
    #: log's order (time, then file order) [n_users, n_items]; ui_session_cooc's "current session"
    recent: sp.csr_matrix = field(default_factory=lambda: sp.csr_matrix((0, 0), dtype=np.float32))

    @classmethod
    def build(cls, data: Interactions, items: ItemFeatures) -> "UserFeatures":
        n_u, n_i = data.n_users, data.n_items
        ev = data.events
        users = ev[USER_IDX].to_numpy()
        it = ev[ITEM_IDX].to_numpy()
        beh = ev[S.BEHAVIOR].to_numpy()
        t = ev[TIME].to_numpy()
        now = data.now()

        def counts(mask: np.ndarray) -> sp.csr_matrix:
            m = sp.csr_matrix((np.ones(int(mask.sum()), np.float32), (users[mask], it[mask])), shape=(n_u, n_i))
            m.sum_duplicates()
            return m

        views = counts((beh == "view") | (beh == "click"))
        favs, carts, buys = counts(beh == "fav"), counts(beh == "cart"), counts(beh == "buy")
        total = np.bincount(users, minlength=n_u).astype(np.float64)
        out = np.zeros((n_u, len(USER_FEATURES)), np.float32)
        out[:, 0] = np.log1p(total)
        if np.isfinite(now):
            last = np.full(n_u, np.nan)
            np.fmax.at(last, users, t)
            out[:, 1] = np.nan_to_num((now - last) / _DAY, nan=-1.0)
            age = np.nan_to_num((now - t) / _DAY, nan=0.0) + 1.0
            ls = min_per_pair(users, it, age, n_u, n_i)  # the most recent event per pair
        else:
            out[:, 1] = -1.0
            ls = sp.csr_matrix((n_u, n_i), dtype=np.float32)
        safe = np.maximum(total, 1.0)
        out[:, 2] = np.asarray(views.sum(1)).ravel() / safe
        out[:, 3] = np.asarray(favs.sum(1)).ravel() / safe
        out[:, 4] = np.asarray(carts.sum(1)).ravel() / safe
        out[:, 5] = np.asarray(buys.sum(1)).ravel() / safe
        cats = items.category[it]
        known = cats >= 0
        if known.any():
            pairs = np.unique(np.stack([users[known], cats[known]]), axis=1)
            out[:, 6] = np.bincount(pairs[0], minlength=n_u)
        price = items.price[it]
        has_price = ~np.isnan(price)
        if has_price.any():
            frame = pl.DataFrame({"u": users[has_price], "p": price[has_price]})
            med = frame.group_by("u").agg(pl.col("p").median())
            band = np.full(n_u, -1.0, np.float32)
            band[med["u"].to_numpy()] = med["p"].to_numpy()
            out[:, 7] = band
        else:
            out[:, 7] = -1.0
        recent = recent_items(users, it, np.arange(len(users), dtype=np.float64), n_u, n_i)  # events in log order
        return cls(values=out, views=views, favs=favs, carts=carts, buys=buys, last_seen=ls, now=now, recent=recent)

    def known(self, users: np.ndarray) -> np.ndarray:
        """Which user indices have features (-1 and users newer than the tables do not)."""
        users = np.asarray(users, np.int64)
        return (users >= 0) & (users < self.values.shape[0])

    def rows(self, users: np.ndarray) -> np.ndarray:
        """Feature rows for user indices; unknown users (-1) get -1s except zero activity."""
        users = np.asarray(users, np.int64)
        out = np.full((len(users), self.values.shape[1]), -1.0, np.float32)
        known = self.known(users)
        out[known] = self.values[users[known]]
        out[~known, 0] = 0.0
        return out

    def to_arrays(self) -> dict[str, Any]:
        return {"user_values": self.values, "views": self.views, "favs": self.favs, "carts": self.carts,
                "buys": self.buys, "last_seen": self.last_seen, "now": np.asarray([self.now]), "recent": self.recent}

    @classmethod
    def from_arrays(cls, a: dict[str, Any]) -> "UserFeatures":
        recent = a["recent"] if "recent" in a else sp.csr_matrix(a["last_seen"].shape, dtype=np.float32)
        return cls(values=a["user_values"], views=a["views"], favs=a["favs"], carts=a["carts"], buys=a["buys"],
                   last_seen=a["last_seen"], now=float(a["now"][0]), recent=sp.csr_matrix(recent))

    def session_items(self, user: int, history: sp.csr_matrix) -> np.ndarray:
        """`sessions` for one row: the item indices of its current session."""
        if self.known(np.array([user]))[0] and user < self.recent.shape[0]:
            items = _row(self.recent, user)[0]
            if len(items):
                return items
        return _row(sp.csr_matrix(history), 0)[0]

    def sessions(self, users: np.ndarray, histories: sp.csr_matrix) -> sp.csr_matrix:
        """[batch rows, items] 1 on each row's current-session items: the user's `recent` items, or for
        a user without them (unknown, or newer than the tables) every item of the history row (an
        anonymous visitor's history is the session)."""
        users = np.asarray(users, np.int64)
        n_rows, n_items = histories.shape
        known = self.known(users) & (self.recent.shape[0] > 0)
        if known.any():
            known[known] = np.diff(self.recent.indptr)[users[known]] > 0
        k = np.flatnonzero(known)
        rec = sp.csr_matrix(self.recent[users[k]], dtype=np.float32)
        rec.resize((len(k), n_items))  # items added since the tables were built have no recency
        place = sp.csr_matrix((np.ones(len(k), np.float32), (k, np.arange(len(k)))), shape=(n_rows, len(k)))
        rest = sp.diags((~known).astype(np.float32)) @ sp.csr_matrix(histories)
        out = sp.csr_matrix(place @ rec + rest, dtype=np.float32)
        out.data[:] = 1.0
        out.eliminate_zeros()
        return out


def content_vectors(catalogue: pl.DataFrame | None, n_items: int) -> sp.csr_matrix:
    """[n_items, tokens] the catalogue's TF-IDF rows (`ItemFeatures.content`)."""
    return tfidf_vectors(catalogue_rows(catalogue, n_items))


def recent_items(rows: np.ndarray, cols: np.ndarray, order: np.ndarray, n_rows: int, n_cols: int,
                 k: int = SESSION_ITEMS) -> sp.csr_matrix:
    """[n_rows, n_cols] each row's k newest distinct columns, valued 1 (the newest) to k, where `order`
    ranks the events (larger is newer; NaN: unknown, left out)."""
    rows, cols, order = np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(order, np.float64)
    ok = np.isfinite(order)
    rows, cols, order = rows[ok], cols[ok], order[ok]
    o = np.lexsort((-order, cols, rows))  # each pair's newest event first
    r, c, t = rows[o], cols[o], order[o]
    first = np.ones(len(r), bool)
    first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    r, c, t = r[first], c[first], t[first]
    o = np.lexsort((-t, r))  # each row's pairs, newest first
    r, c = r[o], c[o]
    pos = np.arange(len(r)) - np.searchsorted(r, r, side="left")
    keep = pos < k
    out = sp.csr_matrix(((pos[keep] + 1).astype(np.float32), (r[keep], c[keep])), shape=(n_rows, n_cols))
    out.sort_indices()
    return out


def _gather(m: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """m[rows[k], cols[k]] for all k, vectorised (zeros where absent).

    Pairs from a few rows (one request's candidates) are looked up by binary search in those rows'
    sorted column indices, without scipy's general fancy indexing, which costs far more per call.
    """
    if m.nnz == 0 or len(rows) == 0:
        return np.zeros(len(rows), np.float32)
    if m.has_sorted_indices:
        first = int(rows[0])
        if (rows == first).all():
            lo, hi = m.indptr[first], m.indptr[first + 1]
            out = np.zeros(len(rows), np.float32)
            if hi > lo:
                idx = m.indices[lo:hi]
                pos = np.minimum(np.searchsorted(idx, cols), hi - lo - 1)
                hit = idx[pos] == cols
                out[hit] = m.data[lo:hi][pos[hit]]
            return out
    return np.asarray(m[rows, cols], np.float32).ravel()


def _affinity(h: sp.csr_matrix, codes: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """For each pair (row, item): the history weight of `row` on items sharing the item's code
    (category or brand); codes < 0 are unknown and get 0."""
    out = np.zeros(len(rows), np.float32)
    hist_codes = codes[h.indices]
    ok = hist_codes >= 0
    if not ok.any():
        return out
    n_codes = int(codes.max()) + 1
    hist_rows = np.repeat(np.arange(h.shape[0], dtype=np.int64), np.diff(h.indptr))
    keys, inv = np.unique(hist_rows[ok] * n_codes + hist_codes[ok], return_inverse=True)
    sums = np.bincount(inv, weights=h.data[ok], minlength=len(keys))
    c = codes[items]
    want = np.where(c >= 0, rows * n_codes + c, -1)
    pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    hit = (keys[pos] == want) & (c >= 0)
    out[hit] = sums[pos[hit]]
    return out


def _gather_product(a: sp.csr_matrix, b: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray,
                    budget: float = 2.0e7) -> np.ndarray:
    """(a @ b)[rows[k], cols[k]] for all k, the product formed a block of a's rows at a time so that
    no block holds more than about `budget` products."""
    out = np.zeros(len(rows), np.float32)
    if a.nnz == 0 or b.nnz == 0 or len(rows) == 0:
        return out
    a = sp.csr_matrix(a)
    a_bin = a.copy()
    a_bin.data[:] = 1.0
    work = a_bin @ np.diff(sp.csr_matrix(b).indptr).astype(np.float64)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    for sl in row_blocks(work, budget):
        lo, hi = np.searchsorted(sorted_rows, [sl.start, sl.stop])
        if hi == lo:
            continue
        sel = order[lo:hi]
        block = sp.csr_matrix(a[sl] @ b)
        block.sort_indices()
        out[sel] = _gather(block, rows[sel] - sl.start, cols[sel])
    return out


def _row(m: sp.csr_matrix, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of row r of a CSR matrix (views, no copy); empty past the last row."""
    if not 0 <= r < m.shape[0]:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    lo, hi = m.indptr[r], m.indptr[r + 1]
    return m.indices[lo:hi], m.data[lo:hi]


def _lookup(indices: np.ndarray, values: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """values at `cols` of one sorted sparse row (zeros where absent)."""
    out = np.zeros(len(cols), np.float32)
    if len(indices):
        pos = np.minimum(np.searchsorted(indices, cols), len(indices) - 1)
        hit = indices[pos] == cols
        out[hit] = values[pos[hit]]
    return out


def _session_cooc_one(session: np.ndarray, item_sim: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
    """`_session_cooc` for one row whose session items are `session` (the serving path)."""
    session = session[session < item_sim.shape[0]]
    if not len(session):
        return np.full(len(items), np.nan, np.float32)
    if not item_sim.has_sorted_indices:  # a copy: the generator's matrix is shared by serving threads
        item_sim = item_sim.sorted_indices()
    total = np.zeros(len(items), np.float32)
    for s in session.tolist():
        total += _lookup(*_row(item_sim, s), items)
    return total / len(session)


def _content_similarity_one(h: sp.csr_matrix, content: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
    """`_content_similarity` for one history row (the serving path): the profile as a dense token vector,
    each candidate's dot product summed over its own tokens."""
    n = content.shape[0]
    hist, w = _row(h, 0)
    keep = hist < n
    profile = np.zeros(content.shape[1], np.float64)
    pos, owner = _row_ranges(content.indptr, hist[keep])
    np.add.at(profile, content.indices[pos], content.data[pos] * np.asarray(w, np.float64)[keep][owner])
    norm = np.sqrt(profile @ profile)
    out = np.full(len(items), np.nan, np.float32)
    inside = np.flatnonzero(items < n)
    has = inside[np.diff(content.indptr)[items[inside]] > 0]
    if norm == 0 or not len(has):
        return out
    pos, owner = _row_ranges(content.indptr, items[has])
    dots = np.bincount(owner, weights=content.data[pos] * profile[content.indices[pos]], minlength=len(has))
    out[has] = dots / norm
    return out


def _row_ranges(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the stored entries of `rows` (in that order) and, for each, which of `rows` owns it."""
    starts, lens = indptr[rows].astype(np.int64), (indptr[rows + 1] - indptr[rows]).astype(np.int64)
    owner = np.repeat(np.arange(len(rows)), lens)
    first = np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(rows) else np.empty(0, np.int64)
    pos = np.arange(int(lens.sum())) - np.repeat(first - starts, lens)
    return pos, owner


def _session_cooc(sessions: sp.csr_matrix, item_sim: sp.csr_matrix, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Mean item-item similarity between each pair's item and its row's session items."""
    n = min(sessions.shape[1], item_sim.shape[0])
    s = sp.csr_matrix(sessions if sessions.shape[1] == n else sessions[:, :n])
    sim = sp.csr_matrix(item_sim if item_sim.shape[0] == n else item_sim[:n])  # no copy when they agree
    size = np.diff(s.indptr).astype(np.float32)
    inside = items < sim.shape[1]
    out = np.zeros(len(rows), np.float32)
    out[inside] = _gather_product(s, sim, rows[inside], items[inside])
    return np.where(size[rows] > 0, out / np.maximum(size[rows], 1.0), np.nan).astype(np.float32)


def _content_similarity(h: sp.csr_matrix, content: sp.csr_matrix, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Cosine between each pair's item content vector and its row's profile (the history-weighted sum
    of the history's content vectors); missing (NaN) where either has no content."""
    n = min(h.shape[1], content.shape[0])
    v = sp.csr_matrix(content if content.shape[0] == n else content[:n])  # no copy when they agree
    profile = sp.csr_matrix((h if h.shape[1] == n else h[:, :n]) @ v, dtype=np.float32)
    norms = np.sqrt(np.asarray(profile.multiply(profile).sum(axis=1), np.float64).ravel())
    profile = sp.csr_matrix(sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ profile)
    has_item = np.zeros(len(items), bool)
    inside = items < n
    has_item[inside] = np.diff(v.indptr)[items[inside]] > 0
    ok = has_item & (norms[rows] > 0)
    out = np.full(len(rows), np.nan, np.float32)
    out[ok] = _gather_product(profile, sp.csr_matrix(v.T), rows[ok], items[ok])
    return out


def pair_features(users: np.ndarray, histories: sp.csr_matrix, rows: np.ndarray, items: np.ndarray,
                  item_f: ItemFeatures, user_f: UserFeatures, out: np.ndarray | None = None,
                  item_sim: sp.csr_matrix | None = None, sessions: sp.csr_matrix | None = None) -> np.ndarray:
    """[n_pairs, len(PAIR_FEATURES)] for candidate pairs (batch row, item index), written into `out`
    (float32, e.g. a slice of the ranker's feature matrix) when given.

    `users[r]` is the user index of batch row r (-1 unknown), `histories[r]` its weighted history row.
    `item_sim` is an item x item co-occurrence similarity (row: a session item, column: a candidate) for
    ui_session_cooc, missing without one; `sessions` marks each row's current-session items (default:
    `UserFeatures.sessions`, from the user's most recent items).
    """
    n_pairs = len(rows)
    if out is None:
        out = np.zeros((n_pairs, len(PAIR_FEATURES)), np.float32)
    else:
        out[:] = 0.0
    h = sp.csr_matrix(histories)
    out[:, 0] = _gather(h, rows, items)
    u = np.asarray(users, np.int64)[rows]
    known = user_f.known(u)
    if known.any():
        ku, ki = u[known], items[known]
        out[known, 1] = _gather(user_f.views, ku, ki)
        out[known, 2] = _gather(user_f.favs, ku, ki)
        out[known, 3] = _gather(user_f.carts, ku, ki)
        out[known, 4] = _gather(user_f.buys, ku, ki)
        out[known, 5] = _gather(user_f.last_seen, ku, ki)
    # category and brand affinity: the share of the history's weight in the candidate's category/brand
    n_items = h.shape[1]
    total = np.asarray(h.sum(axis=1)).ravel()
    total = np.where(total > 0, total, 1.0)
    for col, codes in ((6, item_f.category), (7, item_f.brand)):
        codes = np.asarray(codes[:n_items], np.int64)
        if len(codes) < n_items:  # items without a catalogue row have no code
            codes = np.concatenate([codes, np.full(n_items - len(codes), -1, np.int64)])
        out[:, col] = _affinity(h, codes, rows, items) / total[rows]
    median = USER_FEATURES.index("user_price_median")
    band = np.full(n_pairs, -1.0, np.float32)  # unknown users have no band (as UserFeatures.rows)
    band[known] = user_f.values[u[known], median]
    price = item_f.price[items]
    out[:, 8] = np.where((band > 0) & ~np.isnan(price), price / np.maximum(band, 1e-6), -1.0)
    out[:, 9] = np.log1p(np.diff(h.indptr))[rows]
    one = h.shape[0] == 1  # one request: numpy over the few rows involved, no sparse products
    if item_sim is None:
        out[:, 10] = np.nan
    elif one:
        sess = user_f.session_items(int(u[0]) if len(u) else -1, h) if sessions is None else \
            _row(sp.csr_matrix(sessions), 0)[0]
        out[:, 10] = _session_cooc_one(sess, item_sim, items)
    else:
        sess_m = user_f.sessions(users, h) if sessions is None else sp.csr_matrix(sessions)
        out[:, 10] = _session_cooc(sess_m, item_sim, rows, items)
    content = item_f.content
    if content.shape[1] == 0:
        out[:, 11] = np.nan
    elif one:
        out[:, 11] = _content_similarity_one(h, content, items)
    else:
        out[:, 11] = _content_similarity(h, content, rows, items)
    return out
