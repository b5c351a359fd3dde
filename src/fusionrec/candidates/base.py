"""The candidate-generator protocol and the batched top-n machinery every generator shares."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import scipy.sparse as sp

from fusionrec.data.interactions import Interactions
from fusionrec.data.vocabulary import Vocabulary

__all__ = ["ScoredItems", "Query", "CandidateGenerator", "top_n", "mask_excluded", "iter_batches", "save_arrays", "load_arrays"]


@dataclass(frozen=True)
class ScoredItems:
    """Item indices with scores, best first."""

    items: np.ndarray  # int64 item indices
    scores: np.ndarray  # float32, same length, descending

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def empty(cls) -> "ScoredItems":
        return cls(np.empty(0, np.int64), np.empty(0, np.float32))


@dataclass
class Query:
    """Who is asking: a known user index (or -1) and/or a history of item indices, oldest first.

    `history_weights` parallels `history` (behaviour weight x decay); `exclude` items are never returned.
    """

    user: int = -1
    history: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    history_weights: np.ndarray | None = None
    exclude: np.ndarray | None = None

    def history_row(self, n_items: int) -> sp.csr_matrix:
        w = self.history_weights if self.history_weights is not None else np.ones(len(self.history), np.float32)
        row = sp.csr_matrix((np.asarray(w, np.float32), (np.zeros(len(self.history), np.int64), self.history)),
                            shape=(1, n_items))
        row.sum_duplicates()
        return row

    def session_row(self, n_items: int, k: int) -> sp.csr_matrix | None:
        """[1, n_items] indicator of the history's k most recent distinct items (its current session), or
        None without a history."""
        if not len(self.history):
            return None
        recent: list[int] = []
        for item in reversed(np.asarray(self.history, np.int64).tolist()):
            if 0 <= item < n_items and item not in recent:
                recent.append(item)
                if len(recent) == k:
                    break
        return sp.csr_matrix((np.ones(len(recent), np.float32), (np.zeros(len(recent), np.int64), recent)),
                             shape=(1, n_items))

    def exclude_row(self, n_items: int) -> sp.csr_matrix | None:
        """[1, n_items] indicator of the excluded items, or None when nothing is excluded."""
        if self.exclude is None or not len(self.exclude):
            return None
        ex = np.asarray(self.exclude, np.int64)
        ex = ex[(ex >= 0) & (ex < n_items)]
        return sp.csr_matrix((np.ones(len(ex), np.float32), (np.zeros(len(ex), np.int64), ex)), shape=(1, n_items))


def mask_excluded(scores: np.ndarray, exclude: sp.spmatrix) -> None:
    """Set the excluded entries of a dense [B, I] block to -inf (columns past I, items added to the
    vocabulary after fit, are ignored)."""
    ex = exclude if isinstance(exclude, sp.coo_matrix) else exclude.tocoo()
    inside = ex.col < scores.shape[1]
    scores[ex.row[inside], ex.col[inside]] = -np.inf


def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-n of a dense [B, I] score block: (indices, scores), best first. -inf is never chosen."""
    b, i = scores.shape
    n = min(n, i)
    if n <= 0:
        return np.empty((b, 0), np.int64), np.empty((b, 0), np.float32)
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n] if n < i else np.tile(np.arange(i), (b, 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(vals, order, axis=1).astype(np.float32)
    return idx, vals


def save_arrays(path: Path, arrays: dict[str, Any]) -> None:
    """Dense arrays and sparse matrices in one plain npz (sparse as KEY.data/.indices/.indptr/.shape)."""
    flat: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if sp.issparse(value):
            csr = sp.csr_matrix(value)
            flat[f"{key}.data"], flat[f"{key}.indices"], flat[f"{key}.indptr"] = csr.data, csr.indices, csr.indptr
            flat[f"{key}.shape"] = np.asarray(csr.shape, np.int64)
        else:
            flat[key] = np.asarray(value)
    np.savez(path, **flat)


def load_arrays(path: Path) -> dict[str, Any]:
    """The inverse of `save_arrays`, without unpickling."""
    with np.load(path, allow_pickle=False) as z:
        raw = {k: z[k] for k in z.files}
    arrays: dict[str, Any] = {}
    for key in {k.rsplit(".", 1)[0] for k in raw if k.endswith(".indptr")}:
        arrays[key] = sp.csr_matrix((raw[f"{key}.data"], raw[f"{key}.indices"], raw[f"{key}.indptr"]),
                                    shape=tuple(raw[f"{key}.shape"]))
    arrays.update({k: v for k, v in raw.items() if k.rsplit(".", 1)[0] not in arrays})
    return arrays


def iter_batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class CandidateGenerator(ABC):
    """fit(data) -> self; score(users, histories) -> dense scores; candidates(query, n) -> ScoredItems.

    Constructors store configuration only; `fit` sets the learned state (attributes ending in `_`).
    Subclasses implement `_fit`, `score`, and `_state`/`_load_state` for save/load in npz + JSON.
    """

    name: ClassVar[str] = "base"
    #: scores depend only on the history row (so live events change the answer at once)
    history_based: ClassVar[bool] = True

    n_items_: int
    n_users_: int
    items_: Vocabulary
    users_: Vocabulary

    def config(self) -> dict[str, Any]:
        cfg = getattr(self, "cfg", None)
        return asdict(cfg) if cfg is not None else {}

    # -- learning -----------------------------------------------------------------------------
    def fit(self, data: Interactions) -> "CandidateGenerator":
        self.n_items_ = data.n_items
        self.n_users_ = data.n_users
        # snapshots, not the live objects: a test set built on train's vocabularies extends them in
        # place, and the model's arrays (and its saved items.txt) must keep the sizes it was fitted on
        self.items_ = Vocabulary(data.items.ids())
        self.users_ = Vocabulary(data.users.ids())
        self._fit(data)
        return self

    @abstractmethod
    def _fit(self, data: Interactions) -> None: ...

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "n_items_")

    # -- scoring ------------------------------------------------------------------------------
    def _histories(self, histories: sp.spmatrix | None, n_rows: int) -> sp.csr_matrix:
        """History rows as CSR [n_rows, n_items_] float32: None is all empty; columns of items
        added to the vocabulary after fit are dropped (the model knows nothing about them)."""
        if histories is None:
            return sp.csr_matrix((n_rows, self.n_items_), dtype=np.float32)
        h = sp.csr_matrix(histories, dtype=np.float32)
        if h.shape[1] > self.n_items_:
            h = h[:, : self.n_items_]
        elif h.shape[1] < self.n_items_:
            h = sp.csr_matrix((h.data, h.indices, h.indptr), shape=(h.shape[0], self.n_items_))
        return h

    def _known_users(self, users: np.ndarray) -> np.ndarray:
        """Mask of user indices the model was fitted on (-1 and users added later are unknown)."""
        u = np.asarray(users, np.int64)
        return (u >= 0) & (u < getattr(self, "n_users_", 0))

    @abstractmethod
    def score(self, users: np.ndarray, histories: sp.csr_matrix | None) -> np.ndarray:
        """Dense [B, n_items] float32 scores for users (indices, -1 = unknown) with history rows [B, n_items].

        Implementations pass `histories` through `_histories` (None = empty rows) and never raise for an
        unknown user or an empty history: they fall back to popularity-like scores or zeros.
        """

    def recommend(self, users: np.ndarray, histories: sp.csr_matrix | None, n: int,
                  exclude: sp.csr_matrix | None = None, batch_size: int = 1024,
                  live: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-n item indices and scores for many users at once; `exclude` rows mark items to skip.
        `live=True` (models whose `score` takes it) re-solves known users from their current history."""
        users = np.asarray(users, np.int64)
        if len(users) == 1 and histories is not None and histories.nnz and not live:
            sparse = self.sparse_scores(histories)
            if sparse is not None:
                found = self._top_n_sparse(sparse, n, exclude)
                if found is not None:
                    return found
                # fewer than n items reachable: the dense row is the sparse one with zeros elsewhere
                s = np.asarray(sparse.toarray(), np.float32)
                if exclude is not None:
                    mask_excluded(s, exclude)
                return top_n(s, n)
        out_i = np.empty((len(users), min(n, self.n_items_)), np.int64)
        out_s = np.empty(out_i.shape, np.float32)
        whole = len(users) <= batch_size  # one batch (the online path): no row slicing at all
        for sl in iter_batches(len(users), batch_size):
            h = histories if whole or histories is None else histories[sl]
            scores = self.score(users[sl], h, live=True) if live else self.score(users[sl], h)  # type: ignore[call-arg]
            s = np.asarray(scores, dtype=np.float32)
            if exclude is not None:
                mask_excluded(s, exclude if whole else exclude[sl])
            out_i[sl], out_s[sl] = top_n(s, n)
        return out_i, out_s

    def sparse_scores(self, histories: sp.csr_matrix) -> sp.csr_matrix | None:
        """Scores of non-empty histories as sparse rows where every absent item scores 0 and none scores
        below 0, equal to `score` densified (item-to-item models), or None where scores are dense. Lets
        one query skip the dense [1, n_items] block."""
        return None

    def _top_n_sparse(self, s: sp.csr_matrix, n: int,
                      exclude: sp.spmatrix | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The dense top-n of one row from its sparse scores `s` when at least n items score above 0
        (then no zero-score item can be among the top n: the same items, ties aside); else None."""
        n = min(n, self.n_items_)
        cols, vals = s.indices, s.data
        keep = vals > 0
        if exclude is not None and exclude.nnz:
            blocked = np.zeros(max(self.n_items_, s.shape[1]), bool)  # a mask: np.isin sorts both sides
            ex = exclude.tocoo().col
            blocked[ex[ex < len(blocked)]] = True
            keep &= ~blocked[cols]
        if n <= 0 or int(keep.sum()) < n:
            return None
        cols, vals = cols[keep], vals[keep]
        part = np.argpartition(-vals, n - 1)[:n] if n < len(vals) else np.arange(len(vals))
        order = part[np.argsort(-vals[part], kind="stable")]
        return cols[order].astype(np.int64)[None, :], vals[order].astype(np.float32)[None, :]

    def candidates(self, query: Query, n: int) -> ScoredItems:
        """Top-n for one query; excluded and -inf items are dropped, so fewer than n may come back."""
        h = np.asarray(query.history, np.int64)
        known = (h >= 0) & (h < self.n_items_)  # items the model has never seen carry no signal
        if not known.all():
            w = query.history_weights
            query = Query(query.user, h[known], None if w is None else np.asarray(w)[known], query.exclude)
        hist = query.history_row(self.n_items_)
        s = np.asarray(self.score(np.asarray([query.user], np.int64), hist), dtype=np.float32)
        if query.exclude is not None and len(query.exclude):
            ex = np.asarray(query.exclude, np.int64)
            s[0, ex[(ex >= 0) & (ex < self.n_items_)]] = -np.inf
        idx, vals = top_n(s, n)
        keep = np.isfinite(vals[0])
        return ScoredItems(idx[0][keep], vals[0][keep])

    # -- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray | sp.spmatrix]:
        return {}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        pass

    def save(self, folder: Path) -> None:
        """Plain files: config.json, items.txt, users.txt and arrays in state.npz (sparse as parts)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"name": self.name, "config": self.config()}, indent=1))
        self.items_.save(folder / "items.txt")
        self.users_.save(folder / "users.txt")
        save_arrays(folder / "state.npz", self._state())

    @classmethod
    def load(cls, folder: Path, vocabularies: dict[str, Vocabulary] | None = None) -> "CandidateGenerator":
        """A saved generator; `vocabularies`: see Vocabulary.load's `shared`."""
        folder = Path(folder)
        meta = json.loads((folder / "config.json").read_text())
        obj = cls.from_config(meta["config"])
        obj.items_ = Vocabulary.load(folder / "items.txt", vocabularies)
        obj.users_ = Vocabulary.load(folder / "users.txt", vocabularies)
        obj.n_items_ = len(obj.items_)
        obj.n_users_ = len(obj.users_)
        obj._load_state(load_arrays(folder / "state.npz"))
        return obj

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CandidateGenerator":
        cfg_type = getattr(cls, "Config", None)
        return cls(cfg_type(**config)) if cfg_type is not None else cls()  # type: ignore[call-arg]
