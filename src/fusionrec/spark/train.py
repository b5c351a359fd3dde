"""`fusionrec train --engine spark`: the fused pipeline's batch stages on Spark, the embedded artefact out.

Spark reads, validates (quarantine kept), de-duplicates, drops bots, indexes, weighs and decays the
events, and computes every generator's learned state, the feature aggregates and the ranker's
temporal holdout. The driver receives compact results only (per item, per user, per pair, top-N
lists, factors), builds the same generator objects and feature tables the embedded path builds,
trains the LightGBM ranker on the sampled training set and writes a version with
`serving.versions.write_version`, so `fusionrec serve` loads it unchanged.

Generators with a Spark stage: pop, trending, repeat, itemknn (cosine, asymmetric cosine, jaccard;
weighting "none"), covisit, rp3beta, als. Others (ease, userknn, bpr, content, sasrec) have none and
are refused with a message: leave them out of the pipeline TOML for this engine.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec import schema as S
from fusionrec.candidates.popularity import popularity_arrays
from fusionrec.data.interactions import ITEM_IDX, _align_catalogue, repeat_decay
from fusionrec.data.validation import IngestCounts, ValidationRules
from fusionrec.data.vocabulary import Vocabulary
from fusionrec.errors import ConfigError
from fusionrec.serving.training import METRIC_KEYS
from fusionrec.spark import assemble as A
from fusionrec.spark import stages as St
from fusionrec.spark.session import SparkSettings, spark_session

__all__ = ["SparkTrainConfig", "SPARK_GENERATORS", "train_spark", "fit_pipeline", "fit_generators", "SparkRun",
           "prepare", "default_spark_pipeline", "data_fingerprint"]

log = logging.getLogger("fusionrec.spark")

#: the generators that have a Spark stage
SPARK_GENERATORS = ("pop", "trending", "repeat", "itemknn", "covisit", "rp3beta", "als")


@dataclass(frozen=True)
class SparkTrainConfig:
    """Settings of the Spark stages that the embedded path does not have."""

    #: item-kNN and RP3beta: each user's most recent items that enter the item x item product; bounds
    #: one user's work at max_items_per_user^2 products (norms and degrees still count every item)
    max_items_per_user: int = 500
    #: item-kNN and RP3beta: blocks of items, one task each (None: the default parallelism, one per
    #: core). A user's pairs are shuffled to each block they reach, so more blocks mean a larger
    #: shuffle and smaller tasks (docs/scale.md)
    neighbour_blocks: int | None = None
    #: ALS user and item blocks (None: the default parallelism, one block per core)
    als_blocks: int | None = None
    exclude_bots: bool = True
    #: scratch folder for the Parquet lake (validated and indexed events); on a cluster a shared URL
    work_dir: str | None = None


@dataclass
class SparkRun:
    """What `prepare` leaves for the stages: the session, indexed events, vocabularies and counts."""

    spark: Any
    indexed: St.IndexedEvents
    catalogue: pl.DataFrame | None  # aligned to the item vocabulary (item_idx column)
    counts: IngestCounts
    work: str
    notes: list[str] = field(default_factory=list)
    #: the work folder is a local temporary one, removed after training
    temporary: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


def _generator_specs(cfg: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    from fusionrec.candidates.registry import make

    specs = {}
    for name, params in cfg.generators.items():
        base = params.get("generator", name)
        p = {k: v for k, v in params.items() if k not in ("generator", "n")}
        if base not in SPARK_GENERATORS:
            raise ConfigError(f"generator {name!r} ({base}) has no Spark stage; the Spark engine fits "
                              f"{', '.join(SPARK_GENERATORS)}: remove it from the pipeline TOML or train with "
                              "--engine embedded")
        gen = make(base, p)  # validates the parameters exactly as the embedded path does
        if base == "itemknn" and gen.cfg.weighting != "none":  # type: ignore[attr-defined]
            raise ConfigError(f"generator {name!r}: itemknn weighting {gen.cfg.weighting!r} has no Spark stage; "  # type: ignore[attr-defined]
                              "use weighting = \"none\"")
        specs[name] = (base, p)
    return specs


def default_spark_pipeline() -> Any:
    """The built-in pipeline restricted to generators with a Spark stage (the same parameters)."""
    from fusionrec.pipeline import PipelineConfig

    base = PipelineConfig()
    return replace(base, generators={k: v for k, v in base.generators.items() if k in SPARK_GENERATORS})


def prepare(events: str, fmt: str, items: str | None = None, settings: SparkSettings | None = None,
            scfg: SparkTrainConfig | None = None, spark: Any = None,
            say: Callable[[str], None] = lambda m: None) -> SparkRun:
    """Read, validate (quarantine written), de-duplicate, drop bots and index: E in the Parquet lake."""
    from fusionrec.spark.readers import read_source
    from fusionrec.spark.validation import validate_and_dedup

    scfg = scfg or SparkTrainConfig()
    spark = spark or spark_session(settings)
    work = scfg.work_dir or spark.conf.get("spark.fusionrec.workDir", None)
    temporary = work is None
    if work is None:
        work = tempfile.mkdtemp(prefix="fusionrec-spark-")
    t0 = time.perf_counter()
    say(f"reading {events} ({fmt}) on Spark")
    src = read_source(spark, events, fmt, items)
    rules = ValidationRules(time_range=src.time_range)
    res = validate_and_dedup(src.events, rules, f"{work}/events", f"{work}/quarantine", source=str(events))
    t1 = time.perf_counter()
    catalogue = None
    cat_ids = None
    if src.items is not None:
        cat = pl.from_arrow(src.items.toArrow())
        catalogue = A.conform_catalogue(cat) if isinstance(cat, pl.DataFrame) and cat.height else None
        cat_ids = catalogue[S.ITEM_ID].to_list() if catalogue is not None else None
    say("indexing users and items")
    idx = St.indexed_events(spark, f"{work}/events", f"{work}/indexed", S.DEFAULT_BEHAVIOR_WEIGHTS, cat_ids,
                            exclude_bots=scfg.exclude_bots)
    aligned = _align_catalogue(catalogue, Vocabulary(idx.item_ids)) if catalogue is not None else None
    return SparkRun(spark, idx, aligned, res.counts, work, notes=src.notes, temporary=temporary,
                    seconds={"validate": round(t1 - t0, 2), "index": round(time.perf_counter() - t1, 2)})


def _subset_frame(spark: Any, users: np.ndarray) -> Any:
    import pyarrow as pa

    return spark.createDataFrame(pa.table({St.UIDX: pa.array(users.astype(np.int32))}))


def fit_generators(run: SparkRun, e: Any, cfg: Any, scfg: SparkTrainConfig, users: np.ndarray | None = None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every generator of `cfg` fitted on E by Spark stages; plus the feature tables and history rows.

    With `users` (sorted user indices) the user-side state (histories, ALS user factors, repeat decay,
    user features) holds only those users, remapped to rows 0..len(users)-1: the ranker's sample.
    Returns (generators, extras) where extras has "hist", "item_f", "user_f", "now".
    """
    from pyspark.sql import functions as F

    from fusionrec.candidates.registry import make

    spark = run.spark
    n_items = len(run.indexed.item_ids)
    n_users = len(run.indexed.user_ids) if users is None else len(users)
    all_ids = run.indexed.user_ids
    user_ids = all_ids if users is None else [all_ids[int(u)] for u in users]  # the ids of the rows, once
    t_start = time.perf_counter()
    now = St.now_of(e)
    pairs = St.pair_table(e, now).persist()
    sub = None if users is None else F.broadcast(_subset_frame(spark, users)) if len(users) < 2_000_000 else _subset_frame(spark, users)

    def for_users(df: Any) -> Any:
        return df if sub is None else df.join(sub, St.UIDX, "left_semi")

    def rows_of(u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, np.int64)
        return u if users is None else np.searchsorted(users, u)

    p = St.to_arrays(for_users(pairs))
    p_rows = rows_of(p[St.UIDX])
    hist = A.csr_from_triples(p_rows, p[ITEM_IDX], p["x"], (n_users, n_items))
    base_counts = A.dense(n_items, *_counts(St.item_counts(e, now)))
    fallback = A.normalised(base_counts)
    pairs_by_hl: dict[Any, Any] = {None: pairs}
    transient: list[Any] = []  # frames a stage persisted for its own reuse

    def pairs_for(hl: float | None) -> Any:
        if hl not in pairs_by_hl:
            pairs_by_hl[hl] = St.pair_table(e, now, hl).persist()
        return pairs_by_hl[hl]

    blocks = scfg.neighbour_blocks or spark.sparkContext.defaultParallelism

    def neighbours(hl: float | None, kind: str, k: int, **params: Any) -> sp.csr_matrix:
        return sim(St.neighbour_topk(pairs_for(hl), n_items, k, scfg.max_items_per_user, blocks, kind, **params))

    def sim(df: Any) -> sp.csr_matrix:
        a = St.to_arrays(df)
        return A.csr_from_triples(a["i"], a["j"], a["v"], (n_items, n_items))

    gens: dict[str, Any] = {}
    seconds: dict[str, float] = {"pairs": round(time.perf_counter() - t_start, 2)}
    for name, (base, params) in _generator_specs(cfg).items():
        t_gen = time.perf_counter()
        gen = make(base, params)
        c = gen.cfg  # type: ignore[attr-defined]
        if base in ("pop", "trending"):
            counts = base_counts if c.half_life_days is None else A.dense(n_items, *_counts(
                St.item_counts(e, now, c.half_life_days)))
            state = popularity_arrays(counts, run.catalogue, n_items)
        elif base == "repeat":
            if c.half_life_days and np.isfinite(now):
                age = np.nan_to_num((now - np.asarray(p["t_last"], np.float64)) / St.DAY, nan=0.0)
                decay = A.csr_from_triples(p_rows, p[ITEM_IDX], repeat_decay(age, c.half_life_days), hist.shape)
            else:
                decay = sp.csr_matrix(hist.shape, dtype=np.float32)
            state = {"decay": decay, "fallback": fallback * 1e-3}
        elif base == "itemknn":
            hl = c.half_life_days
            state = {"sim": neighbours(hl, "itemknn", c.k, similarity=c.similarity, alpha=c.alpha,
                                       shrink=c.shrink), "fallback": fallback}
        elif base == "rp3beta":
            hl = c.half_life_days
            w = neighbours(hl, "rp3beta", c.k, alpha=c.alpha, beta=c.beta)
            if c.normalize_rows:
                from fusionrec.candidates.rp3beta import _row_normalised

                w = sp.csr_matrix(_row_normalised(w), dtype=np.float32)
            state = {"sim": w, "fallback": fallback}
        elif base == "covisit":
            state = {"sim": sim(St.covisit_topk(e, c.k, c.session_gap_minutes, c.window, c.normalize,
                                                 transient)),
                     "fallback": fallback}
        else:  # als
            uf, itf = St.als_factors(pairs_for(c.half_life_days), c.factors, c.regularization, c.alpha,
                                     c.iterations, c.seed, scfg.als_blocks or spark.sparkContext.defaultParallelism)
            state = {"user_factors": _factors(for_users(uf.withColumnRenamed("id", St.UIDX)), St.UIDX, n_users,
                                              c.factors, rows_of),
                     "item_factors": _factors(itf.withColumnRenamed("id", ITEM_IDX), ITEM_IDX, n_items, c.factors,
                                              lambda i: np.asarray(i, np.int64)),
                     "fallback": fallback}
        _set_fitted(gen, state, run.indexed.item_ids, user_ids)
        gens[name] = gen
        seconds[name] = round(time.perf_counter() - t_gen, 2)
    for df in list(pairs_by_hl.values()) + transient:
        df.unpersist()
    # features for the ranker: per item from all of E, per user (and pair) for the users asked for
    t_feat = time.perf_counter()
    ia = St.to_arrays(St.item_aggregates(e, now))
    item_f = A.item_features(n_items, ia, now, run.catalogue)
    side = None
    if (item_f.category >= 0).any() or (~np.isnan(item_f.price)).any():
        import pyarrow as pa

        side = spark.createDataFrame(pa.table({ITEM_IDX: pa.array(np.arange(n_items, dtype=np.int32)),
                                               "category": pa.array(item_f.category.astype(np.int32)),
                                               "price": pa.array(item_f.price)}))
    ua = St.to_arrays(for_users(St.user_aggregates(e, side)))
    user_f = A.user_features(n_users, n_items, ua, rows_of(ua[St.UIDX]), p, p_rows, now)
    seconds["features"] = round(time.perf_counter() - t_feat, 2)
    return gens, {"hist": hist, "item_f": item_f, "user_f": user_f, "now": now, "seconds": seconds}


