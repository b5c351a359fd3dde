"""The Spark engine against the embedded one on the same input (issue #8), on local[2].

One SparkSession serves the module. Asserted: identical counts after validation (and the same
quarantine), identical popularity top-100, item-kNN top-20 neighbour overlap >= 0.95, ALS and the
fused pipeline within 5% relative recall@20 on a temporal split of Taobao (and of a 1M-event
synthetic shop, marked slow), and a Spark-trained model served by the API unchanged.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

pytest.importorskip("pyspark", reason="pyspark is not installed: pip install -e '.[spark]' (pyspark==4.3.0)")

from fusionrec import schema as S  # noqa: E402
from fusionrec.data.interactions import Interactions  # noqa: E402
from fusionrec.data.validation import ValidationRules  # noqa: E402
from fusionrec.data.vocabulary import Vocabulary  # noqa: E402
from fusionrec.pipeline import FusedPipeline, PipelineConfig  # noqa: E402
from fusionrec.serving.training import training_data  # noqa: E402
from fusionrec.serving.versions import load_version  # noqa: E402
from fusionrec.spark.session import SparkSettings, spark_session  # noqa: E402
from fusionrec.spark.train import SparkTrainConfig, train_spark  # noqa: E402
from fusionrec.store.event_store import EventStore  # noqa: E402

pytestmark = pytest.mark.spark

# the same pipeline for both engines; small enough for a 2-core CI runner, every Spark stage present
GENERATORS = {"pop": {}, "trending": {}, "repeat": {}, "itemknn": {}, "covisit": {}, "rp3beta": {},
              "als": {"factors": 32, "iterations": 10}}
CONFIG = PipelineConfig(generators=GENERATORS, n_candidates=50, max_train_users=2000, seed=0,
                        ranker={"n_estimators": 100, "num_threads": 1})
SCFG = SparkTrainConfig(max_items_per_user=300)


@pytest.fixture(scope="module")
def spark():
    session = spark_session(SparkSettings(master="local[2]", shuffle_partitions=4))
    yield session
    session.stop()  # the JVM goes down with the module, not at interpreter exit


# -- validation ---------------------------------------------------------------------------------

MALFORMED = """user_id,item_id,behavior,timestamp,price,quantity
u1,i1,view,2026-01-05T10:00:00Z,,
u1,i2,pv,2026-01-05T10:01:00Z,9.5,1
u1,i2,pv,2026-01-05T10:01:00Z,9.5,1
u2,i1,teleport,2026-01-05T10:02:00Z,,
u2,,view,2026-01-05T10:03:00Z,,
u2,i3,buy,yesterday,,
u2,i3,buy,1767607380,-3,
u3,i4,cart,1767607380000,abc,
u3,i4,cart,2026-01-05T10:05:00+02:00,1,0
u3,"i,5",fav,2026-01-05T10:06:00Z,,
u3,i6,view
u4,i7,view,1890-01-01T00:00:00Z,,

u4,i8,view,2026-01-05T10:07:00Z,,2
"""


def test_covisitation_normalised_by_item_counts(spark):
    """Session co-visitation with `normalize`: pair weights 1/distance, summed both ways, divided by the
    square roots of the items' event counts; the sessionised events are persisted once for both uses."""
    from fusionrec.spark import stages as St

    rows = [(0, 0, 0.0, 1), (0, 1, 60.0, 2), (1, 0, 0.0, 3), (1, 1, 60.0, 4), (1, 2, 120.0, 5),
            (1, 2, 9000.0, 6)]  # the last one: a new session (over 30 minutes later)
    e = spark.createDataFrame(rows, f"{St.UIDX} long, {St.IIDX} long, t double, {S.SEQ} long")
    persisted: list = []
    got = {(r["i"], r["j"]): r["v"] for r in St.covisit_topk(e, 10, 30.0, 2, True, persisted).collect()}
    n = {0: 2, 1: 2, 2: 2}  # events per item after collapsing repeats in a row
    want = {(0, 1): 2.0, (1, 2): 1.0, (0, 2): 0.5}
    want = {**want, **{(j, i): v for (i, j), v in want.items()}}
    assert set(got) == set(want)
    for (i, j), v in want.items():
        assert got[(i, j)] == pytest.approx(v / np.sqrt(n[i] * n[j]))
    assert len(persisted) == 1 and persisted[0].is_cached
    persisted[0].unpersist()


