"""Top-n by inner product over item vectors with faiss: exact below a size threshold, HNSW above.

Shared by the content generator (unit text/image vectors) and the factor models (ALS/BPR item factors,
searched for one query at a time online). An HNSW graph takes seconds to build and its build is not
reproducible, so a fitted model keeps it serialised with its state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["HnswParams", "VectorIndex"]


@dataclass(frozen=True)
class HnswParams:
    #: vectors from which HNSW replaces the exact search
    threshold: int = 50_000
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128


class VectorIndex:
    """Searches `vectors[rows]` (rows: the items that have a vector); results are item indices."""

    def __init__(self, index: Any, rows: np.ndarray, params: HnswParams) -> None:
        self._index = index
        self.rows = rows
        self.params = params

    @classmethod
    def build(cls, vectors: np.ndarray, rows: np.ndarray, params: HnswParams,
              serialized: np.ndarray | None = None) -> "VectorIndex | None":
        """The index of `vectors[rows]` (None when there are no rows); from `serialized` when given."""
        import faiss

        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return None
        if serialized is not None and len(serialized):
            index = faiss.deserialize_index(np.ascontiguousarray(serialized, np.uint8))
        else:
            x = np.ascontiguousarray(vectors[rows], np.float32)
            if len(x) >= params.threshold:
                index = faiss.IndexHNSWFlat(x.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = params.ef_construction
            else:
                index = faiss.IndexFlatIP(x.shape[1])
            index.add(x)
        return cls(index, rows, params)

    @property
    def uses_hnsw(self) -> bool:
        return hasattr(self._index, "hnsw")

    def serialize(self) -> np.ndarray | None:
        """The HNSW graph as bytes to keep with a model's state (None for an exact index: rebuilt at once)."""
        if not self.uses_hnsw:
            return None
        import faiss

        return faiss.serialize_index(self._index)

    def search(self, vector: np.ndarray, n: int, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-n item indices and inner products for one query vector, the items in `drop` left out."""
        k = min(len(self.rows), n + len(drop))
        if k <= 0 or n <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if self.uses_hnsw:
            self._index.hnsw.efSearch = max(self.params.ef_search, k)
        vals, pos = self._index.search(np.ascontiguousarray(vector[None, :], np.float32), k)
        ok = pos[0] >= 0
        items = self.rows[pos[0][ok]]
        vals = vals[0][ok].astype(np.float32)
        if len(drop):  # a set: np.isin sorts both sides, 30 us for a few hundred items
            dropped = set(drop.tolist())
            keep = np.fromiter((i not in dropped for i in items.tolist()), bool, len(items))
            items, vals = items[keep], vals[keep]
        return items[:n], vals[:n]
