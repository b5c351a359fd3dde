"""Compare fused-pipeline settings on a dataset's validation split only (never its test targets).

The pipeline variants are fitted on the validation split's training part (which the pipeline splits
again for its own ranker labels) and scored on the validation targets, each user paired across variants;
the first variant is the reference of the paired tests. This is how the `[pipeline]` settings of
configs/gowalla.toml, ml-1m.toml, amazoncds.toml and beauty.toml (ranker objective, ranker users) were chosen.

    .venv/bin/python benchmarks/fusion_validation.py ml-1m \\
        '{"blend": {"model": "blend"}, "xendcg": {"model": "fusion", "ranker": {"objective": "rank_xendcg"}}}'

A variant is {"model": "fusion" | "blend" | "rrf" | "best" | a generator, plus any `[pipeline]` keys to
override; a "ranker" table is merged into the config's}. Generators fitted once are reused by later
variants of the same run when their data and parameters match.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np

from bench_quality import DATA, RUNS, config_of


def main(key: str, variants: dict[str, dict[str, Any]]) -> None:
    from fusionrec.candidates.registry import make
    from fusionrec.data.loading import load_dataset
    from fusionrec.evaluation import metrics as M
    from fusionrec.evaluation.splits import make_splits
    from fusionrec.evaluation.stats import paired_test

    spec = next((r for r in RUNS if r["key"] == key), None)
    if spec is None:
        sys.exit(f"unknown dataset {key!r}; one of {', '.join(r['key'] for r in RUNS)}")
    params = config_of(spec)[1]
    ds = load_dataset(DATA / spec["path"], spec["format"])
    split = next(iter(make_splits(ds, spec["protocol"], test_days=spec.get("test_days"),
                                  exclude_seen=spec.get("exclude_seen", True))))
    valid = split.valid
    if valid is None:
        sys.exit(f"{key}: the {spec['protocol']} split has no validation split")
    print(f"{key}: validation = {valid.description}", flush=True)
    per_user: dict[str, dict[str, np.ndarray]] = {}
    for name, variant in variants.items():
        variant = dict(variant)
        model = variant.pop("model")
        p = dict(params.get(model, {}))
        if "ranker" in variant:
            p["ranker"] = {**p.get("ranker", {}), **variant.pop("ranker")}
        p.update(variant)
        t0 = time.perf_counter()
        fitted = make(model, p).fit(valid.train)
        items, scores = fitted.recommend(valid.users, valid.histories, 20, exclude=valid.exclude)
        per_user[name] = M.ranking_metrics(np.where(np.isfinite(scores), items, -1), valid.targets, [10, 20],
                                           metrics=("ndcg", "recall", "hr"))
        report = getattr(fitted, "report_", None) or {}
        extra = "".join(f"; {k} {report[k]}" for k in ("ranker_trees", "ranker_guard") if k in report)
        print(f"{name}: " + ", ".join(f"{m} {per_user[name][m].mean():.4f}" for m in ("ndcg@10", "ndcg@20", "recall@20"))
              + f" (fit {time.perf_counter() - t0:.0f} s{extra})", flush=True)
    names = list(per_user)
    for name in names[1:]:
        for metric in ("ndcg@10", "recall@20"):
            t = paired_test(per_user[name][metric], per_user[names[0]][metric])
            print(f"  {name} vs {names[0]}, {metric}: {t.diff:+.4f} (paired t-test p = {t.p_ttest:.3g})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], json.loads(sys.argv[2]))
