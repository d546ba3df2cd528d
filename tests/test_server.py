"""The uvicorn config, as ``python -m app`` and the tests' servers build it from the settings."""

from __future__ import annotations

import logging

import pytest

from app.protocol import HttpProtocol
from app.server import FD_RESERVE, connection_budget, uvicorn_config
from app.settings import Settings


async def _app(scope: object, receive: object, send: object) -> None:
    """Never called: the config is only built."""


def test_the_settings_become_uvicorn_s_limits() -> None:
    settings = Settings(keep_alive_seconds=7, header_timeout_seconds=3, max_header_bytes=4096, max_connections=100)
    config = uvicorn_config(_app, settings)
    assert config.http is HttpProtocol and config.ws == "none"
    assert config.timeout_keep_alive == 7 and config.limit_concurrency is None
    limits = config.connection_limits
    assert (limits.header_timeout_seconds, limits.max_header_bytes, limits.max_connections) == (3, 4096, 100)


def test_no_proxy_is_trusted_unless_named() -> None:
    """uvicorn's own default trusts 127.0.0.1: a local client would pick its own address per request."""
    assert uvicorn_config(_app, Settings()).proxy_headers is False
    named = uvicorn_config(_app, Settings(forwarded_allow_ips=("10.0.0.0/8", "127.0.0.1")))
    assert named.proxy_headers is True and named.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1"]


def test_overrides_replace_uvicorn_options() -> None:
    assert uvicorn_config(_app, Settings(), timeout_keep_alive=1, log_level="warning").timeout_keep_alive == 1


@pytest.mark.parametrize("fd_limit", [256, 400, 1024, 4096, 1 << 20])
def test_the_connections_and_the_backlog_fit_the_open_file_limit(fd_limit: int) -> None:
    connections, backlog = connection_budget(10_000_000, fd_limit)
    assert connections + backlog + FD_RESERVE <= fd_limit
    assert connections >= 16 and backlog >= 16


def test_a_cap_past_the_limit_is_lowered_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app"):
        assert connection_budget(1024, 1024)[0] == 1024 - FD_RESERVE - 128
        assert connection_budget(1024, 1 << 20) == (1024, 2048)
    (warning,) = caplog.records
    assert "MAX_CONNECTIONS=1024" in warning.getMessage() and "768" in warning.getMessage()
