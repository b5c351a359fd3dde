"""Session co-visitation: items seen close together in the same session ("customers also viewed")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec import schema as S
from fusionrec.candidates._similarity import ItemItemScoring, similar_from_row, top_k_per_row
from fusionrec.candidates.base import CandidateGenerator, ScoredItems
from fusionrec.candidates.popularity import popularity_fallback
from fusionrec.data.interactions import ITEM_IDX, TIME, USER_IDX, Interactions

__all__ = ["SessionCoVisitation"]


class SessionCoVisitation(ItemItemScoring, CandidateGenerator):
    """Co-occurrence within sessions, each pair weighted by 1 / its distance in the session.

    Sessions are the events' session column when the data has one, else each user's events (sorted
    by time, then source order) split where two events are more than `session_gap_minutes` apart;
    data without timestamps makes one session per user. Repeats of an item in a row count once.
    """

    name: ClassVar[str] = "covisit"

    @dataclass(frozen=True)
    class Config:
        #: co-visited items kept per item
        k: int = 100
        #: a silence longer than this starts a new session
        session_gap_minutes: float = 30.0
        #: pairs further apart than this many positions within a session are ignored
        window: int = 10
        #: divide by sqrt(sessions_i x sessions_j) so that best-sellers do not top every list
        normalize: bool = False

        def __post_init__(self) -> None:
            if self.k < 1 or self.window < 1:
                raise ValueError(f"k and window must be at least 1, got k={self.k}, window={self.window}")
            if not self.session_gap_minutes > 0:
                raise ValueError(f"session_gap_minutes must be positive, got {self.session_gap_minutes}")

    sim_: sp.csr_matrix  # float32 [n_items, n_items]
    fallback_: np.ndarray  # float32 [n_items]

    def __init__(self, cfg: "SessionCoVisitation.Config | None" = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()

    def _sessions(self, data: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """Item and session number per event, in session order, repeats in a row collapsed."""
        ev = data.events
        items = ev[ITEM_IDX].to_numpy()
        users = ev[USER_IDX].to_numpy()
        if len(items) == 0:
            return items, items
        start = np.ones(len(items), bool)
        start[1:] = users[1:] != users[:-1]
        if S.SESSION_ID in ev.columns:
            sid = ev[S.SESSION_ID].cast(pl.Utf8).fill_null("").to_numpy()
            start[1:] |= sid[1:] != sid[:-1]
        else:
            t = ev[TIME].to_numpy()
            with np.errstate(invalid="ignore"):
                start[1:] |= (t[1:] - t[:-1]) > self.cfg.session_gap_minutes * 60.0  # NaN: same session
        session = np.cumsum(start)
        keep = np.ones(len(items), bool)
        keep[1:] = (items[1:] != items[:-1]) | start[1:]
        return items[keep], session[keep]

    def _fit(self, data: Interactions) -> None:
        items, session = self._sessions(data)
        n = data.n_items
        co = sp.csr_matrix((n, n), dtype=np.float32)
        for d in range(1, self.cfg.window + 1):
            if len(items) <= d:
                break
            same = session[:-d] == session[d:]
            if not same.any():
                break  # no session is longer than d, so none is longer than d + 1 either
            a, b = items[:-d], items[d:]
            same &= a != b
            a, b = a[same], b[same]
            w = np.full(len(a), 1.0 / d, np.float32)
            part = sp.csr_matrix((np.concatenate([w, w]), (np.concatenate([a, b]), np.concatenate([b, a]))),
                                 shape=(n, n), dtype=np.float32)
            co = co + part
        if self.cfg.normalize:
            count = np.bincount(items, minlength=n).astype(np.float64)
            inv = 1.0 / np.sqrt(np.maximum(count, 1.0))
            co = sp.csr_matrix(sp.diags(inv) @ co @ sp.diags(inv), dtype=np.float32)
        self.sim_ = top_k_per_row(sp.csr_matrix(co, dtype=np.float32), self.cfg.k)
        self.fallback_ = popularity_fallback(data)

    def _item_matrix(self) -> sp.csr_matrix:
        return self.sim_

    def similar_items(self, item_idx: int, n: int) -> ScoredItems:
        """The n items most often viewed next to this one in a session ("also viewed")."""
        return similar_from_row(self.sim_, int(item_idx), n)

    def _state(self) -> dict[str, Any]:
        return {"sim": self.sim_, "fallback": self.fallback_}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        self.sim_ = sp.csr_matrix(arrays["sim"], dtype=np.float32)
        self.fallback_ = np.asarray(arrays["fallback"], np.float32)
