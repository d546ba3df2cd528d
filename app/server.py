"""uvicorn's configuration, built from the settings in one place.

``python -m app`` serves with it and the tests' servers are built by it, so the tests run under the
limits production has: the header deadline and sizes, the connection cap, the keep-alive timeout,
the proxies trusted.
"""

from __future__ import annotations

import logging
import resource
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from app.protocol import ConnectionLimits, HttpProtocol
from app.settings import Settings

logger = logging.getLogger("app")

FD_RESERVE = 128  # descriptors besides the connections: the listener, model files, image_url fetches, a body skip
DEFAULT_BACKLOG = 2048  # uvicorn's: pending connections, and how many one wake-up of the listener may accept


class ServerConfig(uvicorn.Config):
    """uvicorn's Config, carrying the limits our protocol holds each connection to."""

    def __init__(self, app: ASGIApp, connection_limits: ConnectionLimits, **options: Any) -> None:
        super().__init__(app, **options)
        self.connection_limits = connection_limits


def uvicorn_config(app: ASGIApp, settings: Settings, **overrides: Any) -> ServerConfig:
    """The service's uvicorn config; ``overrides`` replace uvicorn options (tests quieten the log, shorten timers)."""
    max_connections, backlog = connection_budget(settings.max_connections, open_file_limit())
    limits = ConnectionLimits(
        header_timeout_seconds=settings.header_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
        max_connections=max_connections,
    )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": HttpProtocol,  # httptools, a runtime dependency: no quiet fall-back to h11
        "ws": "none",  # no route speaks WebSocket: an upgrade is never handed to another protocol's limits
        "log_level": settings.log_level,
        "log_config": None,  # ours, from configure_logging
        "access_log": False,  # ours carry the request id and more
        "timeout_graceful_shutdown": settings.graceful_timeout_seconds,
        "timeout_keep_alive": settings.keep_alive_seconds,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: any local client could then
        # pick its own address, and its own rate-limit bucket, per request.
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": list(settings.forwarded_allow_ips),
        "backlog": backlog,
        **overrides,
    }
    return ServerConfig(app, limits, **options)


def open_file_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> int:
    """Lift the soft limit on open descriptors to the hard one; each connection holds one. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # macOS refuses more than its own OPEN_MAX: keep what there is
            pass
    return open_file_limit()


def connection_budget(wanted: int, fd_limit: int) -> tuple[int, int]:
    """The connection cap and the listen backlog that together stay within ``fd_limit`` descriptors.

    At the limit accept() fails and the process serves no one, ``/healthz`` included; and asyncio
    accepts up to a backlog of connections at once before the protocol can close any, so the backlog
    is budgeted too.
    """
    backlog = max(16, min(DEFAULT_BACKLOG, fd_limit // 8))
    room = max(16, fd_limit - FD_RESERVE - backlog)
    if wanted > room:
        logger.warning(
            "MAX_CONNECTIONS=%d does not fit the limit of %d open files: holding at most %d connections "
            "(raise the hard limit, e.g. ulimit -Hn or the container's nofile, to allow more)",
            wanted,
            fd_limit,
            room,
        )
    return min(wanted, room), backlog
