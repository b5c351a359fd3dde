"""The HTTP API (see CONTRACT.md): `create_app(model_dir, store, settings)` builds it; `fusionrec serve` runs it.

Read endpoints are open; writes and admin endpoints need the API key.

The recommendation and similar-item handlers are `async`: they only touch memory (histories, the
model's arrays) for a millisecond or two, so they run on the event loop itself. Handing them to the
thread pool would let eight requests contend for the GIL at once, each taking several times longer.
POST /events awaits the store's writer thread from the loop. Handlers that block on the store or on
a retrain (forget, admin) are plain functions, which FastAPI runs in its pool.
"""

from __future__ import annotations

import errno
import logging
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Optional

import duckdb

from fastapi import Body, Depends, FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fusionrec.serving.auth import WriteAuth
from fusionrec.serving.limits import BodyLimit
from fusionrec.serving.metrics import MetricsMiddleware
from fusionrec.serving.schemas import (MAX_ID, MAX_K, EventBatch, EventsResult, ForgetResult, Health,
                                       Recommendations, SessionRequest, SimilarItems)
from fusionrec.serving.settings import ServingSettings, load_settings
from fusionrec.serving.state import ServerState
from fusionrec.store.event_store import EventStore

__all__ = ["create_app"]

log = logging.getLogger("fusionrec.serving")

UserId = Annotated[str, PathParam(min_length=1, max_length=MAX_ID, description="the shop's user id")]
ItemId = Annotated[str, PathParam(min_length=1, max_length=MAX_ID, description="the shop's item id")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="how many items")]


def _field(loc: Any) -> str:
    return ".".join(str(p) for p in loc)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each field; the inputs are not echoed back (they may be large)."""
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()[:20]]
    summary = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in errors[:5])
    return JSONResponse({"detail": errors, "error": summary}, status_code=422)


def _store_refusal(exc: BaseException, outcome: str = "nothing was stored") -> HTTPException:
    """503 for a store that cannot write (read-only, disk full, I/O error, busy), naming the cause."""
    text = str(exc).lower()
    if isinstance(exc, TimeoutError):
        why = "the event store is busy"
    elif "read-only" in text or "read only" in text or getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES):
        why = "the event store is read-only (opened read-only, or its file or folder is not writable)"
    elif any(t in text for t in ("no space", "disk is full", "file too large", "quota")) or getattr(
            exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = "the disk holding the event store is full (or a size limit was reached)"
    else:
        why = f"the event store could not write ({type(exc).__name__})"
    return HTTPException(503, f"{why}; {outcome}, retry later", headers={"Retry-After": "1"})


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Only real bugs get here: log them with an id the client can quote."""
    ref = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s %s", ref, request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error", "error_id": ref}, status_code=500)


