"""EASE: the closed-form shallow auto-encoder of Steck (WWW 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from fusionrec.candidates._similarity import row_blocks, training_matrix
from fusionrec.candidates.base import CandidateGenerator
from fusionrec.candidates.popularity import apply_fallback, popularity_fallback
from fusionrec.data.interactions import Interactions

__all__ = ["EASE"]


class EASE(CandidateGenerator):
    """B = argmin |X - XB|^2 + l2 |B|^2 with diag(B) = 0: P = (X'X + l2 I)^-1, B = -P / diag(P).

    The inverse costs about N^3 FLOPs and 4 N^2 bytes per copy for N items, so catalogues above
    `max_items` are cut to the N most popular items (`n_kept_` after fit): the rest score -inf (EASE
    cannot reach them) and history items outside the cut carry no signal. score = history row @ B.
    """

    name: ClassVar[str] = "ease"

    @dataclass(frozen=True)
    class Config:
        #: L2 regularisation added to the Gram matrix's diagonal
        l2: float = 500.0
        #: most items modelled; above it only the most popular items (by distinct users) are kept.
        #: 20,000 items take about 1.6 GB per float32 matrix and a minute on 2 cores
        max_items: int = 20_000
        #: precision of the Gram matrix and its inverse: "float32" (half the memory, twice the
        #: speed; ample for l2 >= 1) or "float64"; B is stored as float32 either way
        dtype: str = "float32"
        #: time decay of events (None: the data's weighting as it is)
        half_life_days: float | None = None

        def __post_init__(self) -> None:
            if not self.l2 > 0:
                raise ValueError(f"l2 must be positive, got {self.l2}")
            if self.max_items < 1:
                raise ValueError(f"max_items must be at least 1, got {self.max_items}")
            if self.dtype not in ("float32", "float64"):
                raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    kept_: np.ndarray  # int64 [N]: the modelled items, ascending
    b_: np.ndarray  # float32 [N, N], zero diagonal
    fallback_: np.ndarray  # float32 [n_items]

    def __init__(self, cfg: "EASE.Config | None" = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()

    @property
    def n_kept_(self) -> int:
        """How many items the model covers (N); the params to report next to any EASE result."""
        return len(self.kept_)

    def _fit(self, data: Interactions) -> None:
        c = self.cfg
        x = sp.csr_matrix(training_matrix(data, c.half_life_days), dtype=np.float32)
        users_per_item = x.getnnz(axis=0)
        if data.n_items > c.max_items:
            # most popular first, ties to the lower index so the cut is deterministic
            order = np.lexsort((np.arange(data.n_items), -users_per_item))
            kept = np.sort(order[: c.max_items])
        else:
            kept = np.arange(data.n_items)
        self.kept_ = kept.astype(np.int64)
        self.b_ = self._solve(sp.csr_matrix(x[:, kept]), np.dtype(c.dtype), c.l2)
        self.fallback_ = popularity_fallback(data)

    @staticmethod
    def _solve(x: sp.csr_matrix, dtype: np.dtype, l2: float) -> np.ndarray:
        n = x.shape[1]
        xt = x.T.tocsr()
        gram = np.empty((n, n), dtype=dtype)
        # dense Gram matrix in row blocks: never materialise the (much larger) sparse product
        rows_work = np.full(n, float(n))
        for sl in row_blocks(rows_work, 2.0e7):
            gram[sl] = (xt[sl] @ x).toarray()
        gram[np.diag_indices(n)] += l2
        # LAPACK works in place on Fortran order only; the Gram matrix is symmetric, so its transpose
        # view is the same matrix in Fortran order and no N x N copy is made
        potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (gram,))
        chol, info = potrf(gram.T, lower=False, overwrite_a=True, clean=False)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE: Gram matrix + l2 I is not positive definite (potrf info={info})")
        del gram
        p, info = potri(chol, lower=False, overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE: inverse failed (potri info={info})")
        del chol
        # potri fills the upper triangle only: mirror it a block at a time (no N x N temporaries)
        step = max(1, int(2.0e7 // max(n, 1)))
        for start in range(0, n, step):
            stop = min(start + step, n)
            blk = p[start:stop, start:stop]
            p[start:stop, start:stop] = np.triu(blk) + np.triu(blk, 1).T
            p[stop:, start:stop] = p[start:stop, stop:].T
        p = p.T  # symmetric: the C-order view of the same memory
        diag = np.diag(p).copy()
        p /= -diag[None, :]
        np.fill_diagonal(p, 0.0)
        return np.ascontiguousarray(p, dtype=np.float32)

    def score(self, users: np.ndarray, histories: sp.csr_matrix | None) -> np.ndarray:
        h = self._histories(histories, len(users))
        hk = h[:, self.kept_] if len(self.kept_) < self.n_items_ else h
        s = np.full((len(users), self.n_items_), -np.inf, np.float32)
        s[:, self.kept_] = np.asarray(hk @ self.b_, np.float32)
        return apply_fallback(s, np.diff(hk.indptr) == 0, self.fallback_)

    def _state(self) -> dict[str, Any]:
        return {"kept": self.kept_, "b": self.b_, "fallback": self.fallback_}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        self.kept_ = np.asarray(arrays["kept"], np.int64)
        self.b_ = np.ascontiguousarray(arrays["b"], np.float32)
        self.fallback_ = np.asarray(arrays["fallback"], np.float32)