def _pairs_frame(spark, x: sp.csr_matrix, t_last: np.ndarray):
    from fusionrec.spark import stages as St

    c = x.tocoo()
    rows = [(int(u), int(i), float(v), float(t)) for u, i, v, t in zip(c.row, c.col, c.data, t_last)]
    return spark.createDataFrame(rows, f"{St.UIDX} long, {St.IIDX} long, x double, t_last double")


def _dense(spark_df, n: int) -> np.ndarray:
    out = np.zeros((n, n), np.float32)
    for r in spark_df.collect():
        assert out[r["i"], r["j"]] == 0.0, "one row per (i, j)"
        out[r["i"], r["j"]] = r["v"]
    return out


@pytest.mark.parametrize("blocks", [1, 3])
def test_neighbour_blocks_equal_the_embedded_generators(spark, blocks):
    """Item-kNN's and RP3beta's neighbour lists computed by Spark item blocks are the embedded ones
    (same items, same values) for any number of blocks; with a per-user cap, the product takes only each
    user's most recent items while norms, degrees and row sums still count every item."""
    from fusionrec.candidates._similarity import pairwise_topk, row_norms_sq
    from fusionrec.candidates.rp3beta import rp3beta_topk
    from fusionrec.spark import stages as St

    rng = np.random.default_rng(7)
    n_users, n_items, k = 70, 40, 8
    x = sp.random(n_users, n_items, density=0.2, format="csr", random_state=rng, dtype=np.float64)
    x.data = 0.5 + 3.0 * x.data
    t_last = rng.permutation(x.nnz).astype(np.float64)  # distinct: the recency order is unambiguous
    pairs = _pairs_frame(spark, x, t_last)

    want_knn = pairwise_topk(x.T.tocsr(), x.T.tocsr(), k, "cosine", 0.5, 1.0, exclude_self=True).toarray()
    got_knn = _dense(St.neighbour_topk(pairs, n_items, k, 1000, blocks, "itemknn", similarity="cosine",
                                       shrink=1.0), n_items)
    assert (got_knn > 0).sum() > n_items  # not vacuous
    np.testing.assert_array_equal(got_knn > 0, want_knn > 0)
    np.testing.assert_allclose(got_knn, want_knn, rtol=1e-5)

    want_rp = rp3beta_topk(x, 0.8, 0.5, k).toarray()
    got_rp = _dense(St.neighbour_topk(pairs, n_items, k, 1000, blocks, "rp3beta", alpha=0.8, beta=0.5), n_items)
    np.testing.assert_array_equal(got_rp > 0, want_rp > 0)
    np.testing.assert_allclose(got_rp, want_rp, rtol=1e-5)

    # the cap: each user's 3 most recent items enter the product; norms and degrees stay the full ones
    cap = 3
    keep = np.zeros(x.nnz, bool)
    for u in range(n_users):
        lo, hi = x.indptr[u], x.indptr[u + 1]
        keep[lo + np.argsort(-t_last[lo:hi])[:cap]] = True
    capped = x.copy()
    capped.data = np.where(keep, x.data, 0.0)
    capped.eliminate_zeros()
    sq = row_norms_sq(x.T.tocsr())
    want_cap = pairwise_topk(capped.T.tocsr(), None, k, "asymmetric_cosine", 0.3, 0.0, exclude_self=True,
                             b_t=capped, sq_b=sq, sq_a=sq).toarray()
    got_cap = _dense(St.neighbour_topk(pairs, n_items, k, cap, blocks, "itemknn", similarity="asymmetric_cosine",
                                       alpha=0.3), n_items)
    uncapped = pairwise_topk(x.T.tocsr(), x.T.tocsr(), k, "asymmetric_cosine", 0.3, 0.0, exclude_self=True)
    assert not np.allclose(want_cap, uncapped.toarray())  # the cap changes the lists on this data
    np.testing.assert_array_equal(got_cap > 0, want_cap > 0)
    np.testing.assert_allclose(got_cap, want_cap, rtol=1e-5)
    pop = np.diff(x.T.tocsr().indptr).astype(np.float64)
    want_rp_cap = rp3beta_topk(capped, 1.0, 0.6, k, pop=pop, row_sums=np.asarray(x.sum(axis=1)).ravel()).toarray()
    got_rp_cap = _dense(St.neighbour_topk(pairs, n_items, k, cap, blocks, "rp3beta", alpha=1.0, beta=0.6), n_items)
    np.testing.assert_allclose(got_rp_cap, want_rp_cap, rtol=1e-5)


