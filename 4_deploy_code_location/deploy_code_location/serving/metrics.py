"""The server's Prometheus metrics, and the ASGI middleware that counts every request by route and status.

Requests are labelled by route template (`/v1/models/{model}`), never by raw path: a scan of unknown URLs adds one
series (`route="unmatched"`), not one per URL.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ServerMetrics:
    """Every metric of one server, in its own registry."""

    def __init__(self):
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # process_cpu_seconds_total and friends
        self.requests = Counter("http_requests", "Requests by route and status", ["route", "status"], registry=registry)
        self.generate_requests = Counter(
            "generate_requests", "Requests to /generate by status", ["status"], registry=registry
        )
        self.latency = Histogram(
            "generate_latency_seconds",
            "Latency of successful generation requests, first byte to last token",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.first_token = Histogram(
            "time_to_first_token_seconds",
            "From a request's arrival in the queue to its first token",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.batch_size = Histogram(
            "decode_batch_size",
            "Sequences sharing one decoding step",
            registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.tokens = Counter("generated_tokens", "Tokens generated", registry=registry)
        self.stalled = Counter(
            "stalled_streams", "Streams cancelled because their client stopped reading", registry=registry
        )

    def track_batcher(self, stats) -> None:
        """Gauges read from the batcher's `stats` (a callable) at each scrape."""
        Gauge("queue_depth", "Sequences waiting to decode", registry=self.registry).set_function(lambda: stats().queued)
        Gauge("active_sequences", "Sequences decoding", registry=self.registry).set_function(lambda: stats().active)
        Gauge(
            "evicted_rows", "Rows given up to a request with fewer (fair sharing), since start", registry=self.registry
        ).set_function(lambda: stats().evictions)
        Gauge("decode_thread_cpu_seconds", "CPU time of the decoding thread", registry=self.registry).set_function(
            lambda: stats().cpu_seconds
        )

    def finished(self, job, seconds: float) -> None:
        """Count a decoding job that ended: its tokens, its latency and time to first token."""
        self.tokens.inc(job.completion_tokens)
        self.latency.observe(seconds)
        if job.first_token_seconds is not None:
            self.first_token.observe(job.first_token_seconds)


class RequestCounter:
    """ASGI middleware: counts every HTTP request by route template and status; an exception from the app is
    counted and answered as a 500 in the path's error shape instead of a bare one."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = False

        async def counted(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            if started:
                raise
            await _internal_error(scope, send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            if route == "/generate":
                self.metrics.generate_requests.labels(status=str(status)).inc()


async def _internal_error(scope: Scope, send: Send) -> None:
    from deploy_code_location.serving.errors import error_response

    response = error_response(scope["path"], 500, "internal error", code="internal_error")
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def metric_value(text: str, name: str) -> float:
    """One unlabelled sample of Prometheus text (tests and benchmarks read /metrics with it)."""
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith(f"{name} ")))
