"""Ranking speed of the fused pipeline: 500 candidates for one user, features included; whole-pipeline fit on Taobao.

Targets (issue #5): ranking 500 candidates for one user in under 5 ms on this machine, features included;
fitting the whole fused pipeline on Taobao UserBehavior in under 5 minutes.

For the 500-candidate timing the pipeline (configs/demo.toml generators) is fitted on a synthetic shop;
each timed user's candidate table is the union of every generator's top-N, cut to exactly 500 pairs.
Timed separately, one user at a time, the ranker's single thread as in serving:
features (per-generator, item, user, user x item) -> LightGBM predict -> top-k. Candidate generation
and the whole online path (`recommend_query`: candidates, features, ranker, filters, MMR-free rerank,
explanations) are reported next to it.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
N_CANDIDATES = 500


def _shop(quick: bool):
    from fusionrec.data.loading import load_dataset
    from fusionrec.data.synthetic import ShopConfig, generate_shop, write_shop

    cfg = ShopConfig(n_users=5000 if quick else 20000, n_items=2000 if quick else 5000,
                     n_events=200_000 if quick else 1_000_000, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        write_shop(generate_shop(cfg), Path(tmp))
        return load_dataset(Path(tmp), "fusionrec"), cfg


def _cut(table, keep: np.ndarray):
    from fusionrec.ranking.fusers import CandidateTable

    return CandidateTable(rows=table.rows[keep], items=table.items[keep], scores=table.scores[keep],
                          ranks=table.ranks[keep], generators=table.generators, n_rows=table.n_rows)


def _pct(xs: list[float]) -> str:
    a = np.asarray(xs) * 1000
    return f"{np.median(a):.2f} | {np.percentile(a, 95):.2f} | {np.percentile(a, 99):.2f}"


def _ranking(quick: bool) -> list[str]:
    from fusionrec.candidates.base import Query
    from fusionrec.evaluation.model_config import read_model_params
    from fusionrec.evaluation.splits import make_splits
    from fusionrec.pipeline import FusedPipeline, PipelineConfig, item_similarity_of
    from fusionrec.ranking.fusers import top_per_row
    from fusionrec.serving.model import one_thread_per_request

    ds, shop = _shop(quick)
    split = next(iter(make_splits(ds, "temporal", test_days=7, exclude_seen=True)))
    fusion = dict(read_model_params(ROOT / "configs" / "demo.toml")["fusion"])
    t0 = time.perf_counter()
    pipe = FusedPipeline(PipelineConfig(**fusion)).fit(split.train)
    fit_s = time.perf_counter() - t0
    one_thread_per_request(pipe)
    served_cfg = pipe.cfg
    wide_cfg = dataclasses.replace(served_cfg, n_candidates=300)  # a union of >= 500 pairs for most users

    rng = np.random.default_rng(0)
    known = np.flatnonzero(split.users >= 0)
    rows = rng.choice(known, min(300 if quick else 1000, len(known)), replace=False)
    cand_t, feat_t, pred_t, top_t, rank_t, online_t, sizes = [], [], [], [], [], [], []
    for i, r in enumerate(rows):
        users = split.users[r:r + 1]
        hist = split.histories[r]
        ex = split.exclude[r] if split.exclude is not None else None
        pipe.cfg = wide_cfg
        t0 = time.perf_counter()
        table = pipe._candidate_table(pipe.generators_, users, hist, ex)
        t1 = time.perf_counter()
        pipe.cfg = served_cfg
        if len(table.rows) < N_CANDIDATES:
            continue
        table = _cut(table, np.sort(rng.choice(len(table.rows), N_CANDIDATES, replace=False)))
        t2 = time.perf_counter()
        X = pipe._features(table, users, hist, pipe.item_features_, pipe.user_features_,
                           item_similarity_of(pipe.generators_))
        t3 = time.perf_counter()
        fused = pipe.fuser_.predict(X, table)
        t4 = time.perf_counter()
        top_per_row(table.rows, table.items, fused, 1, 10)
        t5 = time.perf_counter()
        q = Query(user=int(users[0]), history=hist.indices.astype(np.int64), history_weights=hist.data,
                  exclude=ex.indices.astype(np.int64) if ex is not None else None)
        t6 = time.perf_counter()
        pipe.recommend_query(q, 10)
        t7 = time.perf_counter()
        if i < 20:  # warm-up: first calls build caches and page in the model
            continue
        sizes.append(len(table.rows))
        cand_t.append(t1 - t0)
        feat_t.append(t3 - t2)
        pred_t.append(t4 - t3)
        top_t.append(t5 - t4)
        rank_t.append(t5 - t2)
        online_t.append(t7 - t6)
    n_feat = len(pipe.feature_names(list(pipe.generators_)))
    med = float(np.median(rank_t) * 1000)
    return [
        f"### Ranking {N_CANDIDATES} candidates for one user",
        "",
        f"Synthetic shop: {shop.n_users:,} users, {shop.n_items:,} items, {shop.n_events:,} events; temporal split "
        f"(last 7 days test). Pipeline: {', '.join(pipe.generators_)} fused by LightGBM LambdaRank "
        f"({pipe.fuser_.trees} trees, {n_feat} features, one thread), fitted in {fit_s:.0f} s. "
        f"{len(rank_t)} test users timed one at a time, each with exactly {N_CANDIDATES} candidate pairs "
        f"(a random {N_CANDIDATES} of the union of every generator's top 300).",
        "",
        "| step (one user) | median ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| features for {N_CANDIDATES} pairs | {_pct(feat_t)} |",
        f"| LightGBM predict, {N_CANDIDATES} rows | {_pct(pred_t)} |",
        f"| top-10 of the fused scores | {_pct(top_t)} |",
        f"| **rank {N_CANDIDATES} candidates (features + predict + top-k)** | **{_pct(rank_t)}** |",
        f"| candidate generation (all generators, top 300 each) | {_pct(cand_t)} |",
        f"| whole online path, `recommend_query` (candidates at the configured {served_cfg.n_candidates} each, features, ranker, "
        f"filters, explanations) | {_pct(online_t)} |",
        "",
        f"Target: ranking {N_CANDIDATES} candidates < 5 ms: **{'met' if med < 5 else 'not met'}** "
        f"(median {med:.2f} ms).",
    ]


def _taobao_fit() -> list[str]:
    from fusionrec.data.interactions import Interactions
    from fusionrec.data.loading import load_dataset
    from fusionrec.evaluation.model_config import read_model_params
    from fusionrec.pipeline import FusedPipeline, PipelineConfig, clear_fit_cache

    path = DATA / "taobao_userbehavior"
    if not path.exists():
        return ["### Fitting the fused pipeline on Taobao", "", f"skipped: {path} is missing"]
    t0 = time.perf_counter()
    ds = load_dataset(path, "taobao")
    data = Interactions.from_frame(ds.events, catalogue=ds.items)
    t1 = time.perf_counter()
    fusion = dict(read_model_params(ROOT / "configs" / "taobao.toml")["fusion"])
    clear_fit_cache()
    pipe = FusedPipeline(PipelineConfig(**fusion)).fit(data)
    t2 = time.perf_counter()
    rep = pipe.report_
    total = t2 - t0
    return [
        "### Fitting the whole fused pipeline on Taobao UserBehavior",
        "",
        f"All {len(ds.events):,} accepted events ({data.n_users:,} users, {data.n_items:,} items), "
        f"`configs/taobao.toml` ({', '.join(pipe.generators_)}; LightGBM LambdaRank): load + validate "
        f"{t1 - t0:.1f} s, fit {t2 - t1:.1f} s (stage 1: generators on the data before the validation cut "
        f"{rep.get('stage1_fit_seconds', '?')} s, ranker {rep.get('ranker_seconds', '?')} s; refit on all data "
        f"{rep.get('refit_seconds', '?')} s). Ranker trained on {rep.get('train_users', '?')} users, "
        f"candidate recall {rep.get('candidate_recall', '?')}.",
        "",
        f"Target: under 5 minutes: **{'met' if total < 300 else 'not met'}** ({total:.0f} s in all).",
    ]


def run(quick: bool = False) -> str:
    parts = ["## Fusion speed: ranking candidates and fitting the pipeline", ""]
    parts += _ranking(quick) + [""] + _taobao_fit()
    return "\n".join(parts)


if __name__ == "__main__":
    print(run(quick=True))
