"""Prometheus metrics of the server: requests, latency, model version, events, swaps, fallbacks, A/B."""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ServingMetrics", "MetricsMiddleware"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    """One registry per app, so several apps (tests) never collide in the global one."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("fusionrec_http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("fusionrec_http_request_seconds", "Request latency by route", ["method", "route"],
                                 buckets=_BUCKETS, registry=r)
        self.model_info = Gauge("fusionrec_model_info", "The serving model version (value 1)", ["version"], registry=r)
        self.events = Counter("fusionrec_events_ingested_total", "Events accepted and stored", registry=r)
        self.rejected = Counter("fusionrec_events_rejected_total", "Events rejected, by reason", ["reason"], registry=r)
        self.swaps = Counter("fusionrec_model_swaps_total", "Model versions swapped in", registry=r)
        self.refused = Counter("fusionrec_model_versions_refused_total", "Versions refused at load", registry=r)
        self.fallbacks = Counter("fusionrec_fallbacks_total", "Answers from the fallback chain", ["kind"], registry=r)
        self.impressions = Counter("fusionrec_ab_impressions_total", "A/B impressions", ["experiment", "variant"],
                                   registry=r)
        self.retrains = Counter("fusionrec_retrains_total", "Background retrains by outcome", ["outcome"], registry=r)
        self.answer_cache = Gauge("fusionrec_answer_cache_lookups", "GET /recommendations answers found in the "
                                  "answer cache (hit) or computed (miss), since the start", ["result"], registry=r)
        self.forgotten = Counter("fusionrec_users_forgotten_total", "Users forgotten", registry=r)

    def set_model(self, version: str | None) -> None:
        self.model_info.clear()
        if version:
            self.model_info.labels(version).set(1)


class MetricsMiddleware:
    """ASGI middleware timing every request under its route template (not the raw path: bounded labels)."""

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - t0)
