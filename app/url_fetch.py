"""Download an image from a URL a client gave, without letting it reach our own network.

A URL from a client is a request we make on its behalf (server-side request
forgery is the risk): an address inside our network, the cloud's metadata
service at 169.254.169.254 or the loopback must never be fetched unless an
operator allowed exactly that. So every hop, redirects included:
- the host must be on the allow-list: ``*`` or a name rule (``example.com``,
  ``*.example.com``) admits public (globally routable) addresses only; an IP
  network rule (``10.0.0.0/8``, ``127.0.0.1``) admits its addresses, private or not;
- the name is resolved once, every address is checked, and the connection goes
  to an address that passed, never to whatever a second lookup would say
  (DNS rebinding); TLS still verifies the certificate against the host name;
- redirects are followed here, at most ``MAX_REDIRECTS``, each one checked anew.
The whole fetch has one deadline (resolve, connect, TLS, request, status line,
headers, body, every redirect) kept by a watchdog that cuts the socket,
and a byte cap, and its first bytes must be an image we read. Standard library
only; blocking, so callers run it in a thread.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as LookupTimedOut
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from app import errors
from app.imaging.decode import sniff_format

MAX_REDIRECTS = 5
_SNIFF_BYTES = 64
_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_RECUT_S = 0.05  # past the deadline, the watchdog cuts again this often until the fetch gives up

# getaddrinfo cannot be interrupted: it runs here, and a fetch waits for it only until its deadline.
# A resolver that never answers holds these few threads, never a request's.
_LOOKUPS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class FetchPolicy:
    networks: tuple[IPNetwork, ...] = ()
    names: tuple[str, ...] = ()  # "*", "example.com" or "*.example.com"
    max_bytes: int = 30 * 1024 * 1024
    timeout_s: float = 10.0

    @classmethod
    def from_allow_list(cls, entries: tuple[str, ...], max_bytes: int, timeout_s: float) -> FetchPolicy:
        networks: list[IPNetwork] = []
        names: list[str] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.append(entry.lower())
        return cls(tuple(networks), tuple(names), max_bytes, timeout_s)

    @property
    def enabled(self) -> bool:
        return bool(self.networks or self.names)

    def name_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for rule in self.names:
            if rule == "*" or host == rule or (rule.startswith("*.") and (host == rule[2:] or host.endswith(rule[1:]))):
                return True
        return False

    def address_allowed(self, address: IPAddress, by_name: bool) -> bool:
        if any(address in network for network in self.networks):
            return True
        return by_name and address.is_global and not address.is_multicast


class FetchRefused(errors.ApiError):
    """The URL may not be fetched, or its answer is not an image we can use."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "image_url_refused", message)


