"""API keys and the per-caller rate limit, as dependencies every API route declares.

With ``API_KEYS`` set, a request must carry one of them: in ``X-Api-Key``
(remove.bg's header), ``Authorization: Bearer <key>``, or ``Authorization: Basic``
with the key as the password. The last is for the web page: our 401 challenges
with ``WWW-Authenticate: Basic``, so a browser asks for the key once and sends it
with the page's own requests from then on, with no key stored in the page.

Keys are compared as SHA-256 digests (equal lengths) with ``hmac.compare_digest``
against every configured key, without stopping at a match, so the time taken
says nothing about any key.
A client address that keeps sending wrong keys is made to wait, longer each
time (``KeyFailureThrottle``): while it waits it gets 429 ``too_many_failed_keys``
whatever key it sends, without the key being compared.
Failures are ``ApiError``s: 401 (no key), 403 (a wrong key), 429 (over the
limit, or too many wrong keys); each router shapes them as its clients expect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app import errors
from app.errors import ApiError
from app.ratelimit import Allowance, KeyFailureThrottle, RateLimiter
from app.settings import Settings

REALM = "bgremove"
_CHALLENGE = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}


class KeyRing:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._digests = tuple(_digest(key) for key in keys)

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def match(self, presented: str) -> int | None:
        """The index of the key ``presented`` is, in time independent of which key (if any) it matches."""
        candidate = _digest(presented)
        found: int | None = None
        for index, digest in enumerate(self._digests):
            if hmac.compare_digest(candidate, digest) and found is None:
                found = index
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class Credentials:
    key: str
    from_browser: bool  # sent as Basic auth: a wrong key gets a new challenge, so the browser asks again


def presented_credentials(request: Request) -> Credentials | None:
    """The key the request carries, from whichever header carries one."""
    api_key = request.headers.get("x-api-key", "").strip()
    if api_key:
        return Credentials(api_key, from_browser=False)
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return Credentials(value, from_browser=False)
    if scheme.lower() == "basic" and value:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return Credentials("", from_browser=True)
        return Credentials(password or user, from_browser=True)
    return None


class Guard:
    """The app's keys, rate limiter and wrong-key throttle, built once from the settings."""

    def __init__(self, keys: KeyRing, limiter: RateLimiter | None, throttle: KeyFailureThrottle | None = None) -> None:
        self.keys = keys
        self.limiter = limiter
        self.throttle = throttle if throttle is not None else KeyFailureThrottle()

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        limiter = RateLimiter(settings.rate_limit_per_minute) if settings.rate_limit_per_minute > 0 else None
        return cls(KeyRing(settings.api_keys), limiter)

    def identify(self, request: Request) -> str:
        """Who is calling, for the rate limit: the key's position, or the client's address without keys.

        The verdict is kept on the request, so asking twice (the admission check, then the
        route) counts a wrong key once.
        """
        verdict = getattr(request.state, "key_verdict", None)
        if verdict is None:
            verdict = self._verdict(request)
            request.state.key_verdict = verdict
        if isinstance(verdict, ApiError):
            raise verdict
        return verdict

    def _verdict(self, request: Request) -> str | ApiError:
        client = request.client
        address = client.host if client else "unknown"
        if not self.keys.required:
            return f"address:{address}"
        credentials = presented_credentials(request)
        if credentials is None:
            return ApiError(
                401, "unauthorized", "An API key is required: send it in the X-Api-Key header.", dict(_CHALLENGE)
            )
        wait_s = self.throttle.retry_after_s(address)
        if wait_s:
            return errors.too_many_failed_keys(wait_s)
        index = self.keys.match(credentials.key)
        if index is None:
            self.throttle.failed(address)
            if credentials.from_browser:
                return ApiError(401, "unauthorized", "That API key is not valid.", dict(_CHALLENGE))
            return ApiError(403, "forbidden", "That API key is not valid.")
        return f"key:{index}"


@dataclass(frozen=True)
class Caller:
    identity: str
    allowance: Allowance | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The ``X-RateLimit-*`` headers for the response, when there is a limit."""
        return self.allowance.headers() if self.allowance else {}


def _guard(request: Request) -> Guard:
    return request.app.state.guard


def rate_limit_headers(request: Request) -> dict[str, str]:
    """Headers an error response to this request should carry too (the limit still applies to it)."""
    allowance = getattr(request.state, "allowance", None)
    return allowance.headers() if isinstance(allowance, Allowance) and allowance.allowed else {}


async def authenticate(request: Request) -> Caller:
    """The key check alone: for routes that cost no image (``/v1.0/account``)."""
    return Caller(_guard(request).identify(request))


async def authenticate_and_meter(request: Request) -> Caller:
    """The key check, then one token of the caller's bucket."""
    guard = _guard(request)
    identity = guard.identify(request)
    if guard.limiter is None:
        return Caller(identity)
    allowance = guard.limiter.take(identity)
    if not allowance.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"Rate limit exceeded: {allowance.limit} images a minute; retry after the number of seconds in Retry-After.",
            allowance.headers(),
        )
    request.state.allowance = allowance
    return Caller(identity, allowance)


KeyHolder = Annotated[Caller, Depends(authenticate)]
MeteredCaller = Annotated[Caller, Depends(authenticate_and_meter)]
