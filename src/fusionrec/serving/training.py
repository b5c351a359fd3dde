"""Train a new model version from the event store: `fusionrec train --store` and the server's retrain."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import polars as pl

from fusionrec import schema as S
from fusionrec.errors import FusionrecError
from fusionrec.store.event_store import EventStore

__all__ = ["data_fingerprint", "training_data", "train_version", "METRIC_KEYS"]

log = logging.getLogger("fusionrec.serving")

#: the validation numbers of the fit report that go into the manifest as the version's metrics
METRIC_KEYS = ("holdout", "train_users", "candidate_recall", "valid_ndcg@20_per_generator",
                "valid_ndcg@20_heldout_users", "valid_ndcg@20_heldout_per_generator", "ranker_gain_heldout",
                "valid_ndcg@20_out_of_fold", "ranker_guard", "blend_gain_heldout",
                "valid_ndcg@20_fused_in_sample", "ranker_trees", "fit_seconds")


def data_fingerprint(store: EventStore) -> dict[str, Any]:
    """Counts, time range and an order-independent 64-bit checksum of the store's events."""
    n, users, items, t0, t1, xor = store.con.execute(
        f"SELECT count(*), count(DISTINCT {S.USER_ID}), count(DISTINCT {S.ITEM_ID}), min({S.TIMESTAMP}), "
        f"max({S.TIMESTAMP}), bit_xor(hash({S.USER_ID}, {S.ITEM_ID}, {S.BEHAVIOR}, {S.TIMESTAMP}, {S.SEQ})) "
        "FROM events").fetchone()  # type: ignore[misc]
    return {"events": int(n), "users": int(users), "items": int(items),
            "first": t0.isoformat() if t0 else None, "last": t1.isoformat() if t1 else None,
            "checksum": f"xorhash64:{int(xor or 0):016x}", "catalogue_items": store.count("items")}


def training_data(store: EventStore, exclude_bots: bool = True) -> tuple[Any, dict[str, Any]]:
    """Interactions (events + catalogue) from the store, without the users it flags as bots."""
    from fusionrec.data.interactions import Interactions

    events = store.events(columns=Interactions.FRAME_COLUMNS)
    info: dict[str, Any] = {}
    if exclude_bots:
        bots = store.bot_users()
        if bots.height:
            events = events.filter(~pl.col(S.USER_ID).is_in(bots[S.USER_ID].implode()))
        info["excluded_bot_users"] = int(bots.height)
    if events.height == 0:
        raise FusionrecError("the store holds no events to train on; ingest some with `fusionrec ingest`")
    items = store.items()
    data = Interactions.from_frame(events, catalogue=items if items.height else None)
    info["training_events"] = int(events.height)
    return data, info


def train_version(store: EventStore, out_dir: Path, config: Any = None,
                  progress: Callable[[str], None] | None = None, make_current: bool = True) -> Path:
    """Fit the fused pipeline on the store's events and write it as a new version of `out_dir`.

    `config` is a PipelineConfig (default: the built-in one). Returns the new version folder.
    """
    from fusionrec.pipeline import FusedPipeline, PipelineConfig
    from fusionrec.serving.versions import write_version

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    say("reading events from the store")
    fingerprint = data_fingerprint(store)
    data, info = training_data(store)
    fingerprint.update(info)
    say(f"fitting the pipeline on {data.events.height:,} events, {data.n_users:,} users, {data.n_items:,} items")
    pipeline = FusedPipeline(config or PipelineConfig()).fit(data)
    report = getattr(pipeline, "report_", {}) or {}
    metrics = {k: report[k] for k in METRIC_KEYS if k in report}
    say("writing the version")
    folder = write_version(pipeline, out_dir, data=fingerprint, metrics=metrics, make_current=make_current)
    log.info("trained %s in %.1f s", folder.name, time.perf_counter() - t0)
    return folder