def _counts(report) -> dict:
    t = report.total
    return {"rows_in": t.rows_in, "accepted": t.accepted, "rejected": t.rejected, "duplicates": t.duplicates,
            "reasons": dict(sorted(t.reasons.items()))}


def _spark_counts(spark, path: Path, fmt: str, work: Path) -> tuple[dict, list]:
    from fusionrec.spark.readers import read_source
    from fusionrec.spark.validation import validate_and_dedup

    src = read_source(spark, str(path), fmt)
    res = validate_and_dedup(src.events, ValidationRules(time_range=src.time_range), str(work / "ev"), str(work / "q"))
    c = res.counts
    q = sorted((int(r["line"]), r["reason"]) for r in spark.read.parquet(str(work / "q")).collect())
    return ({"rows_in": c.rows_in, "accepted": c.accepted, "rejected": c.rejected, "duplicates": c.duplicates,
             "reasons": dict(sorted(c.reasons.items()))}, q)


def test_validation_counts_and_quarantine_match_embedded(spark, tmp_path, shared_data):
    bad = tmp_path / "bad" / "events.csv"
    bad.parent.mkdir()
    bad.write_text(MALFORMED)
    for path, fmt in ((bad.parent, "fusionrec"), (shared_data / "taobao_userbehavior", "taobao")):
        with EventStore(":memory:") as st:
            expected = _counts(st.ingest([path], fmt))
            q_emb = sorted((int(r["line"]), r["reason"]) for r in st.quarantine().iter_rows(named=True))
        got, q_spark = _spark_counts(spark, path, fmt, tmp_path / fmt)
        assert got == expected, fmt
        assert q_spark == q_emb, fmt


# -- the same training data through both engines -------------------------------------------------

