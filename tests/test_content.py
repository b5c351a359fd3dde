"""Content-based generators: TF-IDF and dense embeddings (MiniLM offline, shop-supplied vectors, faiss)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from fusionrec.candidates.base import Query
from fusionrec.candidates.content import (
    ContentEmbedding, ContentTfidf, embed_texts, item_sentence, item_tokens,
)
from fusionrec.data.interactions import Interactions
from fusionrec.errors import FormatError, FusionrecError

KNIVES = ["Chef knife", "Paring knife", "Bread knife", "Santoku knife", "Utility knife", "Carving knife"]
SHOES = ["Running shoes", "Trail running shoes", "Tennis shoes", "Hiking boots", "Walking shoes", "Sneakers"]
NEW_KNIFE = "new-knife"


def catalogue() -> pl.DataFrame:
    rows = []
    for i, t in enumerate(KNIVES):
        rows.append((f"k{i}", t, "Wusthof" if i % 2 else "Victorinox", "home/kitchen/knives",
                     json.dumps({"material": "stainless steel", "blade_cm": 10 + i}), f"A sharp {t.lower()} for the kitchen"))
    for i, t in enumerate(SHOES):
        rows.append((f"s{i}", t, "Nike" if i % 2 else "Salomon", "sport/footwear",
                     json.dumps({"size": [41, 42, 43], "waterproof": i % 2 == 0}), f"Comfortable {t.lower()} for sport"))
    rows.append((NEW_KNIFE, "Damascus chef knife", "Wusthof", "home/kitchen/knives",
                 json.dumps({"material": "damascus steel"}), "A sharp damascus steel chef knife for the kitchen"))
    return pl.DataFrame(rows, schema=["item_id", "title", "brand", "category", "attributes", "text"], orient="row")


def events() -> pl.DataFrame:
    """Cooks view knives, runners view shoes; nobody has touched the new knife."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(20):
        prefix, n = ("k", len(KNIVES)) if u % 2 == 0 else ("s", len(SHOES))
        for j in rng.choice(n, 3, replace=False):
            rows.append((f"u{u}", f"{prefix}{j}", "view" if u % 4 < 2 else "buy"))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "behavior"], orient="row")


@pytest.fixture(scope="module")
def data() -> Interactions:
    return Interactions.from_frame(events(), catalogue=catalogue())


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("embeddings"))


@pytest.fixture(scope="module")
def embedding(data: Interactions, cache_dir: str) -> ContentEmbedding:
    """The one MiniLM fit of this module (the encoder then stays loaded for the process)."""
    return ContentEmbedding(ContentEmbedding.Config(cache_dir=cache_dir)).fit(data)


@pytest.fixture(scope="module")
def tfidf(data: Interactions) -> ContentTfidf:
    return ContentTfidf().fit(data)


@pytest.fixture(params=["tfidf", "embedding"])
def model(request: pytest.FixtureRequest, tfidf: ContentTfidf, embedding: ContentEmbedding):
    return tfidf if request.param == "tfidf" else embedding


def is_knife(ids: list[str]) -> list[bool]:
    return [i.startswith("k") or i == NEW_KNIFE for i in ids]


# -- descriptions ---------------------------------------------------------------------------------
def test_item_tokens_cover_every_field() -> None:
    row = {"title": "Chef Knife", "brand": "Wusthof", "category": "home/kitchen/knives",
           "attributes": '{"material": "steel", "size": [20, 24], "care": {"dishwasher": false}}', "text": "Sharp"}
    toks = item_tokens(row)
    assert {"chef", "knife", "sharp", "brand:wusthof", "cat:home", "cat:home/kitchen", "cat:home/kitchen/knives",
            "attr:material=steel", "attr:size=20", "attr:size=24", "attr:care.dishwasher=false"} <= set(toks)
    assert "bad" in item_tokens({"attributes": "bad json {"})  # not JSON: its words still count
    assert item_sentence(row) == "Chef Knife. Wusthof. home/kitchen/knives. Sharp"
    assert item_sentence({"title": None, "text": "only text"}) == "only text"


# -- both generators --------------------------------------------------------------------------------
def test_new_item_is_recommended_to_similar_users(model, data: Interactions) -> None:
    new = data.items.index(NEW_KNIFE)
    assert data.matrix()[:, new].nnz == 0  # cold: no interactions at all
    x = data.matrix()
    cooks = np.arange(0, data.n_users, 2)
    # each cook has seen 3 of the 6 old knives: the 3 others and the new one must fill the top 4
    top, _ = model.recommend(cooks, x[cooks], 4, exclude=x[cooks])
    assert all(new in row for row in top), "the new knife is in every cook's top 4"
    assert all(is_knife(data.items.ids(top.ravel())))
    runners = np.arange(1, data.n_users, 2)
    top, _ = model.recommend(runners, x[runners], 3, exclude=x[runners])
    assert not any(is_knife(data.items.ids(top.ravel())))
    # an anonymous visitor who looked at one knife
    k0 = data.items.index("k0")
    got = model.candidates(Query(user=-1, history=np.array([k0]), exclude=np.array([k0])), 5)
    assert new in got.items and all(is_knife(data.items.ids(got.items)))