class FetchFailed(errors.ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(400, "image_url_failed", message)


def fetch_image(url: str, policy: FetchPolicy, field: str = "image_url") -> bytes:
    """The bytes at ``url``, following checked redirects, within the policy's deadline and size."""
    if not policy.enabled:
        raise FetchRefused(
            f"{field} is not enabled on this server; upload the image instead (IMAGE_URL_ALLOW turns it on)."
        )
    deadline = _Deadline(policy.timeout_s)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            target = _checked_target(url, policy, field, deadline)
            status, location, body = _get(target, policy, deadline, field)
            if status in _REDIRECTS:
                if not location:
                    raise FetchFailed(f"Failed to download the image from {field}: HTTP {status} without a Location.")
                url = urljoin(url, location)
                continue
            if status != 200:
                raise FetchFailed(f"Failed to download the image from {field}: HTTP status {status}.")
            return body
        raise FetchFailed(f"Failed to download the image from {field}: more than {MAX_REDIRECTS} redirects.")
    finally:
        deadline.close()


class _Deadline:
    """One deadline over a whole fetch, kept by a watchdog thread that shuts its sockets down once it passes.

    A socket timeout bounds one read, not a fetch: a server that sends its status line a byte a second, or
    ``100 Continue`` after ``100 Continue`` (http.client skips any number of them), never lets a read time out.
    Each blocking step still gets the time left as its timeout; at the deadline the watchdog shuts the sockets
    down, so the read in progress ends at once (and again every ``_RECUT_S``, for one connected meanwhile). It
    holds duplicates of the sockets, closed only by itself, so it can never shut down a descriptor reused since.
    """

    def __init__(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._passed = threading.Event()
        self._done = threading.Event()
        threading.Thread(target=self._watch, name="image-url-deadline", daemon=True).start()

    def left(self) -> float:
        return self._at - time.monotonic()

    @property
    def passed(self) -> bool:
        return self._passed.is_set() or self.left() <= 0

    def guard(self, sock: socket.socket) -> None:
        """Watch ``sock`` (and the TLS socket that will wrap it: same connection) until ``release``."""
        with self._lock:
            self._sockets.append(sock.dup())
            if self._passed.is_set():
                self._cut()

    def release(self) -> None:
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def close(self) -> None:
        self._done.set()
        self.release()

    def _watch(self) -> None:
        if self._done.wait(max(0.0, self.left())):
            return
        self._passed.set()
        while True:
            with self._lock:
                self._cut()
            if self._done.wait(_RECUT_S):
                return

    def _cut(self) -> None:
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected yet, or already shut


def _took_too_long(policy: FetchPolicy, field: str) -> FetchFailed:
    return FetchFailed(f"Failed to download the image from {field}: it took longer than {policy.timeout_s:g} s.")


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked address the connection goes to


def _checked_target(url: str, policy: FetchPolicy, field: str, deadline: _Deadline) -> _Target:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise FetchRefused(f"{field} is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchRefused(f"{field} must be an http or https URL.")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused(f"{field} may not carry a user name or password.")
    host = parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    by_name = policy.name_allowed(host)
    addresses = _resolve(host, port, field, deadline.left())
    allowed = [address for address in addresses if policy.address_allowed(address, by_name)]
    if not allowed:
        raise FetchRefused(
            f"{field} points at {host}, which is not allowed here: private, loopback, link-local and other "
            "non-public addresses, and hosts off the allow-list (IMAGE_URL_ALLOW), are refused."
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(parts.scheme, host, port, path, str(allowed[0]))


def _resolve(host: str, port: int, field: str, timeout_s: float) -> list[IPAddress]:
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return [_unmapped(literal)]
    lookup = _LOOKUPS.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=max(0.001, timeout_s))
    except LookupTimedOut:
        lookup.cancel()
        raise FetchFailed(f"Failed to download the image from {field}: resolving {host} took too long.") from None
    except (socket.gaierror, UnicodeError):
        raise FetchFailed(f"Failed to download the image from {field}: the host {host} does not resolve.") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = _unmapped(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
        if address not in addresses:
            addresses.append(address)
    return addresses


def _unmapped(address: IPAddress) -> IPAddress:
    """``::ffff:10.0.0.1`` is 10.0.0.1: judge it as such."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _connection(target: _Target, deadline: _Deadline) -> http.client.HTTPConnection:
    """A connection to ``target.host`` whose socket goes to the checked address, not a new lookup, under ``deadline``."""
    connection: http.client.HTTPConnection
    timeout = max(0.001, deadline.left())
    if target.scheme == "https":
        connection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)

    def connect_to_checked(
        _address: tuple[str, int], timeout: float | None = None, source: object = None
    ) -> socket.socket:
        sock = socket.create_connection((target.address, target.port), max(0.001, deadline.left()))
        deadline.guard(sock)  # before TLS: the handshake is under the deadline too
        sock.settimeout(max(0.001, deadline.left()))
        return sock

    connection._create_connection = connect_to_checked  # type: ignore[attr-defined]  # http.client's own seam
    return connection


def _get(target: _Target, policy: FetchPolicy, deadline: _Deadline, field: str) -> tuple[int, str | None, bytes]:
    if deadline.passed:
        raise _took_too_long(policy, field)
    connection = _connection(target, deadline)
    try:
        connection.request("GET", target.path, headers={"User-Agent": "bgremove", "Accept": "image/*"})
        if connection.sock is not None:
            connection.sock.settimeout(max(0.001, deadline.left()))
        response = connection.getresponse()  # status line and headers, any number of 100s: cut at the deadline
        if response.status != 200:
            return response.status, response.getheader("Location"), b""
        declared = response.getheader("Content-Length", "")
        if declared.isdigit() and int(declared) > policy.max_bytes:
            raise errors.upload_too_large(policy.max_bytes)
        return 200, None, _read_image(connection, response, policy, deadline, field)
    except (OSError, http.client.HTTPException) as exc:
        if deadline.passed or isinstance(exc, (TimeoutError, socket.timeout)):
            raise _took_too_long(policy, field) from None
        raise FetchFailed(f"Failed to download the image from {field}: {type(exc).__name__}.") from None
    finally:
        connection.close()
        deadline.release()


def _read_image(
    connection: http.client.HTTPConnection,
    response: http.client.HTTPResponse,
    policy: FetchPolicy,
    deadline: _Deadline,
    field: str,
) -> bytes:
    body = bytearray()
    sniffed = False
    while True:
        if deadline.passed:
            raise _took_too_long(policy, field)
        if connection.sock is not None:  # a server dripping bytes must not stretch the deadline
            connection.sock.settimeout(max(0.001, deadline.left()))
        chunk = response.read1(_CHUNK)
        if not chunk:
            break
        body += chunk
        if len(body) > policy.max_bytes:
            raise errors.upload_too_large(policy.max_bytes)
        if not sniffed and len(body) >= _SNIFF_BYTES:
            _sniff(bytes(body), field)
            sniffed = True
    if deadline.passed:  # the watchdog's cut ends a read as the end of the body would: not an image, a timeout
        raise _took_too_long(policy, field)
    if not sniffed:
        _sniff(bytes(body), field)
    return bytes(body)


def _sniff(head: bytes, field: str) -> None:
    """Stop as soon as the first bytes show it is no image (an HTML page, say), before the rest arrives."""
    try:
        sniff_format(head)
    except errors.ApiError as error:
        raise FetchRefused(f"{field} did not return an image: {error.message}") from None