def create_app(model_dir: Path | str, store: EventStore | Path | str,
               settings: ServingSettings | None = None) -> FastAPI:
    """The FastAPI app over a model directory and an event store (path or open EventStore)."""
    settings = settings or load_settings()
    state = ServerState(model_dir, store, settings)
    auth = WriteAuth(settings.api_key, settings.allow_loopback_writes)
    writer = [Depends(auth)]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(title="fusionrec", version="0.1.0", lifespan=lifespan,
                  description="E-commerce recommendations from many models fused by a learned ranker.")
    app.state.server = state
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)

    @app.get("/health", response_model=Health, tags=["ops"])
    async def health() -> dict[str, Any]:
        model = state.current
        return {"status": "ok", "model_version": model.version if model else None, "model_loaded": model is not None,
                "retrain": state.retrain_status, "live_events": state.histories.live_events}

    @app.get("/recommendations/{user_id}", response_model=Recommendations, tags=["recommendations"])
    async def recommendations(user_id: UserId, k: K = 10,
                        category: Annotated[Optional[str], Query(max_length=MAX_ID, description="category prefix")] = None,
                        exclude: Annotated[Optional[str], Query(max_length=100 * (MAX_ID + 1),
                                                                description="comma-separated item ids")] = None,
                        price_max: Annotated[Optional[float], Query(ge=0, allow_inf_nan=False)] = None) -> Response:
        raw_id, user_id = user_id, state.stored_id(user_id)  # pseudonymised at the edge when configured
        model, assigned = state.model_for(user_id)
        excl = [x for x in (exclude or "").split(",") if x][:100]
        items = state.recommender.for_user(model, user_id, k, category=category or None, exclude_ids=excl,
                                           price_max=price_max)
        if assigned is not None:
            exp, v = assigned
            state.tracker.impression(exp.name, v.name, user_id, [it["item_id"] for it in items])
            state.metrics.impressions.labels(exp.name, v.name).inc()
        return JSONResponse({"user_id": raw_id, "model_version": model.version if model else None, "items": items})

    @app.post("/recommendations/session", response_model=Recommendations, tags=["recommendations"])
    async def session_recommendations(body: SessionRequest) -> Response:
        model = state.current
        items = state.recommender.for_session(model, body.items, body.k)
        return JSONResponse({"user_id": None, "model_version": model.version if model else None, "items": items})

    @app.get("/items/{item_id}/similar", response_model=SimilarItems, tags=["recommendations"])
    async def similar_items(item_id: ItemId, k: K = 10) -> Response:
        model = state.current
        items = state.recommender.similar(model, item_id, k)
        return JSONResponse({"item_id": item_id, "model_version": model.version if model else None, "items": items})

    @app.post("/events", response_model=EventsResult, dependencies=writer, tags=["events"])
    async def post_events(body: Annotated[EventBatch, Body()]) -> dict[str, Any]:
        # dicts of the fields given, fresh from validation
        events = body if isinstance(body, list) else [body]
        try:
            for e in events:
                if e.get("user_id"):
                    e["user_id"] = state.stored_id(e["user_id"])
            result = await state.ingest(events)
        except (TimeoutError, OSError, duckdb.Error) as exc:  # nothing was acknowledged: the client may retry
            log.error("events not stored: %s", exc)
            raise _store_refusal(exc) from None
        return {"accepted": len(result.accepted), "rejected": result.rejected}

    @app.delete("/users/{user_id}", response_model=ForgetResult, dependencies=writer, tags=["users"])
    def forget_user(user_id: UserId) -> dict[str, Any]:
        try:
            return {**state.forget(state.stored_id(user_id)), "user_id": user_id}
        except (TimeoutError, OSError, duckdb.Error) as exc:  # the store kept the user: say so, the client retries
            log.error("forget not done: %s", exc)
            raise _store_refusal(exc, "the user's events were not deleted") from None

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/experiments/{name}", tags=["experiments"])
    def experiment(name: Annotated[str, PathParam(max_length=MAX_ID)]) -> dict[str, Any]:
        report = state.tracker.report(name, state.variant_versions(name))
        if report is None:
            raise HTTPException(404, f"no experiment named {name!r}; configured: {sorted(state.tracker.experiments)}")
        return report

    @app.post("/admin/retrain", dependencies=writer, tags=["admin"], status_code=202)
    def retrain(wait: Annotated[bool, Query(description="answer when the new version serves")] = False
                ) -> Response:
        out = state.retrain(wait=wait)
        if not out.get("started"):
            return JSONResponse({"detail": "a retrain is already running", **out}, status_code=409)
        return JSONResponse(out, status_code=200 if wait else 202)

    @app.get("/admin/retrain", dependencies=writer, tags=["admin"])
    def retrain_status() -> dict[str, Any]:
        return state.retrain_status

    @app.post("/admin/reload", dependencies=writer, tags=["admin"])
    def reload() -> dict[str, Any]:
        return state.reload(force=False)

    from fusionrec.ui import mount_ui  # the dashboard and storefront at /ui: reads, plus the endpoints above

    mount_ui(app, state)
    return app
