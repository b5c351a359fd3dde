"""Everything a running server holds: the store and its writer, histories, the serving model(s), A/B, retrains.

A request reads `state.current` once and uses that model to the end, so a hot swap is a single
reference assignment: requests in flight finish on the old model, the next ones get the new one.
A version is validated, loaded and warmed up before it is swapped in; one that fails is refused
with a logged reason and the previous one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import duckdb

from fusionrec.config import thread_count
from fusionrec.rerank.rules import RerankConfig
from fusionrec.serving.ab import Experiment, ExperimentTracker, Variant
from fusionrec.serving.answer_cache import AnswerCache
from fusionrec.serving.events import EventWriter, WriteResult, store_reader
from fusionrec.privacy import stored_user_id
from fusionrec.serving.forget import forget_in_store, forget_in_versions, pseudonym
from fusionrec.serving.histories import HistoryStore
from fusionrec.serving.memory import limit_malloc_arenas, release_memory, trim_heap
from fusionrec.serving.metrics import ServingMetrics
from fusionrec.serving.model import ServingModel
from fusionrec.serving.recommender import Recommender
from fusionrec.serving.settings import ServingSettings
from fusionrec.serving.versions import (ModelLoadError, load_newest_valid, load_version, read_current, set_current,
                                       version_path)
from fusionrec.store.event_store import EventStore

__all__ = ["ServerState"]

log = logging.getLogger("fusionrec.serving")


class ServerState:
    """The shared state behind the HTTP API."""

    def __init__(self, model_dir: Path | str, store: EventStore | Path | str, settings: ServingSettings) -> None:
        from fusionrec.store.open import open_store

        limit_malloc_arenas()  # before this server starts its threads
        self.model_dir = Path(model_dir)
        self.settings = settings
        self.metrics = ServingMetrics()
        self.store = store if isinstance(store, EventStore) else open_store(store)
        self.histories = HistoryStore.from_store(self.store, max_events=settings.history_max_events)
        # the histories are loaded (a scan of every event, on all threads); from now on the store's work
        # is small writes and reads beside requests (ServingSettings.store_threads)
        self.store.con.execute(f"SET threads={settings.store_threads or thread_count()}")
        self.writer = EventWriter(self.store)
        self.rerank = RerankConfig(repurchase_days=settings.repurchase_days)
        self.recommender = Recommender(self.histories, settings.repurchase_days,
                                       on_fallback=lambda kind: self.metrics.fallbacks.labels(kind).inc(),
                                       cache=AnswerCache(settings.answer_cache_seconds, settings.answer_cache_users))
        cache = self.recommender.cache
        self.metrics.answer_cache.labels("hit").set_function(lambda: cache.hits)
        self.metrics.answer_cache.labels("miss").set_function(lambda: cache.misses)
        self.tracker = ExperimentTracker(settings.experiments)
        self.current: ServingModel | None = None
        self.variant_models: dict[tuple[str, str], ServingModel] = {}
        self.retrain_status: dict[str, Any] = {"state": "idle"}
        self._retrain_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._refused: set[tuple[str, float]] = set()
        self._forgotten_during_retrain: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._readers: set[EventStore] = set()  # cursors in use by other threads (retrain, dashboard)
        self._readers_changed = threading.Condition()
        self._closing = False
        loaded, problems = load_newest_valid(self.model_dir)
        for p in problems:
            self.metrics.refused.inc()
            log.error("refused at start: %s", p)
        if loaded is not None:
            self._install(self._build(loaded))
        else:
            log.warning("%s: no loadable model version; answering from the fallback chain until one is trained",
                        self.model_dir)
        self._load_variants()
        if settings.reload_poll_seconds:
            self._start(self._poll_loop, "fusionrec-reload-poll")
        if settings.retrain_every_minutes:
            self._start(self._schedule_loop, "fusionrec-retrain-schedule")
        if settings.trim_heap_seconds:
            self._start(self._trim_loop, "fusionrec-heap-trim")

    # -- models ---------------------------------------------------------------------------------
    def _build(self, loaded: Any, learned_through: int = 0) -> ServingModel:
        model = ServingModel(loaded, self.histories, self.rerank, learned_through)
        model.warm_up()
        return model

    def _install(self, model: ServingModel) -> None:
        with self._swap_lock:
            self.current = model  # the swap: one reference assignment
        self.metrics.set_model(model.version)
        self.metrics.swaps.inc()
        log.info("serving model version %s", model.version)

    def _load_variants(self) -> None:
        for exp in self.settings.experiments:
            for v in exp.variants:
                if v.model == "current":
                    continue
                try:
                    # an absolute path is the operator's explicit choice; anything else must be a version
                    # name inside the model directory (no `..`, no symlink out of it)
                    path = Path(v.model)
                    folder = path if path.is_absolute() else version_path(self.model_dir, v.model)
                    self.variant_models[(exp.name, v.name)] = self._build(load_version(folder))
                except ModelLoadError as exc:
                    self.metrics.refused.inc()
                    log.error("experiment %s variant %s: refused (%s); it is served by the current model",
                              exp.name, v.name, exc)

    def model_for(self, user_id: str | None) -> tuple[ServingModel | None, tuple[Experiment, Variant] | None]:
        """The model that answers this user (their A/B variant's, else the current one) and the assignment."""
        if user_id is not None and self.tracker.experiments:
            assigned = self.tracker.assignment(user_id)
            if assigned is not None:
                exp, v = assigned
                return self.variant_models.get((exp.name, v.name), self.current), assigned
        return self.current, None

    def variant_versions(self, name: str) -> dict[str, str | None]:
        exp = self.tracker.experiments.get(name)
        if exp is None:
            return {}
        cur = self.current.version if self.current else None
        return {v.name: (m.version if (m := self.variant_models.get((name, v.name))) else cur) for v in exp.variants}

    def reload(self, force: bool = False) -> dict[str, Any]:
        """Swap in the version MODEL_DIR/current names when it differs from the serving one (or `force`).
        One reload at a time: the poll loop and POST /admin/reload both loaded a new version at once."""
        with self._reload_lock:
            return self._reload(force)

    def _reload(self, force: bool) -> dict[str, Any]:
        name = read_current(self.model_dir)
        serving = self.current.version if self.current else None
        if name is None or (name == serving and not force):
            return {"model_version": serving, "swapped": False}
        folder = self.model_dir / name
        key = (name, _mtime(folder / "manifest.json"))
        if key in self._refused and not force:
            return {"model_version": serving, "swapped": False, "error": "refused earlier"}
        try:
            model = self._build(load_version(version_path(self.model_dir, name)))
        except ModelLoadError as exc:
            self._refused.add(key)
            self.metrics.refused.inc()
            log.error("refused model version: %s; %s keeps serving", exc, serving)
            return {"model_version": serving, "swapped": False, "error": str(exc)}
        self._install(model)
        return {"model_version": model.version, "swapped": True}

    def _reload_all(self) -> None:
        """Reload every loaded version from disk (after forget edited their files)."""
        if self.current is not None:
            try:
                self._install(self._build(load_version(self.current.path), self.current.learned_through))
            except ModelLoadError as exc:
                log.error("reload after forget failed: %s", exc)
        for key, model in list(self.variant_models.items()):
            try:
                self.variant_models[key] = self._build(load_version(model.path), model.learned_through)
            except ModelLoadError as exc:
                log.error("reload of variant %s after forget failed: %s", key, exc)

    # -- retraining -----------------------------------------------------------------------------
    def retrain(self, wait: bool = False) -> dict[str, Any]:
        """Train a new version from the store and swap it in; in the background unless `wait`."""
        if not self._retrain_lock.acquire(blocking=False):
            return {"started": False, **self.retrain_status}
        self.retrain_status = {"state": "running", "started_at": time.time()}
        self._forgotten_during_retrain = []
        if wait:
            self._retrain_job()
            return {"started": True, **self.retrain_status}
        t = threading.Thread(target=self._retrain_job, name="fusionrec-retrain", daemon=True)
        t.start()
        return {"started": True, **self.retrain_status}

    def _retrain_job(self) -> None:
        from fusionrec.pipeline import PipelineConfig, load_pipeline_config
        from fusionrec.serving.retrain_process import train_in_child

        t0 = time.perf_counter()
        try:
            if self.settings.pipeline is not None:
                cfg = load_pipeline_config(self.settings.pipeline)
            elif self.current is not None:
                cfg = replace(self.current.pipeline.cfg)
            else:
                cfg = PipelineConfig()
            # every live event up to the mark is committed, so the snapshot (copied after it) holds it
            mark = self.histories.live_mark()
            folder = train_in_child(self._snapshot, self.model_dir, cfg)  # in a child, on a snapshot
            for user_id in list(self._forgotten_during_retrain):  # forgotten after the snapshot was read
                forget_in_versions(folder, user_id)
            # the snapshot's live events are learned: their users stop folding in on every request
            model = self._build(load_version(folder), learned_through=mark)
            set_current(self.model_dir, folder.name)  # only a version that loaded becomes current
            self._install(model)
            # the learned live events join the compact stored histories: memory stays bounded by the
            # events since the last retrain, however long the server runs
            moved = self.histories.rebase(mark)
            self.retrain_status = {"state": "idle", "last": "ok", "version": model.version,
                                   "seconds": round(time.perf_counter() - t0, 2), "finished_at": time.time(),
                                   "live_events_rebased": moved}
            self.metrics.retrains.labels("ok").inc()
        except Exception as exc:
            log.exception("retrain failed; the serving version is kept")
            self.retrain_status = {"state": "idle", "last": "failed", "error": f"{type(exc).__name__}: {exc}",
                                   "finished_at": time.time()}
            self.metrics.retrains.labels("failed").inc()
        finally:
            self._retrain_lock.release()
            release_memory()

    def _snapshot(self, path: Path) -> None:
        """Copy the store for a retrain; the private cursor is held only while copying."""
        with self.reading() as reader:
            reader.snapshot(path)

    # -- events and forgetting ------------------------------------------------------------------
    def stored_id(self, user_id: str) -> str:
        """The id a raw user id is stored under: its keyed HMAC when pseudonymisation is on."""
        return stored_user_id(user_id, self.settings.pseudonym_key)

    async def ingest(self, events: list[dict[str, Any]], timeout: float = 30.0) -> WriteResult:
        """Store events durably, then make them part of the users' histories, trending and A/B outcomes.

        Awaited on the event loop: the writer thread commits while other requests are served, with no
        thread-pool hop in between."""
        # shielded: a timeout answers 503 but never cancels a commit the writer may be doing
        result: WriteResult = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.writer.submit(events))),
                                                     timeout)
        if result.accepted:
            self.histories.append(result.accepted)
            if self.tracker.experiments:  # events are attributed to the impressions of experiments
                now = time.time()
                for user, item, behavior, _ in result.accepted:
                    self.tracker.event(user, item, behavior, now)
            self.metrics.events.inc(len(result.accepted))
        for r in result.rejected:
            self.metrics.rejected.labels(r["reason"].split(":", 1)[0][:60]).inc()
        return result

    def forget(self, user_id: str) -> dict[str, Any]:
        subject = pseudonym(user_id, self.settings.pseudonym_key)
        if self._retrain_lock.locked():
            self._forgotten_during_retrain.append(user_id)
        self.histories.forget(user_id)
        self.recommender.cache.forget(user_id)
        self.tracker.forget(user_id)
        for model in [self.current, *self.variant_models.values()]:  # fold-ins cached from their history
            if model is not None:
                model.forget_cached()
        versions = forget_in_versions(self.model_dir, user_id) if self.model_dir.is_dir() else []
        n = self.writer.call(lambda con: forget_in_store(con, user_id, subject,
                                                         {"model_versions_updated": len(versions)}))
        if versions:
            self._reload_all()
        self.metrics.forgotten.inc()
        return {"user_id": user_id, "events_deleted": n, "model_versions_updated": versions}

    # -- background loops -------------------------------------------------------------------------
    def _start(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.settings.reload_poll_seconds or 10.0):
            if self._retrain_lock.locked():
                continue  # the retrain swaps its own version in
            try:
                self.reload()
            except Exception:
                log.exception("model reload poll failed")

    def _trim_loop(self) -> None:
        while not self._stop.wait(self.settings.trim_heap_seconds or 60.0):
            trim_heap()

    def _schedule_loop(self) -> None:
        every = float(self.settings.retrain_every_minutes or 0) * 60.0
        while not self._stop.wait(every):
            self.retrain()

    @contextmanager
    def reading(self) -> Iterator[EventStore]:
        """A private cursor of the store for reads in another thread; `close` interrupts and awaits it."""
        with self._readers_changed:
            if self._closing:
                raise RuntimeError("the server is shutting down")
            reader = store_reader(self.store)
            self._readers.add(reader)
        try:
            yield reader
        finally:
            with self._readers_changed:
                self._readers.discard(reader)
                reader.con.close()
                self._readers_changed.notify_all()

    def close(self) -> None:
        with self._readers_changed:  # no new readers; running ones (a long dashboard scan) stop now
            self._closing = True
            for reader in self._readers:
                try:
                    reader.con.interrupt()
                except duckdb.Error:
                    pass
            self._readers_changed.wait_for(lambda: not self._readers, timeout=30)
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        with self._retrain_lock:  # let a running retrain finish before the store goes
            pass
        self.writer.close()
        self.store.close()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
