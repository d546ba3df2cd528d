from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import DEFAULT_MODEL_DIR, Settings, SettingsError, available_cpus


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("HOST", "PORT", "MODEL", "MODELS", "MODEL_DIR", "MODEL_PATH", "QUALITY", "WORKERS", "INTRA_OP_THREADS", "SOLO_THREADS", "MAX_QUEUE", "MAX_UPLOAD_BYTES", "MAX_PIXELS")
    for name in (*names, "LOG_FORMAT", "DRAIN_SECONDS", "GRACEFUL_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.model == "u2net-int8" and settings.model_names == ("u2net-int8",) and settings.quality == "balanced"
    assert settings.model_dir == DEFAULT_MODEL_DIR and settings.model_path is None
    assert settings.workers == available_cpus() and settings.intra_op_threads == 1
    assert settings.solo_threads == available_cpus()
    assert settings.queue_limit == 4 * settings.workers
    assert settings.max_upload_bytes == 30 * 1024 * 1024 and settings.max_pixels == 60_000_000
    assert settings.log_format == "json" and settings.drain_seconds == 0 and settings.graceful_timeout_seconds == 30


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("MODEL_PATH", "/models/u2net.onnx")
    monkeypatch.setenv("MODEL", "U2NETP")
    monkeypatch.setenv("MODELS", "u2net, u2netp")
    monkeypatch.setenv("QUALITY", "best")
    monkeypatch.setenv("WORKERS", "3")
    monkeypatch.setenv("SOLO_THREADS", "1")
    monkeypatch.setenv("MAX_QUEUE", "0")
    monkeypatch.setenv("LOG_FORMAT", "Text")
    monkeypatch.setenv("DRAIN_SECONDS", "5")
    settings = Settings.from_env()
    assert settings.log_format == "text" and settings.drain_seconds == 5
    assert (settings.host, settings.port, settings.workers, settings.solo_threads) == ("0.0.0.0", 9000, 3, 1)
    assert settings.model_path == Path("/models/u2net.onnx")
    assert settings.model_names == ("u2netp", "u2net") and settings.quality == "best"
    assert settings.queue_limit == 0


@pytest.mark.parametrize(("name", "value"), [
        ("PORT", "http"),
        ("WORKERS", "0"),
        ("SOLO_THREADS", "0"),
        ("PNG_COMPRESS_LEVEL", "12"),
        ("MAX_QUEUE", "-1"),
        ("LOG_FORMAT", "xml"),
        ("QUALITY", "ultra"),
        ("GRACEFUL_TIMEOUT_SECONDS", "0"),
    ],)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        Settings.from_env()


def test_access_settings_default_to_an_open_api_without_image_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("API_KEYS", "RATE_LIMIT_PER_MINUTE", "IMAGE_URL_ALLOW", "IMAGE_URL_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings.api_keys == () and settings.rate_limit_per_minute == 0
    assert settings.image_url_allow == () and settings.image_url_timeout_seconds == 10


def test_access_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", " first-key-0123456789, second_key_0123456789 ,,")
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "120")
    monkeypatch.setenv("IMAGE_URL_ALLOW", "Images.Example.com, *.cdn.example.org, 10.0.0.0/8, 127.0.0.1, ::1, *")
    monkeypatch.setenv("IMAGE_URL_TIMEOUT_SECONDS", "3")
    settings = Settings.from_env()
    assert settings.api_keys == ("first-key-0123456789", "second_key_0123456789")
    assert settings.rate_limit_per_minute == 120
    assert settings.image_url_allow == ("images.example.com", "*.cdn.example.org", "10.0.0.0/8", "127.0.0.1", "::1", "*")
    assert settings.image_url_timeout_seconds == 3


@pytest.mark.parametrize(("name", "value"), [
        ("RATE_LIMIT_PER_MINUTE", "-1"),
        ("RATE_LIMIT_PER_MINUTE", "lots"),
        ("IMAGE_URL_ALLOW", "http://example.com/"),
        ("IMAGE_URL_ALLOW", "10.0.0.0/33"),
        ("IMAGE_URL_ALLOW", "exa mple.com"),
        ("IMAGE_URL_TIMEOUT_SECONDS", "0"),
        ("IMAGE_URL_TIMEOUT_SECONDS", "301"),
    ],)
def test_bad_access_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        Settings.from_env()


def test_api_keys_with_spaces_inside_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "good-and-long-enough,has space")
    with pytest.raises(SettingsError, match="API_KEYS"):
        Settings.from_env()


def test_api_keys_shorter_than_16_characters_are_refused_without_showing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "long-enough-key-0123,s3cr3t")
    with pytest.raises(SettingsError, match="API_KEYS keys must be at least 16 characters; key 2 has 6") as refused:
        Settings.from_env()
    assert "s3cr3t" not in str(refused.value)
    monkeypatch.setenv("API_KEYS", "exactly-16-chars")
    assert Settings.from_env().api_keys == ("exactly-16-chars",)


def test_a_short_api_key_stops_the_service_before_it_starts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "API_KEYS": "short", "PORT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: API_KEYS keys must be at least 16 characters; key 1 has 5")
    assert len(result.stderr.strip().splitlines()) == 1 and "short" not in result.stderr  # the key stays secret