def _counts(df: Any) -> tuple[np.ndarray, np.ndarray]:
    a = St.to_arrays(df)
    return np.asarray(a[ITEM_IDX], np.int64), np.asarray(a["c"], np.float64)


def _factors(df: Any, key: str, n: int, d: int, rows: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    a = St.to_arrays(df.select(key, "features"))
    out = np.zeros((n, d), np.float32)
    if len(a[key]):
        out[rows(a[key])] = np.stack([np.asarray(v, np.float32) for v in a["features"]])
    return out


def _set_fitted(gen: Any, state: dict[str, Any], item_ids: list[str], user_ids: list[str]) -> None:
    """Give a generator the learned state the embedded fit would have given it (through its own loader);
    each gets vocabularies of its own, as in the embedded fit."""
    gen.items_ = Vocabulary(item_ids)
    gen.users_ = Vocabulary(user_ids)
    gen.n_items_ = len(item_ids)
    gen.n_users_ = len(user_ids)
    gen._load_state(state)


def _learn_fuser(pipeline: Any, gens: dict[str, Any], hist: sp.csr_matrix, labels: sp.csr_matrix,
                 item_f: Any, user_f: Any, report: dict[str, Any]) -> None:
    """The embedded fit's fuser learning (`FusedPipeline.learn_fuser_from`) on the sampled users (rows
    0..m-1 of `hist` and `labels`), with Spark-built inputs."""
    cfg = pipeline.cfg
    users = np.flatnonzero((np.diff(hist.indptr) > 0) & (np.diff(labels.indptr) > 0))
    if len(users) < 10:
        raise ConfigError(f"only {len(users)} users have both history and validation events; "
                          "the ranker cannot be trained (try more data or a longer valid_days)")
    pipeline.learn_fuser_from(gens, users, hist[users], labels[users], item_f, user_f, report,
                              np.random.default_rng(cfg.seed))


def fit_pipeline(run: SparkRun, cfg: Any = None, scfg: SparkTrainConfig | None = None,
                 say: Callable[[str], None] = lambda m: None) -> Any:
    """The fitted FusedPipeline: ranker learned on the temporal holdout, generators refitted on all of E."""
    from pyspark.sql import functions as F

    from fusionrec.pipeline import FusedPipeline
    from fusionrec.ranking.fusers import ReciprocalRankFusion

    cfg = cfg or default_spark_pipeline()
    scfg = scfg or SparkTrainConfig()
    _generator_specs(cfg)  # refuse unsupported generators before any Spark job
    pipeline = FusedPipeline(cfg)
    e = run.indexed.events.persist()
    t0 = time.perf_counter()
    report: dict[str, Any] = {"fuser": cfg.fuser, "engine": "spark"}
    has_time = e.where(F.col("t").isNotNull()).limit(1).count() > 0
    if cfg.fuser != "rrf":
        mode = cfg.holdout if cfg.holdout != "auto" else ("time" if has_time else "random")
        if mode != "time":
            raise ConfigError(f"holdout {mode!r}: the Spark engine builds the ranker's training set with the "
                              "temporal protocol only; the data needs timestamps (holdout = \"time\" or \"auto\")")
        if cfg.target_behaviors:
            raise ConfigError("target_behaviors: the Spark engine labels the ranker with every behaviour; "
                              "train this pipeline with the embedded engine, or leave target_behaviors unset")
        cut, days = St.holdout_cut(e, cfg.valid_days)
        report["holdout"] = f"time: the last {days:.2f} days of training data label the ranker"
        say("holdout: labels and the ranker's user sample")
        pre, labels = St.ranker_labels(e, cut, cfg.label_grades, cfg.exclude_seen)
        labels = labels.persist()
        sample = St.to_arrays(St.sample_users(labels, cfg.max_train_users, cfg.seed))
        users = np.sort(np.asarray(sample[St.UIDX], np.int64))
        lab = St.to_arrays(labels.join(F.broadcast(_subset_frame(run.spark, users)), St.UIDX, "left_semi"))
        labels.unpersist()
        lab_m = A.csr_from_triples(np.searchsorted(users, lab[St.UIDX]), lab[ITEM_IDX], lab["y"],
                                   (len(users), len(run.indexed.item_ids)))
        say(f"stage 1: generators on the events before the holdout ({len(users):,} sampled users)")
        t1 = time.perf_counter()
        pre = pre.persist()
        gens1, extra1 = fit_generators(run, pre, cfg, scfg, users)
        report["stage1_fit_seconds"] = round(time.perf_counter() - t1, 2)
        report["stage1_stage_seconds"] = extra1["seconds"]
        say("ranker: candidates and features of the sample, LightGBM on the driver")
        t_rank = time.perf_counter()
        _learn_fuser(pipeline, gens1, extra1["hist"], lab_m, extra1["item_f"], extra1["user_f"], report)
        report["ranker_seconds"] = round(time.perf_counter() - t_rank, 2)
        pre.unpersist()
    else:
        pipeline.fuser_ = ReciprocalRankFusion()
    say("stage 2: generators and features on all events")
    t2 = time.perf_counter()
    gens, extra = fit_generators(run, e, cfg, scfg)
    pipeline.generators_ = gens
    pipeline.item_features_ = extra["item_f"]
    pipeline.user_features_ = extra["user_f"]
    pipeline.items_ = Vocabulary(run.indexed.item_ids)
    pipeline.users_ = Vocabulary(run.indexed.user_ids)
    pipeline.n_items_ = len(pipeline.items_)
    pipeline.n_users_ = len(pipeline.users_)
    pipeline.align_ranker(extra["hist"], extra["hist"])
    report["refit_seconds"] = round(time.perf_counter() - t2, 2)
    report["stage2_stage_seconds"] = extra["seconds"]
    report["fit_seconds"] = round(time.perf_counter() - t0, 2)
    report["spark"] = {"master": run.spark.sparkContext.master, "max_items_per_user": scfg.max_items_per_user,
                       **{f"{k}_seconds": v for k, v in run.seconds.items()}}
    pipeline.report_ = report
    return pipeline


def data_fingerprint(run: SparkRun) -> dict[str, Any]:
    """Counts, time range and an order-independent 64-bit checksum of the training events."""
    from pyspark.sql import functions as F

    ev = run.spark.read.parquet(f"{run.work}/events")
    n, users, items, t0, t1, xor = ev.agg(
        F.count(F.lit(1)), F.count_distinct(S.USER_ID), F.count_distinct(S.ITEM_ID), F.min(S.TIMESTAMP),
        F.max(S.TIMESTAMP), F.bit_xor(F.xxhash64(S.USER_ID, S.ITEM_ID, S.BEHAVIOR, S.TIMESTAMP, S.SEQ))).collect()[0]
    # counted before bots are excluded, as the embedded fingerprint counts the store
    return {"events": int(n), "users": int(users), "items": int(items),
            "first": t0.isoformat() if t0 else None, "last": t1.isoformat() if t1 else None,
            "checksum": f"xxhash64:{int(xor or 0) & (2**64 - 1):016x}",
            "catalogue_items": 0 if run.catalogue is None else int(run.catalogue[S.ITEM_ID].drop_nulls().len()),
            "excluded_bot_users": run.indexed.excluded_bot_users,
            "training_events": int(run.indexed.events.count()), "engine": "spark", "ingest": run.counts.to_dict()}


def train_spark(events: str, fmt: str, out_dir: Path, config: Any = None, items: str | None = None,
                settings: SparkSettings | None = None, scfg: SparkTrainConfig | None = None,
                progress: Callable[[str], None] | None = None, make_current: bool = True, spark: Any = None) -> Path:
    """Fit the fused pipeline on Spark and write it as a new version of `out_dir` (the embedded format)."""
    from fusionrec.serving.versions import write_version

    say = progress or (lambda m: None)
    t0 = time.perf_counter()
    scfg = scfg or SparkTrainConfig()
    cfg = config or default_spark_pipeline()
    _generator_specs(cfg)
    run = prepare(events, fmt, items, settings, scfg, spark=spark, say=say)
    try:
        if run.indexed.events.limit(1).count() == 0:
            raise ConfigError(f"{events}: no event was accepted ({run.counts.rejected:,} rejected); "
                              f"the quarantine is in {run.work}/quarantine" if not run.temporary else
                              f"{events}: no event was accepted ({run.counts.rejected:,} rejected: "
                              f"{', '.join(run.counts.reasons)})")
        pipeline = fit_pipeline(run, cfg, scfg, say)
        fingerprint = data_fingerprint(run)
        quarantine = f"{run.work}/quarantine"
        if run.temporary:
            # the rejected rows outlive the scratch folder: kept beside the versions, named in the manifest
            kept = Path(out_dir) / "quarantine" / time.strftime("spark-%Y%m%dT%H%M%SZ", time.gmtime())
            kept.parent.mkdir(parents=True, exist_ok=True)
            import shutil

            shutil.move(quarantine, kept)
            quarantine = str(kept)
        fingerprint["quarantine"] = quarantine
        report = pipeline.report_
        metrics = {k: report[k] for k in METRIC_KEYS if k in report}
        # where a Spark run's time went: what an operator sizes a cluster from
        metrics["spark_stage_seconds"] = {"prepare": dict(run.seconds),
                                          "stage1": report.get("stage1_stage_seconds", {}),
                                          "stage1_total": report.get("stage1_fit_seconds"),
                                          "ranker": report.get("ranker_seconds"),
                                          "stage2": report.get("stage2_stage_seconds", {}),
                                          "stage2_total": report.get("refit_seconds")}
        say("writing the version")
        folder = write_version(pipeline, out_dir, data=fingerprint, metrics=metrics, make_current=make_current)
    finally:
        run.spark.catalog.clearCache()
        if run.temporary:
            import shutil

            shutil.rmtree(run.work, ignore_errors=True)
    log.info("trained %s on Spark in %.1f s", folder.name, time.perf_counter() - t0)
    return folder
