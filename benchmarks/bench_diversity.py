"""Diversity: MMR re-ranking of the fused top-100, the accuracy-vs-diversity curve over lambda.

For each dataset the fused pipeline (the LightGBM ranker over the generators of `configs/<key>.toml`)
is fitted ONCE on the split's training data. Each evaluated user's fused top-100 (seen items excluded
when the protocol says so) is the candidate pool; `fusionrec.rerank.Reranker` with
`RerankConfig(mmr_lambda=lam)` re-ranks the pool to a top-20 for every lambda, with a similarity
computed once per user. lambda = 1 is the plain fused ranking (asserted below against
`FusedPipeline.recommend`), lambda = 0 ignores relevance except to break ties.

Similarity, the same for MMR and for the diversity metric:
- Taobao: category (1 for two items of one category, else 0; `Reranker.category_similarity`);
  ILD@10 = share of top-10 pairs in different categories.
- Amazon Beauty has no categories, only attribute ids per item: L2-normalised TF-IDF content vectors
  (`ContentTfidf.vectors_`), ILD@10 = 1 - mean pairwise cosine of the top-10.

    .venv/bin/python benchmarks/bench_diversity.py [--quick]     # prints the Markdown section

`--quick` drops SASRec from the Beauty pipeline (it trains for ~5 minutes on the shared machine).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # a shared 2-core machine: BLAS threads only fight each other

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FUSIONREC_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "out"

# the issue's grid plus 0.6, 0.8 and 0.95, where the curve bends (with a 0/1 similarity all lambda <= 0.5 coincide)
LAMBDAS = [0.0, 0.1, 0.25, 0.5, 0.6, 0.75, 0.8, 0.9, 0.95, 1.0]
POOL = 100  # fused candidates per user that MMR chooses from
N = 20  # re-ranked list length
SAMPLE = 5000  # users evaluated on the large datasets (fixed random sample, seed 0)

RUNS: list[dict[str, Any]] = [
    # Taobao with repeats counted: with seen items excluded every model is at noise level (see the
    # quality section), so an accuracy-vs-diversity curve there would only trace noise.
    {"key": "taobao-repeats", "config": "taobao", "path": "taobao_userbehavior", "format": "taobao",
     "protocol": "temporal", "test_days": 1, "exclude_seen": False, "similarity": "category"},
    {"key": "beauty", "config": "beauty", "path": "amazon_s3rec/Beauty.txt.gz", "format": "s3rec",
     "protocol": "leave-last-out", "exclude_seen": True, "similarity": "content", "sample": SAMPLE},
]


def pipeline_params(spec: dict[str, Any], exclude_seen: bool, quick: bool) -> dict[str, Any]:
    """The `fusion` parameters of the dataset's config, trained as measured (exclude_seen), one thread each."""
    from fusionrec.evaluation.model_config import read_model_params

    params = read_model_params(ROOT / "configs" / f"{spec['config']}.toml")["fusion"]
    params = {**params, "fuser": "lambdarank", "exclude_seen": exclude_seen}
    gens = {name: dict(p) for name, p in params["generators"].items()
            if not (quick and p.get("generator", name) == "sasrec")}
    for name, p in gens.items():
        if p.get("generator", name) == "als":
            p.setdefault("num_threads", 1)  # ALS is deterministic for any thread count
    params["generators"] = gens
    return params


def content_ild(recs: np.ndarray, k: int, vectors: sp.csr_matrix) -> np.ndarray:
    """Per user 1 - mean pairwise cosine of the top-k's (L2-normalised) content vectors; 0 under 2 items.

    sum_{i != j} cos(i, j) = ||sum_i v_i||^2 - sum_i ||v_i||^2, so one sparse product serves every user.
    """
    r = recs[:, :k]
    valid = r >= 0
    m = valid.sum(axis=1).astype(np.float64)
    rows = np.broadcast_to(np.arange(len(r))[:, None], r.shape)[valid]
    pick = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, r[valid])), shape=(len(r), vectors.shape[0]))
    s = pick @ vectors
    norms = np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel()
    total = np.asarray(s.multiply(s).sum(axis=1)).ravel() - np.asarray(pick @ norms).ravel()
    pairs = m * (m - 1)
    return np.where(pairs > 0, 1.0 - total / np.maximum(pairs, 1), 0.0)


def _served_fuser(pipe: Any) -> str:
    """What the fitted pipeline serves: its ranker's objective, the blend, or the guard's generator."""
    fuser = pipe.fuser_
    if fuser.kind == "lambdarank":
        return f"LightGBM {fuser.params.get('objective', 'lambdarank')}"
    if fuser.kind == "best":
        return f"{list(pipe.generators_)[fuser.index_]} alone (the ranker guard's choice on validation)"
    return {"blend": "linear blend (the ranker guard's choice on validation)"}.get(fuser.kind, fuser.kind)