def test_similar_items_of_a_new_item(model, data: Interactions) -> None:
    new = data.items.index(NEW_KNIFE)
    sim = model.similar_items(new, 5)
    assert len(sim) == 5 and new not in sim.items
    assert all(is_knife(data.items.ids(sim.items)))
    assert np.all(np.diff(sim.scores) <= 0) and sim.scores.dtype == np.float32
    assert len(model.similar_items(10_000, 5)) == 0 and len(model.similar_items(-1, 5)) == 0


def test_unknown_and_empty_users_get_popularity(model, data: Interactions) -> None:
    users = np.array([-1, 0, data.n_users + 3])
    s = model.score(users, sp.csr_matrix((3, data.n_items), dtype=np.float32))
    assert s.shape == (3, data.n_items) and np.isfinite(s).all()
    np.testing.assert_array_equal(s[0], model.fallback_)
    assert len(model.candidates(Query(user=-1), 5)) == 5
    assert model.recommend(users, None, 4)[0].shape == (3, 4)
    # an item index the model never saw carries no signal and raises nothing
    assert len(model.candidates(Query(user=-1, history=np.array([10_000, 0])), 5)) == 5


def test_save_load_round_trip(model, data: Interactions, tmp_path) -> None:
    model.save(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.pkl"))
    loaded = type(model).load(tmp_path / "m")
    assert loaded.config() == model.config()
    x = data.matrix()
    np.testing.assert_array_equal(loaded.score(np.arange(data.n_users), x), model.score(np.arange(data.n_users), x))
    new = data.items.index(NEW_KNIFE)
    a, b = loaded.similar_items(new, 5), model.similar_items(new, 5)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_without_a_catalogue_both_fall_back_to_popularity() -> None:
    plain = Interactions.from_frame(events())
    for model in (ContentTfidf().fit(plain), ContentEmbedding(ContentEmbedding.Config(cache_dir=None)).fit(plain)):
        x = plain.matrix()
        s = model.score(np.arange(plain.n_users), x)
        np.testing.assert_array_equal(s, np.tile(model.fallback_, (plain.n_users, 1)))
        assert len(model.similar_items(0, 3)) == 0
        assert len(model.candidates(Query(user=0, history=x[0].indices), 3)) == 3


def test_same_data_same_scores(data: Interactions, tfidf: ContentTfidf, embedding: ContentEmbedding,
                               cache_dir: str) -> None:
    x = data.matrix()
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(ContentTfidf().fit(data).score(users, x), tfidf.score(users, x))
    again = ContentEmbedding(ContentEmbedding.Config(cache_dir=cache_dir)).fit(data)
    np.testing.assert_array_equal(again.score(users, x), embedding.score(users, x))


# -- TF-IDF -------------------------------------------------------------------------------------------
def test_tfidf_vectors_are_unit_rows(tfidf: ContentTfidf) -> None:
    norms = np.sqrt(np.asarray(tfidf.vectors_.multiply(tfidf.vectors_).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_tfidf_profile_follows_history_weights(data: Interactions, tfidf: ContentTfidf) -> None:
    k0, s0 = data.items.index("k0"), data.items.index("s0")
    row = sp.csr_matrix(([5.0, 1.0], ([0, 0], [k0, s0])), shape=(1, data.n_items))
    s = tfidf.score(np.array([-1]), row)[0]
    assert s[data.items.index(NEW_KNIFE)] > s[data.items.index("s1")]
    row = sp.csr_matrix(([1.0, 5.0], ([0, 0], [k0, s0])), shape=(1, data.n_items))
    s = tfidf.score(np.array([-1]), row)[0]
    assert s[data.items.index(NEW_KNIFE)] < s[data.items.index("s1")]


# -- embeddings ---------------------------------------------------------------------------------------
def test_embedding_vectors_and_cache(embedding: ContentEmbedding, data: Interactions, cache_dir: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert embedding.vectors_.shape == (data.n_items, 384)
    np.testing.assert_allclose(np.linalg.norm(embedding.vectors_, axis=1), 1.0, rtol=1e-5)
    assert not embedding.uses_hnsw
    assert list(Path(cache_dir).rglob("*.npz"))

    # a second fit reads every text from the cache: the encoder is never asked
    def no_encoder(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr("fusionrec.candidates.content._sentence_encoder", no_encoder)
    again = ContentEmbedding(ContentEmbedding.Config(cache_dir=cache_dir)).fit(data)
    np.testing.assert_array_equal(again.vectors_, embedding.vectors_)


def test_embedding_candidates_through_faiss_match_dense_scores(embedding: ContentEmbedding,
                                                               data: Interactions) -> None:
    hist = data.matrix()[0]
    q = Query(user=-1, history=hist.indices, history_weights=hist.data, exclude=hist.indices)
    got = embedding.candidates(q, 5)
    dense = embedding.score(np.array([-1]), hist)[0]
    dense[hist.indices] = -np.inf
    np.testing.assert_array_equal(got.items, np.argsort(-dense, kind="stable")[:5])
    np.testing.assert_allclose(got.scores, np.sort(dense)[::-1][:5], rtol=1e-5)


def test_hnsw_index_above_threshold(data: Interactions, cache_dir: str, tmp_path) -> None:
    flat = ContentEmbedding(ContentEmbedding.Config(cache_dir=cache_dir)).fit(data)
    hnsw = ContentEmbedding(ContentEmbedding.Config(cache_dir=cache_dir, hnsw_threshold=5)).fit(data)
    assert hnsw.uses_hnsw and not flat.uses_hnsw
    new = data.items.index(NEW_KNIFE)
    np.testing.assert_array_equal(hnsw.similar_items(new, 5).items, flat.similar_items(new, 5).items)
    hnsw.save(tmp_path / "h")
    loaded = ContentEmbedding.load(tmp_path / "h")
    assert loaded.uses_hnsw
    np.testing.assert_array_equal(loaded.similar_items(new, 5).items, hnsw.similar_items(new, 5).items)


def supplied_vectors(data: Interactions) -> tuple[list[str], np.ndarray]:
    """Fake image embeddings: knives point one way, shoes another; one unknown id is ignored."""
    ids = [i for i in data.items.ids()] + ["not-in-catalogue"]
    vecs = np.array([[1.0, 0.1 * k, 0.0] if is_knife([i])[0] else [0.0, 0.1 * k, 1.0] for k, i in enumerate(ids)],
                    np.float32)
    return ids, vecs


@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_supplied_vectors_are_the_multimodal_path(data: Interactions, tmp_path, fmt: str) -> None:
    ids, vecs = supplied_vectors(data)
    path = tmp_path / f"vectors.{fmt}"
    if fmt == "npz":
        np.savez(path, item_id=np.array(ids), vector=vecs)
    else:
        pl.DataFrame({"item_id": ids, "vector": vecs.tolist()}).write_parquet(path)
    model = ContentEmbedding(ContentEmbedding.Config(use_text=False, vectors_path=str(path))).fit(data)
    assert model.vectors_.shape == (data.n_items, 3)
    new = data.items.index(NEW_KNIFE)
    assert all(is_knife(data.items.ids(model.similar_items(new, 5).items)))


def test_text_and_supplied_vectors_combine(data: Interactions, embedding: ContentEmbedding, cache_dir: str,
                                           tmp_path) -> None:
    ids, vecs = supplied_vectors(data)
    np.savez(tmp_path / "v.npz", item_id=np.array(ids), vector=vecs)
    both = ContentEmbedding(ContentEmbedding.Config(cache_dir=cache_dir, vectors_path=str(tmp_path / "v.npz"),
                                                    vectors_weight=0.25)).fit(data)
    assert both.vectors_.shape == (data.n_items, 384 + 3)
    a, b = data.items.index("k0"), data.items.index("s0")
    text_cos = float(embedding.vectors_[a] @ embedding.vectors_[b])
    v = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    vec_cos = float(v[ids.index("k0")] @ v[ids.index("s0")])
    assert float(both.vectors_[a] @ both.vectors_[b]) == pytest.approx(0.75 * text_cos + 0.25 * vec_cos, abs=1e-5)


def test_bad_vector_files_name_the_file(data: Interactions, tmp_path) -> None:
    with pytest.raises(FusionrecError, match="not found"):
        ContentEmbedding(ContentEmbedding.Config(use_text=False, vectors_path=str(tmp_path / "nope.npz"))).fit(data)
    pl.DataFrame({"item_id": ["k0"], "embedding": [[1.0, 2.0]]}).write_parquet(tmp_path / "v.parquet")
    with pytest.raises(FormatError, match="v.parquet"):
        ContentEmbedding(ContentEmbedding.Config(use_text=False, vectors_path=str(tmp_path / "v.parquet"))).fit(data)
    np.savez(tmp_path / "nan.npz", item_id=np.array(["k0"]), vector=np.array([[np.nan, 1.0]]))
    with pytest.raises(FormatError, match="k0"):
        ContentEmbedding(ContentEmbedding.Config(use_text=False, vectors_path=str(tmp_path / "nan.npz"))).fit(data)


def test_missing_optional_dependency_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    with pytest.raises(FusionrecError, match=r"pip install fusionrec\[embeddings\]"):
        # a model_path of its own, so the process's loaded encoder is not reused
        embed_texts(["some text"], "other-model", str(tmp_path / "no-model"), cache_dir=None)
