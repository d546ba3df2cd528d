"""Every request gets an id, an access log line and its place in the metrics.

A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``, which
would buffer each response body in a second task.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import request_id
from app.metrics import Metrics

logger = logging.getLogger("app.access")

REQUEST_ID_HEADER = "X-Request-ID"
_PROBES = frozenset({"/healthz", "/metrics"})
_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")  # a caller's id is kept only if it cannot forge a log line


class AccessMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get(REQUEST_ID_HEADER, "")
        rid = given if _ACCEPTABLE_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status, sent = 500, 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.request_seconds.labels(method, route).observe(elapsed)
            client = scope.get("client")
            quiet = route in _PROBES and status == 200  # a probe every few seconds would drown the real traffic
            logger.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000.0, 1),
                    "bytes_in": int(headers.get("content-length") or 0),
                    "bytes_out": sent,
                    "client": client[0] if client else None,
                    "user_agent": headers.get("user-agent"),
                },
            )
            request_id.reset(token)
