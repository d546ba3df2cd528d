"""A token bucket per caller, in memory: ``RATE_LIMIT_PER_MINUTE`` images, refilled smoothly.

A bucket holds at most one minute's worth, so a quiet caller may send a burst of
that size and then one image every ``60 / limit`` seconds. State lives in this
process only: behind N replicas each caller gets N times the limit.
"""

from __future__ import annotations

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
