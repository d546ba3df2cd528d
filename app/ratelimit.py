"""A token bucket per caller, in memory: ``RATE_LIMIT_PER_MINUTE`` images, refilled smoothly;
and a growing back-off per client address for wrong API keys.

A bucket holds at most one minute's worth, so a quiet caller may send a burst of
that size and then one image every ``60 / limit`` seconds. State lives in this
process only: behind N replicas each caller gets N times the limit.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

_MAX_IDLE_BUCKETS = 10_000  # without API keys callers are addresses: forget full buckets past this many


@dataclass(frozen=True)
class Allowance:
    """One caller's standing after a request, as the ``X-RateLimit-*`` headers tell it."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # Unix time when the bucket is full again
    retry_after_s: int  # 0 when allowed

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


class RateLimiter:
    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0  # tokens a second
        self._clock = clock
        self._wall = wall
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)

    def take(self, caller: str) -> Allowance:
        """Spend one token of ``caller``'s bucket if there is one."""
        now = self._clock()
        tokens, at = self._buckets.get(caller, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= _MAX_IDLE_BUCKETS and caller not in self._buckets:
            self._forget_full_buckets(now)
        self._buckets[caller] = (tokens, now)
        until_full = (self.per_minute - tokens) / self._rate
        return Allowance(
            allowed=allowed,
            limit=self.per_minute,
            remaining=int(tokens),
            reset_at=math.ceil(self._wall() + until_full),
            retry_after_s=0 if allowed else max(1, math.ceil((1.0 - tokens) / self._rate)),
        )

    def _forget_full_buckets(self, now: float) -> None:
        """A full bucket says nothing a fresh one would not, so it can go."""
        self._buckets = {
            caller: (tokens, at)
            for caller, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self._rate < self.per_minute
        }


@dataclass
class _Failures:
    count: int
    last_at: float
    blocked_until: float


class KeyFailureThrottle:
    """Wrong API keys per client address: a few are free, then each one more buys a doubled wait.

    While a client waits its keys are not even compared, so guessing costs it time
    whatever it sends: 5 free guesses, then 1 s, 2 s, 4 s ... up to ``max_backoff_s``
    between guesses, instead of hundreds a second. A right key does not reset the
    count (on an address shared with a guesser that would hand out fresh guesses with
    every good request); failures are forgotten after ``forget_after_s`` without one.
    IPv6 clients count by /64, the block one subscriber holds. At most ``max_clients``
    addresses are remembered, the longest quiet forgotten first, so rotating source
    addresses costs the table no memory beyond that.
    """

    def __init__(
        self,
        free_failures: int = 5,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        forget_after_s: float = 900.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.forget_after_s = forget_after_s
        self.max_clients = max_clients
        self._clock = clock
        self._clients: dict[str, _Failures] = {}  # oldest failure first: the order evictions follow

    def __len__(self) -> int:
        return len(self._clients)

    def retry_after_s(self, address: str) -> int:
        """Seconds ``address`` must still wait before a key of its is compared; 0: go ahead."""
        failures = self._clients.get(_client_block(address))
        if failures is None:
            return 0
        wait = failures.blocked_until - self._clock()
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def failed(self, address: str) -> None:
        """Count one wrong key from ``address``; past the free ones it must wait before the next."""
        client, now = _client_block(address), self._clock()
        failures = self._clients.pop(client, None)
        if failures is None or now - failures.last_at > self.forget_after_s:
            failures = _Failures(0, now, now)
        failures.count += 1
        failures.last_at = now
        beyond = failures.count - self.free_failures
        if beyond >= 0:
            failures.blocked_until = now + min(self.max_backoff_s, self.first_backoff_s * 2.0 ** min(beyond, 64))
        while len(self._clients) >= self.max_clients:
            del self._clients[next(iter(self._clients))]
        self._clients[client] = failures  # re-inserted last: the newest failure


def _client_block(address: str) -> str:
    """The unit a guesser is counted by: the IPv4 address, the IPv6 /64, or the name as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