def _split_and_write(events: pl.DataFrame, items: pl.DataFrame | None, folder: Path, test_days: float
                     ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Temporal split; the training part written as a native folder both engines read."""
    cut = events.select(pl.col(S.TIMESTAMP).max() - pl.duration(seconds=int(test_days * 86400))).item()
    train = events.filter(pl.col(S.TIMESTAMP) <= cut)
    test = events.filter(pl.col(S.TIMESTAMP) > cut)
    folder.mkdir(parents=True, exist_ok=True)
    train.select(S.USER_ID, S.ITEM_ID, S.BEHAVIOR, S.TIMESTAMP).write_csv(
        folder / "events.csv", datetime_format="%Y-%m-%dT%H:%M:%SZ")
    if items is not None:
        items.write_csv(folder / "items.csv")
    return train, test


def _fit_both(spark, folder: Path, tmp: Path, cfg: PipelineConfig) -> dict:
    with EventStore(":memory:") as st:
        st.ingest([folder], "fusionrec")
        data, _ = training_data(st)
        train_events = st.events()
    embedded = FusedPipeline(cfg).fit(data)
    version = train_spark(str(folder), "fusionrec", tmp / "spark-model", cfg, scfg=SCFG, spark=spark)
    spark_model = load_version(version).pipeline  # through the serving loader: checksums and all
    return {"embedded": embedded, "spark": spark_model, "train_events": train_events}


def _recall_at_20(model, train_events: pl.DataFrame, test: pl.DataFrame, exclude_seen: bool = True) -> float:
    """Mean recall@20 over test users the model knows; seen items excluded (as served) unless repeats count."""
    users, items = Vocabulary(model.users_.ids()), Vocabulary(model.items_.ids())
    n_u, n_i = len(users), len(items)
    # from_frame extends the vocabularies it is given (bots were left out of training): use copies
    hist = Interactions.from_frame(train_events, users=Vocabulary(users.ids()),
                                   items=Vocabulary(items.ids())).matrix()[:n_u, :n_i]
    u = users.indices(test[S.USER_ID].cast(pl.Utf8).to_list())
    i = items.indices(test[S.ITEM_ID].cast(pl.Utf8).to_list())
    ok = (u >= 0) & (i >= 0)
    targets = sp.csr_matrix((np.ones(ok.sum(), np.float32), (u[ok], i[ok])), shape=(n_u, n_i))
    if exclude_seen:
        targets = targets - targets.multiply(hist > 0)
    targets.eliminate_zeros()
    rows = np.flatnonzero(np.diff(targets.indptr) > 0)
    recs, _ = model.recommend(rows, hist[rows], 20, exclude=hist[rows] if exclude_seen else None)
    hits = np.asarray([len(set(r[r >= 0].tolist()) & set(targets[k].indices.tolist())) for k, r in zip(rows, recs)])
    return float(np.mean(hits / np.diff(targets.indptr)[rows]))


def _top_ids(model, name: str, n: int) -> list[str]:
    pop = model.generators_[name].popularity_
    order = np.lexsort((np.asarray(model.items_.ids()), -np.round(pop.astype(np.float64), 5)))[:n]
    return model.items_.ids(order)


def _knn_overlap(a, b, k: int = 20, name: str = "itemknn") -> float:
    """Mean over items with neighbours of |top-k(a) & top-k(b)| / min(k, |top-k(a)|), by item id."""
    ga, gb = a.generators_[name], b.generators_[name]
    ids_b = Vocabulary(b.items_.ids())
    scores = []
    for idx in range(a.n_items_):
        na = ga.similar_items(idx, k)
        if not len(na):
            continue
        j = ids_b.index(a.items_.id(idx))
        nb = gb.similar_items(j, k) if j >= 0 else None
        sa = set(a.items_.ids(na.items))
        sb = set(b.items_.ids(nb.items)) if nb is not None else set()
        scores.append(len(sa & sb) / min(k, len(sa)))
    return float(np.mean(scores))


def _assert_equivalent(models: dict, test: pl.DataFrame, report: dict, exclude_seen: bool = True) -> None:
    """`exclude_seen=False`: repeats count (Taobao, whose next-day events are mostly re-views: with seen
    items excluded its recall@20 is about 0.002, a handful of hits, where 5% is not measurable)."""
    emb, spk = models["embedded"], models["spark"]
    assert emb.items_.ids() == spk.items_.ids() and emb.users_.ids() == spk.users_.ids()
    assert _top_ids(emb, "pop", 100) == _top_ids(spk, "pop", 100)
    assert _top_ids(emb, "trending", 100) == _top_ids(spk, "trending", 100)
    # the ranker's features are aggregates: they must agree exactly, not approximately
    np.testing.assert_allclose(spk.item_features_.values, emb.item_features_.values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(spk.user_features_.values, emb.user_features_.values, rtol=1e-5, atol=1e-5)
    for name in ("views", "favs", "carts", "buys", "last_seen"):
        assert abs(getattr(spk.user_features_, name) - getattr(emb.user_features_, name)).max() < 1e-4, name
    ce, cs = emb.item_features_.content, spk.item_features_.content
    assert ce.shape == cs.shape and ce.shape[1] > 0 and abs(ce - cs).max() < 1e-6  # the same catalogue text
    # the recent items (session features): the embedded engine breaks ties in time by file order, Spark
    # arbitrarily, so a user whose newest events share a second may differ
    re_, rs = emb.user_features_.recent, spk.user_features_.recent
    same = [set(re_[u].indices) == set(rs[u].indices) for u in range(re_.shape[0])]
    assert np.mean(same) >= 0.95 and re_.nnz > 0
    overlap = _knn_overlap(emb, spk)
    r = {}
    for name in ("als", "fused"):
        pick = (lambda m: m.generators_["als"]) if name == "als" else (lambda m: m)
        r[name] = {eng: _recall_at_20(pick(m), models["train_events"], test, exclude_seen)
                   for eng, m in (("embedded", emb), ("spark", spk))}
        report[f"{name}_recall@20_new_items"] = {  # reported, not asserted where it is noise
            eng: _recall_at_20(pick(m), models["train_events"], test, True) for eng, m in (("embedded", emb),
                                                                                          ("spark", spk))}
    covisit = _knn_overlap(emb, spk, name="covisit")
    report.update({"itemknn_top20_overlap": overlap, "covisit_top20_overlap": covisit, "recall@20": r,
                   "exclude_seen": exclude_seen})
    print(report)
    assert overlap >= 0.95
    assert covisit >= 0.95
    for name, v in r.items():
        assert abs(v["spark"] - v["embedded"]) <= 0.05 * v["embedded"], (name, v)


@pytest.mark.realdata
def test_taobao_spark_matches_embedded(spark, tmp_path, shared_data):
    from fusionrec.data.loading import load_dataset

    ds = load_dataset(shared_data / "taobao_userbehavior", "taobao")
    train, test = _split_and_write(ds.events, ds.items, tmp_path / "taobao", test_days=1.0)
    # repeats count on Taobao (as benchmarks' taobao-repeats): the ranker learns them, the metric counts them
    models = _fit_both(spark, tmp_path / "taobao", tmp_path, replace(CONFIG, exclude_seen=False))
    _assert_equivalent(models, test, {"dataset": "taobao"}, exclude_seen=False)
    shutil.rmtree(tmp_path / "spark-model", ignore_errors=True)


@pytest.mark.slow
def test_synthetic_1m_spark_matches_embedded(spark, tmp_path):
    from fusionrec.data.synthetic import ShopConfig, generate_shop

    shop = generate_shop(ShopConfig(n_users=25_000, n_items=5_000, n_events=1_000_000, seed=3))
    train, test = _split_and_write(shop.events, shop.items, tmp_path / "shop", test_days=7.0)
    models = _fit_both(spark, tmp_path / "shop", tmp_path, CONFIG)
    _assert_equivalent(models, test, {"dataset": "synthetic-1m"})


# -- the CLI and the server ------------------------------------------------------------------------

def test_cli_train_spark_then_serve(spark, tmp_path):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from fusionrec.cli import app
    from fusionrec.data.synthetic import ShopConfig, generate_shop, write_shop
    from fusionrec.serving.app import create_app
    from fusionrec.serving.settings import ServingSettings

    shop = generate_shop(ShopConfig(n_users=300, n_items=200, n_events=20_000, seed=1))
    write_shop(shop, tmp_path / "shop")
    toml = tmp_path / "p.toml"
    toml.write_text('[pipeline]\nn_candidates = 40\nmax_train_users = 500\nranker = {n_estimators = 30, num_threads = 1}\n'
                    '[generators.pop]\n[generators.itemknn]\n[generators.covisit]\n'
                    '[generators.als]\nfactors = 8\niterations = 3\n')
    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--engine", "spark", "--out", str(tmp_path / "m")])
    assert bad.exit_code == 2 and "--events" in bad.output
    bad = runner.invoke(app, ["train", "--engine", "spark", "--events", str(tmp_path / "shop"), "--format", "lightgcn",
                              "--out", str(tmp_path / "m"), "--spark-master", "local[2]"])
    assert bad.exit_code == 2 and "formats" in bad.output
    res = runner.invoke(app, ["train", "--engine", "spark", "--events", str(tmp_path / "shop" / "events.csv"),
                              "--items", str(tmp_path / "shop" / "items.csv"), "--pipeline", str(toml),
                              "--out", str(tmp_path / "m"), "--spark-master", "local[2]", "--json",
                              "--spark-conf", "spark.sql.shuffle.partitions=5"])
    assert res.exit_code == 0, res.output
    assert spark.conf.get("spark.sql.shuffle.partitions") == "5"  # --spark-conf reached the session
    with EventStore(tmp_path / "store.duckdb") as st:
        st.ingest([tmp_path / "shop"], "fusionrec")
    client = TestClient(create_app(tmp_path / "m", tmp_path / "store.duckdb", ServingSettings()))
    with client:
        assert client.get("/health").json()["status"] == "ok"
        user = shop.events[S.USER_ID][0]
        body = client.get(f"/recommendations/{user}?k=10").json()
        assert len(body["items"]) == 10
        item = shop.events[S.ITEM_ID][0]
        assert client.get(f"/items/{item}/similar?k=5").status_code == 200
        # the dashboard's background summary reads the store; closing the store under it crashes DuckDB
        # (a race in the server's shutdown, not in the Spark path): let it finish first
        for th in threading.enumerate():
            if th.name.startswith("fusionrec-ui"):
                th.join(timeout=120)