def run_one(spec: dict[str, Any], quick: bool) -> dict[str, Any]:
    from fusionrec.candidates.content import ContentTfidf
    from fusionrec.candidates.registry import make
    from fusionrec.data.loading import load_dataset
    from fusionrec.evaluation import metrics as M
    from fusionrec.evaluation.splits import make_splits
    from fusionrec.evaluation.stats import paired_tests
    from fusionrec.rerank.rules import Reranker, RerankConfig

    t_all = time.perf_counter()
    ds = load_dataset(DATA / spec["path"], spec["format"])
    split = next(make_splits(ds, spec["protocol"], test_days=spec.get("test_days"),
                             exclude_seen=spec["exclude_seen"], seed=0))
    params = pipeline_params(spec, split.exclude_seen, quick)
    full = pipeline_params(spec, split.exclude_seen, quick=False)["generators"]
    dropped = [g for g in full if g not in params["generators"]]
    t0 = time.perf_counter()
    pipe = make("fusion", params).fit(split.train)
    fit_s = time.perf_counter() - t0

    rows = np.arange(split.n_users)
    if spec.get("sample") and split.n_users > spec["sample"]:
        rows = np.sort(np.random.default_rng(0).choice(split.n_users, spec["sample"], replace=False))
    users, hist = split.users[rows], split.histories[rows]
    exclude = split.exclude[rows] if split.exclude is not None else None
    targets = split.targets[rows]
    t0 = time.perf_counter()
    pool_i, pool_s = pipe.recommend(users, hist, POOL, exclude=exclude)  # fused top-POOL, batched
    pool_s_time = time.perf_counter() - t0
    # the pool's head is exactly what the pipeline serves: one batch re-scored through recommend()
    head = min(len(rows), 1000)
    served, _ = pipe.recommend(users[:head], hist[:head], N, exclude=exclude[:head] if exclude is not None else None)
    assert np.array_equal(served, pool_i[:head, :N]), "fused pool differs from FusedPipeline.recommend"

    catalog = pipe.catalog()
    if spec["similarity"] == "category":
        cats = catalog.category
        sim_of = Reranker(RerankConfig(), catalog).category_similarity
        ild_of = lambda recs: M.intra_list_diversities(recs, [10], categories=cats)[10]  # noqa: E731
        ild_label = "category ILD@10"
        sim_note = f"category similarity ({int((cats >= 0).sum()):,} of {len(cats):,} items have a category)"
    else:
        vectors = ContentTfidf().fit(split.train).vectors_

        def sim_of(items: np.ndarray) -> np.ndarray:
            v = vectors[items]
            return (v @ v.T).toarray()

        ild_of = lambda recs: content_ild(recs, 10, vectors)  # noqa: E731
        ild_label = "content ILD@10"
        sim_note = (f"cosine of L2-normalised TF-IDF vectors of the items' attribute tokens "
                    f"({vectors.shape[1]:,} tokens; {int((np.diff(vectors.indptr) > 0).sum()):,} of "
                    f"{vectors.shape[0]:,} items have some)")

    rerankers = {lam: Reranker(RerankConfig(mmr_lambda=lam, filter_unavailable=False), catalog) for lam in LAMBDAS}
    recs = {lam: np.full((len(rows), N), -1, np.int64) for lam in LAMBDAS}
    t0 = time.perf_counter()
    for r in range(len(rows)):
        ok = (pool_i[r] >= 0) & np.isfinite(pool_s[r])
        items, scores = pool_i[r][ok], pool_s[r][ok]
        if len(items) == 0:
            continue
        sim = sim_of(items)
        for lam, rr in rerankers.items():
            out, _ = rr.rerank(items, scores, N, similarity=sim)
            recs[lam][r, :len(out)] = out
    mmr_s = time.perf_counter() - t0
    assert np.array_equal(recs[1.0], pool_i[:, :N]), "MMR at lambda = 1 changed the fused ranking"

    per_user: dict[float, np.ndarray] = {}
    table = []
    for lam in LAMBDAS:
        m = M.ranking_metrics(recs[lam], targets, [10, 20], ["ndcg", "recall", "hr"])
        ild = ild_of(recs[lam])
        per_user[lam] = np.column_stack([m["ndcg@10"], m["recall@20"], ild])
        table.append({"lambda": lam, "ndcg@10": float(m["ndcg@10"].mean()), "recall@20": float(m["recall@20"].mean()),
                      "hr@10": float(m["hr@10"].mean()), "ild@10": float(ild.mean()),
                      "coverage@20": M.catalogue_coverage(recs[lam], 20, split.n_items),
                      "changed@10": float(np.mean([len(set(a) - set(b)) for a, b in
                                                   zip(recs[lam][:, :10].tolist(), recs[1.0][:, :10].tolist())]))})
    for row in table:
        tests = paired_tests(per_user[row["lambda"]], per_user[1.0], n_bootstrap=1000, seed=0)
        row["vs_plain"] = {name: {"diff": t.diff, "ci": list(t.ci), "p_bootstrap": t.p_bootstrap}
                           for name, t in zip(("ndcg@10", "recall@20", "ild@10"), tests)}
    payload = {"key": spec["key"], "protocol": spec["protocol"], "exclude_seen": split.exclude_seen,
               "n_users_split": split.n_users, "n_users_evaluated": len(rows), "sampled": len(rows) < split.n_users,
               "n_items": split.n_items, "generators": list(params["generators"]), "fuser": _served_fuser(pipe),
               "config": f"configs/{spec['config']}.toml",
               "dropped": dropped, "similarity": sim_note, "ild_label": ild_label, "pool": POOL, "n": N,
               "mean_pool": float((pool_i >= 0).sum(axis=1).mean()), "fit_seconds": round(fit_s, 1),
               "pool_seconds": round(pool_s_time, 1), "mmr_seconds": round(mmr_s, 1),
               "mmr_ms_per_list": round(1000 * mmr_s / max(len(rows), 1) / (len(LAMBDAS) - 1), 3),
               "wall_seconds": round(time.perf_counter() - t_all, 1), "table": table}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"diversity_{spec['key']}.json").write_text(json.dumps(payload, indent=1))
    return payload


