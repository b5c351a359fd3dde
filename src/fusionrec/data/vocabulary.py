"""Raw ids at the edges, integer indices inside."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Vocabulary"]

_CHUNK = 50_000


class Vocabulary:
    """A bijection between string ids and 0..n-1 indices, in first-seen order."""

    __slots__ = ("_ids", "_index")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self.extend(ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._ids == other._ids

    def extend(self, ids: Iterable[str]) -> None:
        for raw in ids:
            key = str(raw)
            if key not in self._index:
                self._index[key] = len(self._ids)
                self._ids.append(key)

    def index(self, key: str, default: int = -1) -> int:
        return self._index.get(str(key), default)

    def indices(self, keys: Sequence[str] | np.ndarray, default: int = -1) -> np.ndarray:
        """Indices of many ids (int64); unknown ids get `default`."""
        get = self._index.get
        return np.fromiter((get(str(k), default) for k in keys), dtype=np.int64, count=len(keys))

    def id(self, index: int) -> str:
        return self._ids[int(index)]

    def ids(self, indices: Sequence[int] | np.ndarray | None = None) -> list[str]:
        if indices is None:
            return list(self._ids)
        ids = self._ids
        return [ids[int(i)] for i in indices]

    def to_array(self) -> np.ndarray:
        return np.asarray(self._ids, dtype=object)

    def save(self, path: Path) -> None:
        """One id per line, UTF-8; ids never contain a newline (validation rejects them)."""
        Path(path).write_text("\n".join(self._ids) + ("\n" if self._ids else ""), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, shared: dict[str, "Vocabulary"] | None = None) -> "Vocabulary":
        """The vocabulary saved at `path`. With `shared` (file text -> vocabulary, filled as it goes), a
        file whose text was loaded before returns that same object: a pipeline's generators each save
        the users and items they were fitted on, mostly the pipeline's own, and a server loading a new
        version built a million-user index six times over. Loaded vocabularies are not extended."""
        text = Path(path).read_text(encoding="utf-8")
        if shared is not None and text in shared:
            return shared[text]
        ids = text.split("\n")[:-1] if text else []
        voc = cls()
        # a saved vocabulary holds each id once: its index is built in C, not by extend's Python loop
        # (a million users took 0.3 s a copy), in chunks: one C call over them all would hold the GIL
        # from the requests of a server that loads a new version beside them
        index: dict[str, int] = {}
        for start in range(0, len(ids), _CHUNK):  # each chunk ~5 ms in C: the GIL passes between them
            index.update(zip(ids[start:start + _CHUNK], range(start, min(start + _CHUNK, len(ids)))))
        if len(index) == len(ids):
            voc._ids, voc._index = ids, index
        else:  # a hand-edited file with a repeated id: the first one counts
            voc.extend(ids)
        if shared is not None:
            shared[text] = voc
        return voc
