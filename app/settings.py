"""Every setting of the service, read once from the environment.

Nothing else in the app reads ``os.environ``: the app is built from a
``Settings`` value, so tests and the CLI can make their own.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# Beside the code, not the working directory: `bgremove` runs from wherever the photos are.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = "u2net-int8"  # chosen by measurement on the real photos: see the README's Quality section
QUALITIES = ("fast", "balanced", "best")


def available_cpus() -> int:
    """CPUs this process may really use: affinity mask capped by a cgroup v2/v1 quota.

    ``os.cpu_count()`` reports the host's cores, which oversubscribes a
    container limited to, say, two CPUs on a 64-core node.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _env_int(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise SettingsError(f"{name} must be {bounds}, got {value}")
    return value


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _env_str(name, default).lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _env_list(name: str) -> tuple[str, ...]:
    """A comma-separated list; blanks around and between the commas are dropped."""
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


_HOST_PATTERN = re.compile(r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _url_allow_list(name: str) -> tuple[str, ...]:
    """``*``, host names (``example.com``, ``*.example.com``) and IP networks (``10.0.0.0/8``, ``127.0.0.1``)."""
    entries = tuple(entry.lower() for entry in _env_list(name))
    for entry in entries:
        if entry == "*" or _HOST_PATTERN.fullmatch(entry):
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(
                f"{name} entries must be '*', a host name like example.com or *.example.com, or an IP network "
                f"like 10.0.0.0/8; got {entry!r}"
            ) from None
    return entries


def _ip_networks(name: str) -> tuple[str, ...]:
    """IP addresses or networks (``10.0.0.0/8``), or ``*`` for any."""
    entries = _env_list(name)
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(f"{name} entries must be IP addresses, networks like 10.0.0.0/8, or '*'; got {entry!r}") from None
    return entries


def _api_keys(name: str) -> tuple[str, ...]:
    """The keys, each long enough: a short key is guessed from outside whatever the throttle."""
    min_length = 16
    keys = _env_list(name)
    for position, key in enumerate(keys, start=1):
        if not key.isprintable() or any(char.isspace() for char in key):
            raise SettingsError(f"{name} keys must be printable and without spaces (they travel in HTTP headers)")
        if len(key) < min_length:  # the key itself stays out of the message: it may land in a log
            raise SettingsError(
                f"{name} keys must be at least {min_length} characters; key {position} has {len(key)} "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
    return keys


class SettingsError(ValueError):
    """A setting in the environment has a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    model: str = DEFAULT_MODEL  # the catalogue model a request gets unless it names another
    models: tuple[str, ...] = ()  # catalogue models loaded besides ``model``
    model_dir: Path = DEFAULT_MODEL_DIR  # where the set-up put the catalogue's files
    model_path: Path | None = None  # a U²-Net-family file of the user's own: it becomes the default
    quality: str = "balanced"  # fast | balanced | best: the plans in app/model/passes.py
    workers: int = field(default_factory=available_cpus)
    intra_op_threads: int = 1
    solo_threads: int = field(default_factory=available_cpus)  # intra-op threads of an image alone; 1: off
    max_queue: int | None = None  # None: derived from workers, see ``queue_limit``
    max_upload_bytes: int = 30 * 1024 * 1024
    max_pixels: int = 60_000_000
    refine: bool = True
    png_compress_level: int = 1
    encode_threads: int = field(default_factory=available_cpus)
    jpeg_quality: int = 90
    webp_quality: int = 90
    log_level: str = "info"
    log_format: str = "json"  # one JSON object a line, for log collectors; "text" for people
    drain_seconds: int = 0  # after SIGTERM, keep listening this long while refusing new work
    graceful_timeout_seconds: int = 30  # then wait this long for in-flight requests
    api_keys: tuple[str, ...] = ()  # empty: the API is open; else every API route needs one of these keys
    rate_limit_per_minute: int = 0  # images per minute per key (per client address without keys); 0: no limit
    image_url_allow: tuple[str, ...] = ()  # where remove.bg's image_url may fetch from; empty: image_url is off
    image_url_timeout_seconds: int = 10  # the whole download of one image_url, redirects included
    # What one peer may hold: each bound below frees a connection or a slot from a client that stalls.
    header_timeout_seconds: int = 10  # a request line and its headers must arrive within this (new connections too)
    keep_alive_seconds: int = 5  # an idle keep-alive connection is closed after this
    upload_idle_seconds: int = 10  # a body (or the wait after 100 Continue) silent this long is dropped with 408
    upload_min_bytes_per_second: int = 32 * 1024  # past the idle grace, a body must keep this average rate
    max_connections: int = 1024  # open connections; past it the idlest is closed, or a new one refused
    max_header_bytes: int = 32 * 1024  # request line plus headers; more gets 431
    forwarded_allow_ips: tuple[str, ...] = ()  # proxies whose X-Forwarded-For is believed; empty: none

    @property
    def model_names(self) -> tuple[str, ...]:
        """Catalogue models to load, the default first (unless ``model_path`` replaces it)."""
        return tuple(dict.fromkeys((self.model, *self.models)))

    @property
    def queue_limit(self) -> int:
        """Requests allowed to wait for a worker; enough to keep every worker fed."""
        return 4 * self.workers if self.max_queue is None else self.max_queue

    @classmethod
    def from_env(cls) -> Settings:
        defaults = cls()
        return cls(
            host=_env_str("HOST", defaults.host),
            port=_env_int("PORT", defaults.port, minimum=1),
            model=_env_str("MODEL", defaults.model).lower(),  # names are checked against the catalogue on load
            models=tuple(name.lower() for name in _env_list("MODELS")) or defaults.models,
            model_dir=Path(_env_str("MODEL_DIR", str(defaults.model_dir))),
            model_path=Path(raw_path) if (raw_path := _env_str("MODEL_PATH", "")) else None,
            quality=_env_choice("QUALITY", defaults.quality, QUALITIES),
            workers=_env_int("WORKERS", defaults.workers, minimum=1),
            intra_op_threads=_env_int("INTRA_OP_THREADS", defaults.intra_op_threads, minimum=1),
            solo_threads=_env_int("SOLO_THREADS", defaults.solo_threads, minimum=1),
            max_queue=_env_int("MAX_QUEUE", -1) if os.environ.get("MAX_QUEUE", "").strip() else None,
            max_upload_bytes=_env_int("MAX_UPLOAD_BYTES", defaults.max_upload_bytes, minimum=1),
            max_pixels=_env_int("MAX_PIXELS", defaults.max_pixels, minimum=1),
            refine=_env_bool("REFINE", defaults.refine),
            png_compress_level=_env_int("PNG_COMPRESS_LEVEL", defaults.png_compress_level, maximum=9),
            encode_threads=_env_int("ENCODE_THREADS", defaults.encode_threads, minimum=1),
            jpeg_quality=_env_int("JPEG_QUALITY", defaults.jpeg_quality, minimum=1, maximum=100),
            webp_quality=_env_int("WEBP_QUALITY", defaults.webp_quality, minimum=1, maximum=100),
            log_level=_env_str("LOG_LEVEL", defaults.log_level).lower(),
            log_format=_env_choice("LOG_FORMAT", defaults.log_format, ("json", "text")),
            drain_seconds=_env_int("DRAIN_SECONDS", defaults.drain_seconds),
            graceful_timeout_seconds=_env_int("GRACEFUL_TIMEOUT_SECONDS", defaults.graceful_timeout_seconds, minimum=1),
            api_keys=_api_keys("API_KEYS"),
            rate_limit_per_minute=_env_int("RATE_LIMIT_PER_MINUTE", defaults.rate_limit_per_minute),
            image_url_allow=_url_allow_list("IMAGE_URL_ALLOW"),
            image_url_timeout_seconds=_env_int(
                "IMAGE_URL_TIMEOUT_SECONDS", defaults.image_url_timeout_seconds, minimum=1, maximum=300
            ),
            header_timeout_seconds=_env_int("HEADER_TIMEOUT_SECONDS", defaults.header_timeout_seconds, minimum=1),
            keep_alive_seconds=_env_int("KEEP_ALIVE_SECONDS", defaults.keep_alive_seconds, minimum=1),
            upload_idle_seconds=_env_int("UPLOAD_IDLE_SECONDS", defaults.upload_idle_seconds, minimum=1),
            upload_min_bytes_per_second=_env_int(
                "UPLOAD_MIN_BYTES_PER_SECOND", defaults.upload_min_bytes_per_second, minimum=1
            ),
            max_connections=_env_int("MAX_CONNECTIONS", defaults.max_connections, minimum=16),
            max_header_bytes=_env_int("MAX_HEADER_BYTES", defaults.max_header_bytes, minimum=1024),
            forwarded_allow_ips=_ip_networks("FORWARDED_ALLOW_IPS"),
        )