def render(res: dict[str, Any]) -> list[str]:
    seen = "seen items excluded" if res["exclude_seen"] else "repeats count (seen items stay in the pool)"
    users = (f"{res['n_users_evaluated']:,} of {res['n_users_split']:,} test users (random sample, seed 0)"
             if res["sampled"] else f"all {res['n_users_evaluated']:,} test users")
    lines = [f"### {res['key']} ({res['protocol']}, {seen}; {users}, {res['n_items']:,} items)", "",
             f"Fused pipeline `{res['config']}` with generators {', '.join(res['generators'])}"
             + (f" (QUICK: {', '.join(res['dropped'])} of the config dropped)" if res["dropped"] else "")
             + f"; fuser {res.get('fuser', 'LambdaRank')}. "
             f"MMR similarity and ILD: {res['similarity']}. Pool: fused top-{res['pool']} "
             f"(mean {res['mean_pool']:.1f} candidates per user), re-ranked to top-{res['n']}.", "",
             f"| λ | NDCG@10 | Recall@20 | HR@10 | {res['ild_label']} | coverage@20 | new items in top-10 "
             f"| ΔNDCG@10 vs λ=1 [95% CI] |", "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in res["table"]:
        d = row["vs_plain"]["ndcg@10"]
        delta = "-" if row["lambda"] == 1.0 else f"{d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
        bold = "**" if row["lambda"] == 1.0 else ""
        lines.append(f"| {bold}{row['lambda']:g}{bold} | {row['ndcg@10']:.4f} | {row['recall@20']:.4f} | "
                     f"{row['hr@10']:.4f} | {row['ild@10']:.3f} | {row['coverage@20']:.4f} | "
                     f"{row['changed@10']:.2f} | {delta} |")
    lines += ["", f"Pipeline fit {res['fit_seconds']:.0f} s, fused pool {res['pool_seconds']:.0f} s, MMR "
              f"{res['mmr_seconds']:.0f} s for {len(res['table']) - 1} λ values "
              f"({res['mmr_ms_per_list']:.2f} ms per user and λ, `Reranker.rerank` one user at a time).", ""]
    return lines


def run(quick: bool = False) -> str:
    lines = ["## Diversity: MMR over the fused ranking, accuracy vs diversity", "",
             "One fused pipeline per dataset, fitted once on the split's training data; each test user's fused "
             f"top-{POOL} is re-ranked by maximal marginal relevance (`RerankConfig(mmr_lambda=λ)`: greedily "
             "λ·relevance - (1-λ)·max similarity to the items already chosen, relevance = fused score min-max "
             "scaled within the user's pool) to a top-20. λ = 1 is the plain fused ranking (the script asserts "
             "it equals `FusedPipeline.recommend`). The same similarity drives MMR and the diversity column "
             "(ILD = 1 - mean pairwise similarity of the top-10). \"New items in top-10\": how many of the "
             "top-10 were not in the plain top-10. ΔNDCG@10: paired bootstrap over users against λ = 1. "
             "Coverage@20 counts items in any evaluated user's top-20, so it depends on the number of users. "
             "λ grid: the issue's 0, 0.1, 0.25, 0.5, 0.75, 0.9, 1 plus 0.6, 0.8 and 0.95; with a 0/1 "
             "similarity (Taobao's categories) every λ ≤ 0.5 gives the same lists, since then any item of a new "
             "category outscores any item of a category already shown (tests/test_mmr_curve.py).", ""]
    only = os.environ.get("FUSIONREC_BENCH_DATASETS")  # "" re-renders from benchmarks/out, running nothing
    for spec in RUNS:
        saved = OUT / f"diversity_{spec['key']}.json"
        if only is not None and spec["key"] not in only.split(",") and saved.exists():
            lines += render(json.loads(saved.read_text()))
            continue
        print(f"== diversity {spec['key']}", flush=True)
        lines += render(run_one(spec, quick))
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
