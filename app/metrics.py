"""Prometheus metrics of one app, in its own registry (so tests can build many apps).

Routes are labelled by their template, never the raw path, and rejections by
the error code clients see, so every label has a handful of values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from app.runner import Runner

_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0)
_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # memory, CPU time, open files of this process
        self.requests = Counter(
            "bgremove_http_requests", "HTTP requests answered, by route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.request_seconds = Histogram(
            "bgremove_http_request_duration_seconds", "Time from request to the last byte of the response.",
            ["method", "route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "bgremove_stage_duration_seconds", "Time per pipeline stage of one image (model = inference).",
            ["stage"], buckets=_STAGE_BUCKETS, registry=self.registry,
        )
        self.images = Counter("bgremove_images_processed", "Images cut out successfully.", registry=self.registry)
        self.rejected = Counter(
            "bgremove_images_rejected", "Requests refused, by the error code returned.", ["reason"], registry=self.registry
        )
        self.in_flight = Gauge("bgremove_in_flight", "Images being processed by a worker now.", registry=self.registry)
        self.waiting = Gauge("bgremove_queue_depth", "Requests admitted and waiting for a worker.", registry=self.registry)
        self.body_bytes = Gauge(
            "bgremove_request_body_bytes", "Bytes of request bodies in memory, received or on their way.",
            registry=self.registry,
        )
        self.jobs_stopped = Counter(
            "bgremove_jobs_stopped", "Jobs stopped unfinished (client gone, or shutting down), by whether they had started.",
            ["when"], registry=self.registry,
        )
        self.startup_seconds = Gauge(
            "bgremove_startup_duration_seconds", "Model load and warm-up times of this process.", ["phase"], registry=self.registry
        )

    def watch(self, runner: Runner) -> None:
        """Read the pool's gauges at scrape time, so they are never stale."""
        self.in_flight.set_function(lambda: runner.in_flight)
        self.waiting.set_function(lambda: runner.waiting)
        self.body_bytes.set_function(lambda: runner.body_bytes)

    def observe_image(self, timings_ms: dict[str, float]) -> None:
        self.images.inc()
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(stage).observe(ms / 1000.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
