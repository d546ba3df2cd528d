"""Throughput, latency and memory of our service against rembg's own server, under load, on loopback.

Three modes, each bounded in requests and time, each stopping by itself; every server is
started here on 127.0.0.1 with a free port and stopped at the end, and no request leaves the
machine. Run from the repository root (``make run`` or ``make test`` has made .venv and the model)::

    .venv/bin/python bench/load.py                  # load: ours and `rembg s`, 0.5 and 12 MP, concurrency 1, 4, 16
    .venv/bin/python bench/load.py --flood          # flood: 64 concurrent 24 MP uploads for 60 s against ours
    .venv/bin/python bench/load.py --soak           # soak: 10 minutes of mixed valid and broken input against ours

    # on an idle 2-core machine: load about 11 minutes (model limit 13 x 5 s, ours ~3 min, rembg ~5 min,
    # most of it rembg at 12 MP), flood about 1.5 minutes, soak about 10.5 minutes

    # small runs, e.g. to check that it works (a minute or two)
    .venv/bin/python bench/load.py --sizes 0.5 --concurrency 1,4 --requests 4 --model-seconds 2
    .venv/bin/python bench/load.py --only ours --sizes 0.5 --concurrency 16 --requests 32
    .venv/bin/python bench/load.py --flood --flood-seconds 5 --flood-concurrency 8
    .venv/bin/python bench/load.py --soak --soak-seconds 30 --soak-warmup 5

Load mode (the default). The model-only limit: one process per available CPU, each with
a one-thread onnxruntime session of the model ours serves (``MODEL``, else the service's default,
u2net-int8; the service's session options), runs
1x3x320x320 inferences for ``--model-seconds``, all together; their summed rate is the most
images per second any server could cut out here (one process alone, x the CPUs, is printed
once beside it). Both servers are started and stay up; each (size, concurrency) phase is run
on ours, then on rembg's, with the limit measured afresh before and after ours (their mean is
the phase's limit), because this machine's speed drifts by 10-30 % over minutes and each ratio
should compare runs made under the same conditions. Ours is ``.venv/bin/python -m app`` with its
default settings (HOST and PORT set; anything else in the environment, e.g. WORKERS, passes
through and /healthz's view of it is printed); rembg's is ``rembg s --no-ui`` (2.0.86, the
Gradio page left out; ``--rembg-ui`` keeps it) from its own virtual environment,
.bench/rembg-venv, made on first use with ``pip install "rembg[cli,cpu]==2.0.86"`` because
rembg[cli]'s pins (fastapi<0.129, uvicorn<0.41, gradio) clash with ours. rembg runs the file ours'
model was made from (u2net for u2net-int8), found as .bench/u2net/NAME.onnx (U2NET_HOME, as
bench/latency.py sets it up),
and its process refuses every connection that is not to a loopback address, so it cannot
download anything. Both do the same job: a JPEG of the photo in, the transparent PNG cut-out
out (ours as the raw body to POST /remove; rembg's as multipart ``file`` with ``model=NAME``
to POST /api/remove). Ours refines edges by default, rembg does not.

Each (server, size, concurrency) phase sends ``--requests`` images (at least twice the
concurrency) from that many concurrent keep-alive connections, or stops at ``--phase-limit``
seconds. Our server answers 503 + Retry-After when its queue is full: such an answer is
counted, the client waits as Retry-After says (``--retry-wait`` changes that) and sends the
same image again, as our CLI does. Throughput counts 200 answers only, and only while every
client still has work: the first N - concurrency of N, over the time to the last of them (the
final ones finish as clients run out of images, a drain no steady load has); latency percentiles are of the 200 answers (one request each); "job p99" also counts
the 503s and waits before an image's 200. Peak RSS is the server's process tree, sampled every
``--sample-ms`` from /proc/<pid>/status and checked against its VmHWM, which is reset at the
start of each phase (/proc/<pid>/clear_refs). A phase whose server passes ``--rss-limit-mb``
stops sending and the server is restarted, so rembg cannot take the machine down.

Flood mode: ``--flood-concurrency`` clients each send 24 MP JPEGs back to back for
``--flood-seconds``, a 503 followed at once by the next request (``--flood-retry-after``
makes them wait as Retry-After says, ``--flood-pause-ms`` adds a pause, ``--flood-expect``
holds each body back until the server asks for it, as curl does; ``--flood-client-cpus 1``
runs the clients and the probe on CPU 1 and the server on the rest, as if the clients were
another machine, since in Python they otherwise take most of a core from the server's
event loop). Reported: the
server's peak RSS against a memory bound derived from the configuration (idle RSS + WORKERS x
a MAX_PIXELS photo's working set, scaled from README's 48 MP figure + WORKERS + MAX_QUEUE
uploads of MAX_UPLOAD_BYTES; or ``--memory-bound-mb``), the latency of the 503 answers
(target <= 50 ms; an upload answered before it was sent whole is abandoned, as curl does) in
two measures: from the request's start to the answer's last byte as the client's loop read it,
and to that byte's arrival at the client's socket, as the kernel stamped it (bench/stamped.py:
the one Python loop driving 64 clients lets answers wait in their sockets for tens of
milliseconds, a delay that is the client's, not the server's), /healthz latency sampled every
100 ms by a separate process (target < 100 ms), and one ordinary request (0.5 MP) and one
24 MP request after the flood (target: 200). With clients that never wait, a 503's latency as
the client read it is about concurrency / (answers per second), so it measures how many
refusals a second the server can make.

Soak mode: ``--soak-concurrency`` clients send a seeded mix of valid photos (several sizes,
formats and options) and broken input (truncated, random bytes, bit flips, wrong types,
oversized declared dimensions or length, bad multipart, bad options, unknown paths) for
``--soak-seconds``. Reported: status counts per input (target: no 5xx), RSS after the warm-up
against RSS at the end (target: under 5 % growth), both taken idle, 4 s after the clients
stop: no image is in flight, and the service has given back what its heaps kept while busy
(2 s after its last job; ``app.allocator``). The warm-up begins with every kind of request
once and the largest photo on every connection at once. The medians under load are printed
beside them. Likewise the server's open file descriptors (target: no growth).
``--samples-csv FILE`` writes the RSS (and fd) samples of a flood or soak run for a plot;
``--answers-csv FILE`` every answer of a flood, with when it came and its two latencies.

The client is one asyncio loop over plain sockets (HTTP/1.1, keep-alive, image bytes read
once, bodies streamed in 256 KiB pieces and responses read and dropped in pieces), so it
costs little CPU; its CPU share is printed with each phase, beside the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import random
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.cold_start import free_port  # noqa: E402
from bench.latency import CACHE, U2NET_HOME, make_image, prepare_rembg_home  # noqa: E402
from app.model.catalog import CATALOGUE  # noqa: E402
from app.settings import DEFAULT_MODEL  # noqa: E402

# The model ours runs and the limit is taken on: MODEL as the service reads it (it passes
# through to ours), the service's default without it. rembg runs the file it was made from
# (u2net for u2net-int8), since rembg has no int8 model of its own.
MODEL_NAME = os.environ.get("MODEL", "").strip().lower() or DEFAULT_MODEL
MODEL = REPO / "models" / f"{MODEL_NAME}.onnx"
REMBG_MODEL = (CATALOGUE[MODEL_NAME].derived_from or MODEL_NAME) if MODEL_NAME in CATALOGUE else "u2netp"
from bench.stamped import SocketWriter, StampedReader, open_stamped  # noqa: E402

HOST = "127.0.0.1"  # every server and every request stays on loopback
OUR_PYTHON = REPO / ".venv/bin/python"
REMBG_VENV = CACHE / "rembg-venv"
REMBG_SPEC = "rembg[cli,cpu]==2.0.86"  # [cpu] brings onnxruntime; [cli] the server
LOGS = CACHE / "logs"
CHUNK = 256 * 1024
EXPECT_TIMEOUT_S = 1.0  # curl's --expect100-timeout default
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
START_TIMEOUT_S = 180.0
SEED = 20240607

# rembg's server runs under this: connections and name lookups to anything but loopback fail
# loudly (a model download, an analytics ping), and its start-up webbrowser.open does nothing.
REMBG_LAUNCHER = r"""
import ipaddress, socket, sys

def _loopback(host):
    if host is None or host in ("localhost", b"localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host).is_loopback
    except ValueError:
        return False

_getaddrinfo, _connect, _connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

def getaddrinfo(host, *args, **kwargs):
    if not _loopback(host):
        raise RuntimeError(f"network access attempted during the benchmark: {host!r}")
    return _getaddrinfo(host, *args, **kwargs)

def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        raise RuntimeError(f"network access attempted during the benchmark: {address!r}")

def connect(self, address):
    _check(self, address)
    return _connect(self, address)

def connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)

socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex = getaddrinfo, connect, connect_ex
sys.argv = ["rembg", *sys.argv[1:]]
from rembg.cli import main
sys.exit(main())
"""


# ---------------------------------------------------------------- statistics and formatting


def pct(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile, q in [0, 1]."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "-" if value is None else f"{format(value, spec)}{suffix}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def statuses(counter: Counter[int]) -> str:
    return " ".join(f"{'err' if code == 0 else code}:{n}" for code, n in sorted(counter.items())) or "-"


# ---------------------------------------------------------------- the HTTP client


@dataclass(frozen=True)
class Job:
    """One kind of request, its bytes made once."""

    name: str
    path: str
    body: bytes = b""
    content_type: str | None = None
    method: str = "POST"
    declared_length: int | None = None  # Content-Length to claim; the body is padded with zeros up to it
    expect: frozenset[int] = frozenset({200})
    magic: bytes = b""  # what a 200 body must start with
    expect_continue: bool = False  # send the body only after the server's 100 (or a second), as curl does

    def head(self, port: int) -> bytes:
        length = self.length
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {HOST}:{port}", "User-Agent: bench-load"]
        if self.content_type is not None:
            lines.append(f"Content-Type: {self.content_type}")
        if self.method != "GET" or length:
            lines.append(f"Content-Length: {length}")
        if self.expect_continue and length:
            lines.append("Expect: 100-continue")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @property
    def length(self) -> int:
        return self.declared_length if self.declared_length is not None else len(self.body)


@dataclass
class Answer:
    status: int  # 0: no HTTP answer (connection error or timeout)
    latency_s: float  # request start to the last byte of the response, as the client's loop read it
    first_s: float = 0.0  # request start to the end of the response's headers
    size: int = 0
    retry_after: float | None = None
    head: bytes = b""  # the body's first bytes
    early: bool = False  # answered before the upload was sent whole
    wire_s: float | None = None  # request start to the last byte's arrival at this host (the kernel's stamp)
    error: str = ""
    done_at: float = field(default_factory=time.perf_counter)  # when it was complete (perf_counter)


class _Stale(Exception):
    """A kept-alive connection the server had closed: send again on a new one."""


_ZEROS = bytes(CHUNK)


class Connection:
    """One HTTP/1.1 keep-alive connection to 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: StampedReader | None = None
        self.writer: SocketWriter | None = None

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, asyncio.CancelledError):
                pass

    async def request(self, job: Job, timeout_s: float) -> Answer:
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(self._request(job), timeout_s)
        except asyncio.TimeoutError:
            await self.close()
            return Answer(0, time.perf_counter() - started, error="timeout")

    async def _request(self, job: Job) -> Answer:
        for attempt in range(2):
            reused = self.writer is not None
            started = time.perf_counter()
            try:
                if not reused:
                    self.reader, self.writer = await open_stamped(HOST, self.port)
                return await self._exchange(job, started, reused)
            except _Stale:
                await self.close()
                if attempt == 0:
                    continue
                return Answer(0, time.perf_counter() - started, error="closed")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                await self.close()
                return Answer(0, time.perf_counter() - started, error=type(exc).__name__)
        raise AssertionError("unreachable")

    async def _send(self, job: Job) -> str:
        writer = self.writer
        assert writer is not None
        try:
            view = memoryview(job.body)
            for start in range(0, len(view), CHUNK):
                writer.write(view[start : start + CHUNK])
                await writer.drain()
            left = job.length - len(view)
            while left > 0:
                writer.write(_ZEROS[: min(left, CHUNK)])
                left -= min(left, CHUNK)
                await writer.drain()
        except OSError as exc:
            return type(exc).__name__
        return ""

    async def _exchange(self, job: Job, started: float, reused: bool) -> Answer:
        reader, writer = self.reader, self.writer
        assert reader is not None and writer is not None
        writer.write(job.head(self.port))
        await writer.drain()
        sender = asyncio.create_task(self._send(job)) if job.length and not job.expect_continue else None
        try:
            if job.length and job.expect_continue:  # as curl: the body waits for a 100, or a second at most
                try:
                    status, headers = await asyncio.wait_for(self._read_head(reader, reused), EXPECT_TIMEOUT_S)
                except asyncio.TimeoutError:
                    status, headers = 100, {}
                if status == 100:
                    sender = asyncio.create_task(self._send(job))
                    status, headers = await self._read_head(reader, reused=False)
            else:
                status, headers = await self._read_head(reader, reused)
            first = time.perf_counter() - started
            size, head, closed = await self._read_body(reader, headers)
        except BaseException:
            if sender is not None:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            raise
        latency = time.perf_counter() - started
        unread_for_s = (time.time_ns() - reader.stamp_ns) / 1e9  # how long the answer sat in the socket
        early = bool(job.length) and (sender is None or not sender.done())
        broken = False
        if sender is not None:
            if early:
                sender.cancel()
            result = (await asyncio.gather(sender, return_exceptions=True))[0]
            broken = bool(result) and not early
        if early or broken or closed or headers.get("connection", "").lower() == "close":
            await self.close()  # an unsent upload (or a closed stream) makes the connection unusable
        retry = headers.get("retry-after")
        return Answer(
            status,
            latency,
            first,
            size,
            float(retry) if retry and retry.replace(".", "", 1).isdigit() else None,
            head,
            early,
            wire_s=latency - unread_for_s if reader.stamp_ns else None,
        )

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader, reused: bool) -> tuple[int, dict[str, str]]:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if reused and not exc.partial:
                raise _Stale from None
            raise
        status_line, *header_lines = raw.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        return int(status_line.split(" ", 2)[1]), headers

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> tuple[int, bytes, bool]:
        """Read and drop the body; keep its first 512 bytes. Returns (size, head, closed)."""
        head = bytearray()
        size = 0

        async def take(n: int) -> None:
            nonlocal size
            while n > 0:
                piece = await reader.read(min(n, 1 << 20))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", n)
                if len(head) < 512:
                    head.extend(piece[: 512 - len(head)])
                size += len(piece)
                n -= len(piece)

        if "content-length" in headers:
            await take(int(headers["content-length"]))
            return size, bytes(head), False
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line = await reader.readuntil(b"\r\n")
                length = int(line.split(b";")[0].strip(), 16)
                if length == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    return size, bytes(head), False
                await take(length)
                await reader.readexactly(2)
        while piece := await reader.read(1 << 20):  # until the server closes
            if len(head) < 512:
                head.extend(piece[: 512 - len(head)])
            size += len(piece)
        return size, bytes(head), True


async def get_once(port: int, path: str, timeout_s: float = 5.0) -> Answer:
    connection = Connection(port)
    try:
        return await connection.request(Job("get", path, method="GET"), timeout_s)
    finally:
        await connection.close()


# ---------------------------------------------------------------- the server's process tree in /proc


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return found


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Sampler(threading.Thread):
    """Samples the summed VmRSS (MB) and, if asked, the open fds of a process tree."""

    def __init__(self, pid: int, interval_s: float, rss_limit_mb: float | None = None, fds: bool = False) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s, self.rss_limit_mb, self.fds = pid, interval_s, rss_limit_mb, fds
        self.samples: list[tuple[float, float, int]] = []  # (monotonic time, RSS MB, fds)
        self.window_peak_mb = 0.0
        self.over_limit = False
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._hwm_reset = False

    def rss_mb(self) -> float:
        return sum(_status_kb(p, "VmRSS:") for p in process_tree(self.pid)) / 1024.0

    def cpu_s(self) -> float:
        return sum(_cpu_s(p) for p in process_tree(self.pid))

    def run(self) -> None:
        while not self._halt.is_set():
            rss = self.rss_mb()
            fds = fd_count(self.pid) if self.fds else -1
            with self._lock:
                self.samples.append((time.monotonic(), rss, fds))
                self.window_peak_mb = max(self.window_peak_mb, rss)
                if self.rss_limit_mb and rss > self.rss_limit_mb:
                    self.over_limit = True
            self._halt.wait(self.interval_s)

    def mark(self) -> None:
        """Start a new window: the sampled peak restarts, and so does each process's VmHWM."""
        self._hwm_reset = True
        for pid in process_tree(self.pid):
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                self._hwm_reset = False
        with self._lock:
            self.window_peak_mb = self.rss_mb()
            self.over_limit = False

    def peak_mb(self) -> float:
        """The window's peak: sampled, or the VmHWM (exact for one process) when it could be reset."""
        hwm = sum(_status_kb(p, "VmHWM:") for p in process_tree(self.pid)) / 1024.0 if self._hwm_reset else 0.0
        with self._lock:
            return max(self.window_peak_mb, hwm)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def write_csv(self, path: str | None) -> None:
        """Every sample, for a plot: seconds since the first, RSS MB, open fds (-1: not counted)."""
        if not path:
            return
        t0 = self.samples[0][0] if self.samples else 0.0
        with open(path, "w") as out:
            out.write("seconds,rss_mb,fds\n")
            out.writelines(f"{t - t0:.2f},{rss:.1f},{fds}\n" for t, rss, fds in self.samples)
        print(f"RSS samples written to {path}")


# ---------------------------------------------------------------- servers


def ensure_rembg_venv() -> Path:
    """.bench/rembg-venv with rembg's server, made once (a minute or two, from the package index)."""
    marker = REMBG_VENV / ".installed"
    python = REMBG_VENV / "bin/python"
    if marker.exists() and marker.read_text().strip() == REMBG_SPEC and python.exists():
        return python
    base = shutil.which("python3") or getattr(sys, "_base_executable", sys.executable)
    print(f"making {REMBG_VENV.relative_to(REPO)} with {REMBG_SPEC} (once) ...", flush=True)
    subprocess.run([base, "-m", "venv", str(REMBG_VENV)], check=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / "rembg-venv-install.log", "w") as log:
        done = subprocess.run([str(python), "-m", "pip", "install", REMBG_SPEC], stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"pip install {REMBG_SPEC} failed; see {LOGS / 'rembg-venv-install.log'}")
    marker.write_text(REMBG_SPEC + "\n")
    return python


class Server:
    """Ours (``python -m app``) or rembg's (``rembg s``), on a free loopback port."""

    def __init__(self, side: str, rembg_ui: bool = False) -> None:
        self.side, self.rembg_ui = side, rembg_ui
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    @property
    def ready_path(self) -> str:
        return "/healthz" if self.side == "ours" else "/openapi.json"

    def start(self) -> None:
        self.port = free_port()
        LOGS.mkdir(parents=True, exist_ok=True)
        log = open(LOGS / f"{self.side}-server.log", "ab")
        if self.side == "ours":
            python = OUR_PYTHON if OUR_PYTHON.exists() else Path(sys.executable)
            command = [str(python), "-m", "app"]
            env = {**os.environ, "HOST": HOST, "PORT": str(self.port)}
        else:
            python = ensure_rembg_venv()
            prepare_rembg_home(REMBG_MODEL)
            command = [str(python), "-c", REMBG_LAUNCHER, "s", "--host", HOST, "--port", str(self.port)]
            if not self.rembg_ui:
                command.append("--no-ui")
            env = {
                **os.environ,
                "U2NET_HOME": str(U2NET_HOME),
                "BROWSER": "true",
                "HF_HUB_OFFLINE": "1",
                "GRADIO_ANALYTICS_ENABLED": "False",
            }
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        started = time.perf_counter()
        while time.perf_counter() - started < START_TIMEOUT_S:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.side} server exited with {self.process.returncode}; see "
                    f"{LOGS / (self.side + '-server.log')}"
                )
            answer = asyncio.run(get_once(self.port, self.ready_path))
            if answer.status == 200:
                if self.side == "ours":
                    self.info = asyncio.run(_json(self.port, "/healthz"))
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.side} server not ready after {START_TIMEOUT_S:.0f} s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


async def _json(port: int, path: str) -> dict[str, Any]:
    """A small JSON document in full (get_once keeps 512 bytes only)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


# ---------------------------------------------------------------- photos and requests


def photo(megapixels: float) -> bytes:
    return make_image(megapixels).read_bytes()


def multipart(
    fields: list[tuple[str, str | None, str | None, bytes]], boundary: str = "bench-load-boundary-7d1f"
) -> tuple[bytes, str]:
    """(name, filename, content type, bytes) parts -> (body, Content-Type)."""
    out = bytearray()
    for name, filename, content_type, data in fields:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if content_type:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def cutout_job(side: str, jpeg: bytes, name: str) -> Job:
    """The same job for both: JPEG in, transparent PNG cut-out out."""
    if side == "ours":
        return Job(name, "/remove", jpeg, "image/jpeg", magic=PNG_MAGIC)
    body, content_type = multipart([("file", "photo.jpg", "image/jpeg", jpeg), ("model", None, None, REMBG_MODEL.encode())])
    return Job(name, "/api/remove", body, content_type, magic=PNG_MAGIC)


# ---------------------------------------------------------------- load phases


@dataclass
class Phase:
    side: str
    size: float
    concurrency: int
    answers: list[Answer] = field(default_factory=list)
    job_latencies: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    peak_mb: float | None = None
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    bad_bodies: int = 0
    note: str = ""
    limit: float | None = None  # the model-only limit measured just before this phase
    started_at: float = 0.0  # perf_counter

    @property
    def ok(self) -> list[float]:
        return [a.latency_s for a in self.answers if a.status == 200]

    @property
    def throughput(self) -> float | None:
        """200s a second while every client still had work: the first N - concurrency of them,
        over the time to the last of those. The final ones finish while clients run out of
        images (or wait out a Retry-After with nothing queued), which no steady load has."""
        done = sorted(a.done_at for a in self.answers if a.status == 200)
        if len(done) <= self.concurrency or self.elapsed_s <= 0:
            return len(done) / self.elapsed_s if self.elapsed_s > 0 else None
        counted = len(done) - self.concurrency
        return counted / (done[counted - 1] - self.started_at)

    @property
    def codes(self) -> Counter[int]:
        return Counter(a.status for a in self.answers)


def _client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(
    port: int,
    job: Job,
    concurrency: int,
    images: int,
    limit_s: float,
    request_timeout_s: float,
    retry_wait: str,
    phase: Phase,
    stop: threading.Event | None = None,
) -> None:
    """``images`` cut-outs from ``concurrency`` connections; a 503 is waited out and sent again."""
    left = images
    started = time.perf_counter()
    deadline = started + limit_s
    last_done = started

    async def client() -> None:
        nonlocal left, last_done
        connection = Connection(port)
        try:
            while left > 0 and time.perf_counter() < deadline and not (stop and stop.is_set()):
                left -= 1
                job_started = time.perf_counter()
                while True:
                    answer = await connection.request(job, request_timeout_s)
                    phase.answers.append(answer)
                    last_done = time.perf_counter()
                    if answer.status == 200 and not answer.head.startswith(job.magic):
                        phase.bad_bodies += 1
                    if answer.status != 503 or time.perf_counter() >= deadline or (stop and stop.is_set()):
                        break
                    wait = (answer.retry_after or 1.0) if retry_wait == "header" else float(retry_wait)
                    await asyncio.sleep(max(0.0, min(wait, deadline - time.perf_counter())))
                if answer.status == 200:
                    phase.job_latencies.append(time.perf_counter() - job_started)
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    phase.started_at, phase.elapsed_s = started, last_done - started


def model_child() -> None:
    """One process, one one-thread session (the service's options): say ready, wait, run, report."""
    import numpy as np
    import onnxruntime as ort

    seconds = float(sys.argv[sys.argv.index("--model-child") + 1])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False  # as app/model/session.py
    session = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = np.random.default_rng(SEED).random((1, 3, 320, 320), dtype=np.float32)
    session.run(None, {name: batch})
    session.run(None, {name: batch})
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every process starts together
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {name: batch})
        runs += 1
    elapsed = time.perf_counter() - started
    print(json.dumps({"runs": runs, "seconds": elapsed, "rate": runs / elapsed}), flush=True)


def model_rate(processes: int, seconds: float) -> float:
    """Summed inferences per second of ``processes`` one-thread sessions running together."""
    python = OUR_PYTHON if OUR_PYTHON.exists() else Path(sys.executable)
    children = [
        subprocess.Popen(
            [str(python), str(Path(__file__).resolve()), "--model-child", str(seconds)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for child in children:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("model child failed to start")
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    total = 0.0
    for child in children:
        out, _ = child.communicate(timeout=seconds + 60)
        total += json.loads(out.strip().splitlines()[-1])["rate"]
    return total


def run_load(args: argparse.Namespace) -> None:
    from app.settings import available_cpus

    cpus = available_cpus()
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    sides = [args.only] if args.only else ["ours", "rembg"]
    print(
        f"python {sys.version.split()[0]}, {cpus} CPUs available, {os.cpu_count()} online; "
        f"{args.requests} images a phase (at least 2x concurrency), {args.phase_limit:g} s limit a phase"
    )
    jpegs = {size: photo(size) for size in sizes}
    for size in sizes:
        print(f"  {make_image(size).relative_to(REPO)}: {len(jpegs[size]) / 1e6:.2f} MB")

    single = None
    if args.model_seconds > 0:
        print(f"model-only rate of one one-thread onnxruntime session, {args.model_seconds:g} s ...", flush=True)
        single = model_rate(1, args.model_seconds)
        print(f"  one alone: {single:.2f} inferences/s (x {cpus} = {single * cpus:.2f})")

    phases: list[Phase] = []
    servers: dict[str, Server] = {}
    samplers: dict[str, Sampler] = {}
    try:
        # Both servers stay up (the idle one costs nothing) and take turns phase by phase, each pair
        # right after its own model-only limit: this machine's speed drifts by 10-30 % over minutes,
        # and the ratios should compare runs made under the same conditions.
        for side in sides:
            servers[side], samplers[side] = _start_server(side, args)
            for size in sizes:
                warm = asyncio.run(_one(servers[side].port, cutout_job(side, jpegs[size], "warm"), args.request_timeout))
                if warm.status != 200:
                    print(f"  {side}'s warm-up at {size:g} MP answered {warm.status} {warm.head[:200]!r}")
        for size in sizes:
            for level in levels:
                before = _limit_now(cpus, single, args)
                for side in sides:
                    phase = Phase(side, size, level, limit=before)
                    _run_phase(phase, servers[side], samplers[side], cutout_job(side, jpegs[size], f"{size:g} MP"), args)
                    phases.append(phase)
                    if side == "ours" and before is not None:
                        after = _limit_now(cpus, single, args)  # the limit on both sides of our phase
                        phase.limit = (before + after) / 2 if after is not None else before
                        before = after
                    if samplers[side].over_limit:
                        print("    restarting the server", flush=True)
                        samplers.pop(side).stop()
                        servers.pop(side).stop(kill=True)
                        servers[side], samplers[side] = _start_server(side, args)
    finally:
        for side, server in servers.items():
            server.stop()  # first: nothing may leave it running
            samplers[side].stop()
    print_load(phases, sizes, levels, cpus, single)


def _limit_now(cpus: int, single: float | None, args: argparse.Namespace) -> float | None:
    if args.model_seconds <= 0:
        return None
    limit = model_rate(cpus, args.model_seconds) if cpus > 1 else single
    print(f"  model-only limit now: {cpus} one-thread sessions, each its own process: {limit:.2f}/s", flush=True)
    return limit


def _start_server(side: str, args: argparse.Namespace) -> tuple[Server, Sampler]:
    server = Server(side, args.rembg_ui)
    print(f"starting {side}'s server ...", flush=True)
    server.start()
    if server.info:
        print(
            f"  workers {server.info.get('workers')}, intra-op threads {server.info.get('intra_op_threads')} "
            f"(solo {server.info.get('solo_threads')}), "
            f"max queue {server.info.get('max_queue')}, model {server.info.get('model', {}).get('name')}"
        )
    sampler = Sampler(server.pid, args.sample_ms / 1000, args.rss_limit_mb)
    sampler.start()
    return server, sampler


def _run_phase(phase: Phase, server: Server, sampler: Sampler, job: Job, args: argparse.Namespace) -> None:
    sampler.mark()
    cpu0, client0 = sampler.cpu_s(), _client_cpu_s()
    images = max(args.requests, 2 * phase.concurrency)
    print(f"  {phase.side} {phase.size:g} MP concurrency {phase.concurrency}: {images} images ...", flush=True)
    asyncio.run(
        drive(
            server.port,
            job,
            phase.concurrency,
            images,
            args.phase_limit,
            args.request_timeout,
            args.retry_wait,
            phase,
            _Flag(sampler),
        )
    )
    phase.peak_mb = sampler.peak_mb()
    phase.server_cpu_s, phase.client_cpu_s = sampler.cpu_s() - cpu0, _client_cpu_s() - client0
    if sampler.over_limit:
        phase.note = f"stopped: server RSS over {args.rss_limit_mb:g} MB"
    elif len(phase.ok) < images:
        phase.note = f"{images - len(phase.ok)} of {images} images not cut out in time"
    print(
        f"    {len(phase.ok)} x 200 in {phase.elapsed_s:.1f} s: {fmt(phase.throughput, '.2f')} images/s, "
        f"p50 {fmt(pct(phase.ok, 0.5))} s, statuses {statuses(phase.codes)}, peak RSS {phase.peak_mb:.0f} MB",
        flush=True,
    )


class _Flag:
    """A stop flag read from the sampler: its server passed the RSS limit."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def is_set(self) -> bool:
        return self.sampler.over_limit


async def _one(port: int, job: Job, timeout_s: float) -> Answer:
    connection = Connection(port)
    try:
        return await connection.request(job, timeout_s)
    finally:
        await connection.close()


def print_load(phases: list[Phase], sizes: list[float], levels: list[int], cpus: int, single: float | None) -> None:
    print(
        "\n| server | photo | concurrency | images/s | p50 s | p95 s | p99 s | job p99 s | statuses | peak RSS MB "
        "| server CPU % | client CPU % | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in phases:
        cpu = 100 * p.server_cpu_s / p.elapsed_s if p.elapsed_s else None
        client = 100 * p.client_cpu_s / p.elapsed_s if p.elapsed_s else None
        note = p.note + (f"; {p.bad_bodies} 200s not PNG" if p.bad_bodies else "")
        print(
            f"| {p.side} | {p.size:g} MP | {p.concurrency} | {fmt(p.throughput, '.2f')} | {fmt(pct(p.ok, 0.5))} | "
            f"{fmt(pct(p.ok, 0.95))} | {fmt(pct(p.ok, 0.99))} | {fmt(pct(p.job_latencies, 0.99))} | "
            f"{statuses(p.codes)} | "
            f"{fmt(p.peak_mb, '.0f')} | {fmt(cpu, '.0f')} | {fmt(client, '.0f')} | {note} |"
        )

    by_key = {(p.side, p.size, p.concurrency): p for p in phases}
    limits = sorted({p.limit for p in phases if p.limit})
    if limits:
        print(
            f"\nModel-only limit ({cpus} one-thread sessions together), the mean of measures before and after each of our phases: "
            + (f"{limits[0]:.2f} images/s" if len(limits) == 1 else f"{limits[0]:.2f} to {limits[-1]:.2f} images/s")
            + (f"; one session alone {single:.2f}/s, x {cpus} = {single * cpus:.2f}/s." if single else ".")
        )
    print(
        "\n| photo | concurrency | ours images/s | rembg images/s | ours/rembg | ours p50 / p99 s | rembg p50 / p99 s "
        "| ours p99/p50 | ours peak RSS MB | rembg peak RSS MB | RSS ours/rembg | model limit | ours / model limit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        for level in levels:
            ours, rembg = by_key.get(("ours", size, level)), by_key.get(("rembg", size, level))
            o_t = ours.throughput if ours else None
            r_t = rembg.throughput if rembg else None
            o_50, o_99 = (pct(ours.ok, 0.5), pct(ours.ok, 0.99)) if ours else (None, None)
            r_50, r_99 = (pct(rembg.ok, 0.5), pct(rembg.ok, 0.99)) if rembg else (None, None)
            o_m, r_m = (ours.peak_mb if ours else None), (rembg.peak_mb if rembg else None)
            limit = ours.limit if ours else (rembg.limit if rembg else None)
            frac = ratio(o_t, limit)
            print(
                f"| {size:g} MP | {level} | {fmt(o_t, '.2f')} | {fmt(r_t, '.2f')} | "
                f"{fmt(ratio(o_t, r_t), '.2f', 'x')} | "
                f"{fmt(o_50)} / {fmt(o_99)} | {fmt(r_50)} / {fmt(r_99)} | {fmt(ratio(o_99, o_50), '.2f')} | "
                f"{fmt(o_m, '.0f')} | {fmt(r_m, '.0f')} | {fmt(ratio(o_m, r_m), '.2f')} | {fmt(limit, '.2f')} | "
                f"{fmt(frac * 100 if frac else None, '.0f', ' %')} |"
            )


# ---------------------------------------------------------------- flood


def healthz_probe() -> None:
    """Child: GET /healthz every interval for a while on one kept-alive connection; print the latencies."""
    import http.client

    index = sys.argv.index("--healthz-probe")
    port, seconds, interval = int(sys.argv[index + 1]), float(sys.argv[index + 2]), float(sys.argv[index + 3])
    samples: list[tuple[int, float]] = []
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    started = time.perf_counter()
    tick = started
    while tick - started < seconds:
        begin = time.perf_counter()
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            samples.append((response.status, time.perf_counter() - begin))
        except (OSError, http.client.HTTPException):
            samples.append((0, time.perf_counter() - begin))
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=10)
        tick += interval
        time.sleep(max(0.0, tick - time.perf_counter()))
    connection.close()
    print(json.dumps(samples))


def cpu_set(text: str) -> set[int]:
    """``1`` or ``0-3,6``, as taskset takes them."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def _cpu_list(cpus: set[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def _set_affinity(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid``: on Linux each has its own CPU mask, and new ones inherit their creator's."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # the thread has ended
            pass


def pin_apart(server_pid: int, client_cpus: set[int]) -> set[int]:
    """The server on the CPUs the clients leave free, as if the clients ran on another machine; returns all."""
    every = os.sched_getaffinity(0)
    if not client_cpus < every:
        raise SystemExit(f"--flood-client-cpus must leave the server some of CPUs {_cpu_list(every)}")
    _set_affinity(server_pid, every - client_cpus)
    _set_affinity(os.getpid(), client_cpus)  # the /healthz probe, started next, inherits it
    return every


def unpin(server_pid: int, every: set[int]) -> None:
    _set_affinity(server_pid, every)
    _set_affinity(os.getpid(), every)


def memory_bound_mb(info: dict[str, Any], idle_mb: float) -> tuple[float, str]:
    """What the configuration lets the process hold: idle + every worker on a MAX_PIXELS photo
    + every admitted request's upload (admitted requests hold their body while they wait)."""
    from app.settings import Settings

    settings = Settings.from_env()
    workers = int(info.get("workers") or settings.workers)
    queue = int(info.get("max_queue") if info.get("max_queue") is not None else settings.queue_limit)
    # README's latency table, one image in process: 48 MP peaks at 812 MB, 0.5 MP at 499 MB;
    # so ~6.5 MB of working set per megapixel (refined, PNG), scaled to MAX_PIXELS.
    per_mp = (812 - 499) / 48
    image_mb = per_mp * settings.max_pixels / 1e6
    upload_mb = settings.max_upload_bytes / 2**20
    bound = idle_mb + workers * image_mb + (workers + queue) * upload_mb
    how = (
        f"idle {idle_mb:.0f} MB + {workers} workers x {image_mb:.0f} MB (a {settings.max_pixels / 1e6:g} MP photo at "
        f"{per_mp:.1f} MB/MP, README's 48 MP figure) + {workers + queue} admitted x {upload_mb:.0f} MB uploads"
    )
    return bound, how


def run_flood(args: argparse.Namespace) -> None:
    jpeg, small = photo(args.flood_size), photo(0.5)
    server = Server("ours")
    print(
        f"starting our server; then {args.flood_concurrency} clients x {args.flood_size:g} MP "
        f"({len(jpeg) / 1e6:.1f} MB) for {args.flood_seconds:g} s ...",
        flush=True,
    )
    server.start()
    info = server.info
    print(f"  workers {info.get('workers')}, max queue {info.get('max_queue')}")
    flood_job = replace(cutout_job("ours", jpeg, "flood"), expect_continue=args.flood_expect)
    normal = cutout_job("ours", small, "0.5 MP")
    sampler = Sampler(server.pid, args.sample_ms / 1000)
    sampler.start()
    try:
        for job in (normal, flood_job):  # warm-up: first-touch allocations are not the flood's
            asyncio.run(_one(server.port, job, args.request_timeout))
        time.sleep(1)
        idle_mb = sampler.rss_mb()
        if args.memory_bound_mb:
            bound, how = args.memory_bound_mb, "given with --memory-bound-mb"
        else:
            bound, how = memory_bound_mb(info, idle_mb)
        sampler.mark()
        every_cpu = pin_apart(server.pid, args.flood_client_cpus) if args.flood_client_cpus else None
        probe = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--healthz-probe",
                str(server.port),
                str(args.flood_seconds + 1),
                str(args.healthz_interval_ms / 1000),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        client0, cpu0 = _client_cpu_s(), sampler.cpu_s()
        answers, flood_start, flood_end = asyncio.run(flood(server.port, flood_job, args))
        elapsed = time.perf_counter() - flood_start
        client_cpu, server_cpu = _client_cpu_s() - client0, sampler.cpu_s() - cpu0
        probe_out, _ = probe.communicate(timeout=args.flood_seconds + 120)
        peak = sampler.peak_mb()
        if every_cpu is not None:
            unpin(server.pid, every_cpu)  # the requests after the flood get every CPU, as before it
        after = asyncio.run(_one(server.port, normal, args.request_timeout))
        after_big = asyncio.run(_one(server.port, flood_job, args.request_timeout))
    finally:
        server.stop()  # first: nothing may leave it running
        sampler.stop()
    sampler.write_csv(args.samples_csv)

    if args.answers_csv:
        write_answers(args.answers_csv, answers, flood_start)
    health = json.loads(probe_out.strip().splitlines()[-1]) if probe_out.strip() else []
    h_lat = [lat * 1000 for _, lat in health]
    h_bad = sum(1 for status, _ in health if status != 200)
    busy = [a for a in answers if a.status == 503]
    b_lat = [a.latency_s * 1000 for a in busy]
    b_wire = [a.wire_s * 1000 for a in busy if a.wire_s is not None]
    ok = [a.latency_s for a in answers if a.status == 200]
    codes = Counter(a.status for a in answers)
    no_retry = sum(1 for a in busy if a.retry_after is None)
    within = sum(1 for x in b_lat if x <= 50)
    wire_within = sum(1 for x in b_wire if x <= 50)
    h_within = sum(1 for x in h_lat if x < 100)
    yes = lambda good: "yes" if good else "**no**"  # noqa: E731

    in_window = sum(1 for a in answers if a.done_at <= flood_end)
    waits = sorted({a.retry_after for a in busy if a.retry_after is not None})
    behaviour = "waiting out Retry-After" if args.flood_retry_after else "sending again at once"
    if args.flood_expect:
        behaviour += ", Expect: 100-continue as curl sends it"
    if args.flood_new_connections:
        behaviour += ", a new connection each"
    if args.flood_pause_ms:
        behaviour += f", {args.flood_pause_ms:g} ms between requests"
    if args.flood_client_cpus:
        behaviour += f", on CPUs {_cpu_list(args.flood_client_cpus)} and the server on the others"
    print(
        f"\nFlood: {args.flood_concurrency} clients ({behaviour}), {args.flood_size:g} MP JPEG uploads for "
        f"{args.flood_seconds:g} s "
        f"({in_window / args.flood_seconds:.0f} answers/s), then {elapsed - args.flood_seconds:.1f} s for the "
        "requests in flight; "
        f"{len(answers)} answers, statuses {statuses(codes)}; "
        f"Retry-After {f'{waits[0]:g}-{waits[-1]:g} s' if waits else 'none'}; "
        f"client CPU {100 * client_cpu / elapsed:.0f} %, "
        f"server CPU {100 * server_cpu / elapsed:.0f} % (of {os.cpu_count()} CPUs x 100 %)."
    )
    print(f"Memory bound {bound:.0f} MB: {how}.\n")
    print("| measure | value | target | met |")
    print("|---|---|---|---|")
    print(f"| server peak RSS | {peak:.0f} MB (idle {idle_mb:.0f} MB) | under {bound:.0f} MB | {yes(peak < bound)} |")
    print(
        f"| 503 answers | {len(busy)}, {no_retry} without Retry-After, {sum(a.early for a in busy)} before the "
        f"upload was sent whole | with Retry-After | {yes(busy and not no_retry)} |"
    )
    print(
        f"| 503 latency p50 / p95 / p99 / max | {fmt(pct(b_lat, 0.5), '.1f')} / {fmt(pct(b_lat, 0.95), '.1f')} / "
        f"{fmt(pct(b_lat, 0.99), '.1f')} / {fmt(max(b_lat, default=None), '.1f')} ms | within 50 ms | "
        f"{yes(b_lat and within == len(b_lat))} ({within} of {len(b_lat)}) |"
    )
    print(
        f"| the same, to the answer's arrival at the client's socket (kernel stamp) | {fmt(pct(b_wire, 0.5), '.1f')} / "
        f"{fmt(pct(b_wire, 0.95), '.1f')} / {fmt(pct(b_wire, 0.99), '.1f')} / {fmt(max(b_wire, default=None), '.1f')} ms"
        f" | within 50 ms | {yes(b_wire and wire_within == len(busy))} ({wire_within} of {len(busy)}) |"
    )
    print(
        f"| 200 answers during the flood | {len(ok)}, p50 {fmt(pct(ok, 0.5), '.2f')} s, max "
        f"{fmt(max(ok, default=None), '.2f')} s | - | - |"
    )
    print(
        f"| other answers | {statuses(Counter({k: v for k, v in codes.items() if k not in (200, 503)}))} | none | "
        f"{yes(all(k in (200, 503) for k in codes))} |"
    )
    print(
        f"| /healthz every {args.healthz_interval_ms:g} ms: p50 / p95 / p99 / max | {fmt(pct(h_lat, 0.5), '.1f')} / "
        f"{fmt(pct(h_lat, 0.95), '.1f')} / {fmt(pct(h_lat, 0.99), '.1f')} / {fmt(max(h_lat, default=None), '.1f')} ms "
        f"({len(h_lat)} probes, {h_bad} not 200) | under 100 ms | "
        f"{yes(h_lat and h_within == len(h_lat) and not h_bad)} "
        f"({h_within} of {len(h_lat)}) |"
    )
    print(
        f"| next request after the flood (0.5 MP) | {after.status} in {after.latency_s:.2f} s | 200 | "
        f"{yes(after.status == 200)} |"
    )
    print(
        f"| and a {args.flood_size:g} MP one | {after_big.status} in {after_big.latency_s:.2f} s | 200 | "
        f"{yes(after_big.status == 200)} |"
    )


def write_answers(path: str, answers: list[Answer], since: float) -> None:
    """One row per answer, to see when in a flood the slow ones came."""
    with open(path, "w", newline="") as out:
        rows = csv.writer(out)
        rows.writerow(["done_s", "status", "latency_ms", "wire_ms", "early"])
        for a in answers:
            wire = f"{a.wire_s * 1000:.2f}" if a.wire_s is not None else ""
            rows.writerow([f"{a.done_at - since:.4f}", a.status, f"{a.latency_s * 1000:.2f}", wire, int(a.early)])


async def flood(port: int, job: Job, args: argparse.Namespace) -> tuple[list[Answer], float, float]:
    """Returns the answers, the flood's start and its deadline (perf_counter); the requests in flight
    at the deadline are waited for."""
    answers: list[Answer] = []
    started = time.perf_counter()
    deadline = started + args.flood_seconds
    pause = args.flood_pause_ms / 1000

    async def client() -> None:
        connection = Connection(port)
        try:
            while time.perf_counter() < deadline:
                answer = await connection.request(job, args.request_timeout)
                answers.append(answer)
                if args.flood_new_connections:
                    await connection.close()
                wait = pause
                if args.flood_retry_after and answer.status == 503:
                    wait = max(wait, answer.retry_after or 1.0)
                if wait:
                    await asyncio.sleep(max(0.0, min(wait, deadline - time.perf_counter())))
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(args.flood_concurrency)))
    return answers, started, deadline


# ---------------------------------------------------------------- soak


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        PNG_MAGIC
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOFn) saying width x height."""
    data, i = bytearray(jpeg), 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise ValueError("no SOF marker")


def soak_jobs() -> list[tuple[Job, int]]:
    """(job, weight): about half valid photos, half hostile input."""
    import io

    from PIL import Image

    rng = random.Random(SEED)
    small, mid, large = photo(0.5), photo(2.0), photo(12.0)
    with Image.open(make_image(0.5)) as image:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        png = buffer.getvalue()
    jpeg_types = "image/jpeg"
    form, form_type = multipart([("file", "photo.jpg", jpeg_types, small)])
    no_file, no_file_type = multipart([("other", None, None, b"x")])
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    jobs: list[tuple[Job, int]] = [
        (Job("valid 0.5 MP jpeg", "/remove", small, jpeg_types, magic=PNG_MAGIC), 20),
        (Job("valid 0.5 MP multipart", "/remove", form, form_type, magic=PNG_MAGIC), 8),
        (Job("valid 2 MP jpeg", "/remove", mid, jpeg_types, magic=PNG_MAGIC), 8),
        (Job("valid 12 MP jpeg", "/remove", large, jpeg_types, magic=PNG_MAGIC), 2),
        (Job("valid 0.5 MP png", "/remove", png, "image/png", magic=PNG_MAGIC), 4),
        (Job("valid webp out", "/remove?format=webp", small, jpeg_types, magic=b"RIFF"), 3),
        (
            Job(
                "valid jpeg out on white",
                "/remove?format=jpeg&bg=white",
                small,
                "application/octet-stream",
                magic=b"\xff\xd8",
            ),
            3,
        ),
        (Job("valid mask + crop", "/remove?mask=true&crop=true", small, jpeg_types, magic=PNG_MAGIC), 3),
        (
            Job(
                "truncated jpeg (60 %)",
                "/remove",
                small[: len(small) * 6 // 10],
                jpeg_types,
                expect=frozenset({200, 422}),
            ),
            5,
        ),
        (Job("truncated jpeg (header only)", "/remove", small[:600], jpeg_types, expect=frozenset({422})), 3),
        (Job("empty body", "/remove", b"", jpeg_types, expect=frozenset({400})), 2),
        (Job("wrong Content-Type (text/plain)", "/remove", small, "text/plain", expect=frozenset({415})), 3),
        (Job("svg", "/remove", svg, "image/svg+xml", expect=frozenset({415})), 2),
        (
            Job(
                "png claiming 100000x100000",
                "/remove",
                _png_claiming(100_000, 100_000),
                "image/png",
                expect=frozenset({413}),
            ),
            3,
        ),
        (
            Job(
                "jpeg claiming 65000x65000",
                "/remove",
                _jpeg_claiming(small, 65_000, 65_000),
                jpeg_types,
                expect=frozenset({413}),
            ),
            3,
        ),
        (
            Job(
                "declared 40 MiB upload",
                "/remove",
                b"",
                jpeg_types,
                declared_length=40 * 2**20,
                expect=frozenset({413}),
            ),
            1,
        ),
        (Job("multipart without file", "/remove", no_file, no_file_type, expect=frozenset({400})), 2),
        (
            Job(
                "malformed multipart",
                "/remove",
                b"--nope\r\ngarbage",
                "multipart/form-data; boundary=bench",
                expect=frozenset({400}),
            ),
            2,
        ),
        (Job("bad option format=gif", "/remove?format=gif", small, jpeg_types, expect=frozenset({422})), 2),
        (Job("GET /healthz", "/healthz", method="GET"), 2),
    ]
    for n in range(8):  # seeded variety: random bytes, flipped bytes, unknown paths
        noise = rng.randbytes(rng.randint(1, 64 * 1024))
        jobs.append(
            (Job(f"random bytes #{n}", "/remove", noise, "application/octet-stream", expect=frozenset({415, 422})), 1)
        )
        flipped = bytearray(small)
        for _ in range(32):
            flipped[rng.randrange(1000, len(flipped))] = rng.randrange(256)
        jobs.append(
            (
                Job(
                    f"bit-flipped jpeg #{n}",
                    "/remove",
                    bytes(flipped),
                    jpeg_types,
                    expect=frozenset({200, 422}),
                    magic=PNG_MAGIC,
                ),
                1,
            )
        )
        path = "/" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
        jobs.append((Job(f"unknown path #{n}", path, method="GET", expect=frozenset({404})), 1))
    return jobs


def _family(name: str) -> str:
    return name.split(" #")[0]


def run_soak(args: argparse.Namespace) -> None:
    jobs = soak_jobs()
    warmup = args.soak_warmup if args.soak_warmup is not None else min(60.0, args.soak_seconds / 10)
    main_s = max(1.0, args.soak_seconds - warmup)
    server = Server("ours")
    print(
        f"starting our server; then {args.soak_concurrency} clients: {warmup:g} s of warm-up (every kind of request "
        f"once, and {args.soak_concurrency} x the largest photo at once, first), a pause, "
        f"{main_s:g} s measured; {len(jobs)} kinds of request ...",
        flush=True,
    )
    server.start()
    sampler = Sampler(server.pid, args.soak_sample_ms / 1000, fds=True)
    sampler.start()
    settle_s = 4.0  # after the clients stop: in-flight work done, connections closed, idle give-back done

    def idle() -> tuple[float, int]:
        time.sleep(settle_s)
        return sampler.rss_mb(), fd_count(server.pid)

    try:
        rss_fresh, fds_fresh = idle()
        results: dict[str, list[Answer]] = {}
        left = [args.soak_requests]
        if warmup > 0:
            # Every kind once, and the largest photo on every connection at once, so the warm-up has
            # seen the biggest working set; then the mix, for the rest of the warm-up.
            began = time.perf_counter()
            asyncio.run(prime(server.port, jobs, args, results))
            asyncio.run(
                soak(server.port, jobs, args, warmup - (time.perf_counter() - began), results, left, seed_offset=0)
            )
        rss_start, fds_start = idle()
        started_mono = time.monotonic()
        client0, cpu0 = _client_cpu_s(), sampler.cpu_s()
        elapsed = asyncio.run(soak(server.port, jobs, args, main_s, results, left, seed_offset=1000))
        ended_mono = time.monotonic()
        client_cpu, server_cpu = _client_cpu_s() - client0, sampler.cpu_s() - cpu0
        rss_end, fds_end = idle()
        alive = asyncio.run(get_once(server.port, "/healthz")).status
    finally:
        server.stop()  # first: nothing may leave it running
        sampler.stop()
    sampler.write_csv(args.samples_csv)

    window = max(args.soak_sample_ms / 1000 * 3, min(10.0, main_s / 4))
    loaded = [s for s in sampler.samples if started_mono <= s[0] <= ended_mono]
    first = [s[1] for s in loaded if s[0] <= started_mono + window]
    last = [s[1] for s in loaded if s[0] >= ended_mono - window]
    busy_start = statistics.median(first) if first else None
    busy_end = statistics.median(last) if last else None
    rss_peak = max((s[1] for s in loaded), default=None)
    fds_max = max((s[2] for s in loaded), default=None)
    growth = (rss_end / rss_start - 1) * 100
    busy_growth = (busy_end / busy_start - 1) * 100 if busy_start and busy_end else None
    total = sum(len(v) for v in results.values())
    five = sum(1 for answers in results.values() for a in answers if a.status >= 500)
    errors = sum(1 for answers in results.values() for a in answers if a.status == 0)
    yes = lambda good: "yes" if good else "**no**"  # noqa: E731

    print(
        f"\nSoak: {total} requests ({warmup:g} s warm-up + {elapsed:.0f} s measured, {args.soak_concurrency} clients); "
        f"measured part: client CPU {100 * client_cpu / elapsed:.0f} %, server CPU {100 * server_cpu / elapsed:.0f} % "
        f"(of {os.cpu_count()} CPUs x 100 %). RSS idle when fresh: {rss_fresh:.0f} MB, {fds_fresh} fds.\n"
    )
    print("| measure | value | target | met |")
    print("|---|---|---|---|")
    print(
        f"| RSS idle after the warm-up -> idle at the end ({settle_s:g} s after the clients stop) | {rss_start:.0f} -> "
        f"{rss_end:.0f} MB ({growth:+.1f} %) | under 5 % growth | {yes(growth < 5)} |"
    )
    print(
        f"| RSS under load, median of the first -> last {window:.0f} s; peak | {fmt(busy_start, '.0f')} -> "
        f"{fmt(busy_end, '.0f')} MB ({fmt(busy_growth, '+.1f', ' %')}); peak {fmt(rss_peak, '.0f')} MB | - | - |"
    )
    print(
        f"| open fds, idle after the warm-up -> idle at the end | {fds_start} -> {fds_end} (at most {fds_max} under "
        "load) | "
        f"no growth | {yes(fds_end <= fds_start)} |"
    )
    print(f"| 5xx answers | {five} | none | {yes(five == 0)} |")
    print(f"| no answer (connection error, timeout) | {errors} | none | {yes(errors == 0)} |")
    print(f"| /healthz after the soak | {alive} | 200 | {yes(alive == 200)} |")

    print("\n| input | requests | statuses | expected | unexpected |")
    print("|---|---|---|---|---|")
    families: dict[str, list[Answer]] = {}
    expected: dict[str, frozenset[int]] = {}
    bad: Counter[str] = Counter()
    for job, _ in jobs:
        family = _family(job.name)
        families.setdefault(family, []).extend(results.get(job.name, []))
        expected[family] = job.expect
        bad[family] += sum(
            1 for a in results.get(job.name, []) if a.status == 200 and job.magic and not a.head.startswith(job.magic)
        )
    for family, answers in families.items():
        codes = Counter(a.status for a in answers)
        wrong = sum(n for code, n in codes.items() if code not in expected[family])
        note = f"{wrong}" + (f"; {bad[family]} bodies not the format asked" if bad[family] else "")
        print(
            f"| {family} | {len(answers)} | {statuses(codes)} | {' '.join(map(str, sorted(expected[family])))} | "
            f"{note} |"
        )


async def prime(
    port: int, jobs: list[tuple[Job, int]], args: argparse.Namespace, results: dict[str, list[Answer]]
) -> None:
    largest = max(
        (job for job, _ in jobs if job.expect == frozenset({200}) and job.method == "POST"),
        key=lambda job: len(job.body),
    )

    async def client(index: int) -> None:
        connection = Connection(port)
        try:
            for job in [largest] + [job for job, _ in jobs][index :: args.soak_concurrency]:
                results.setdefault(job.name, []).append(await connection.request(job, args.request_timeout))
        finally:
            await connection.close()

    await asyncio.gather(*(client(i) for i in range(args.soak_concurrency)))


async def soak(
    port: int,
    jobs: list[tuple[Job, int]],
    args: argparse.Namespace,
    seconds: float,
    results: dict[str, list[Answer]],
    left: list[int],
    seed_offset: int,
) -> float:
    """Seeded random picks of ``jobs`` from ``--soak-concurrency`` connections for ``seconds``
    (or until ``left[0]`` requests are spent); returns the time taken, in-flight requests included."""
    started = time.perf_counter()
    deadline = started + seconds
    kinds, weights = [job for job, _ in jobs], [w for _, w in jobs]

    async def client(index: int) -> None:
        rng = random.Random(SEED + seed_offset + index)
        connection = Connection(port)
        try:
            while left[0] > 0 and time.perf_counter() < deadline:
                left[0] -= 1
                job = rng.choices(kinds, weights)[0]
                results.setdefault(job.name, []).append(await connection.request(job, args.request_timeout))
        finally:
            await connection.close()

    await asyncio.gather(*(client(i) for i in range(args.soak_concurrency)))
    return time.perf_counter() - started


# ---------------------------------------------------------------- main


def main() -> None:
    if "--model-child" in sys.argv:
        model_child()
        return
    if "--healthz-probe" in sys.argv:
        healthz_probe()
        return
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--flood", action="store_true", help="flood mode (ours only)")
    mode.add_argument("--soak", action="store_true", help="soak mode (ours only)")
    load = parser.add_argument_group("load mode")
    load.add_argument("--only", choices=("ours", "rembg"), help="one server only")
    load.add_argument("--sizes", default="0.5,12", help="megapixels, comma-separated (default 0.5,12)")
    load.add_argument("--concurrency", default="1,4,16", help="comma-separated (default 1,4,16)")
    load.add_argument(
        "--requests", type=int, default=48, help="images a phase, at least 2x its concurrency (default 48)"
    )
    load.add_argument("--phase-limit", type=float, default=180, help="seconds a phase may take at most (default 180)")
    load.add_argument(
        "--model-seconds",
        type=float,
        default=5,
        help="seconds of each model-only measure (one session alone, then the limit before each pair of phases); 0 skips them (default 5)",
    )
    load.add_argument(
        "--retry-wait",
        default="header",
        help="after a 503: 'header' waits as Retry-After says, or seconds (default header)",
    )
    load.add_argument(
        "--rss-limit-mb", type=float, default=12000, help="stop a phase whose server passes this (default 12000)"
    )
    load.add_argument("--rembg-ui", action="store_true", help="start rembg's server with its Gradio page too")
    fl = parser.add_argument_group("flood mode")
    fl.add_argument("--flood-seconds", type=float, default=60)
    fl.add_argument("--flood-concurrency", type=int, default=64)
    fl.add_argument("--flood-size", type=float, default=24, help="megapixels of the uploads (default 24)")
    fl.add_argument("--flood-pause-ms", type=float, default=0, help="each client's pause between requests (default 0)")
    fl.add_argument(
        "--flood-retry-after",
        action="store_true",
        help="clients wait as a 503's Retry-After says (default: they send again at once)",
    )
    fl.add_argument(
        "--flood-new-connections",
        action="store_true",
        help="a new connection for every request (default: kept alive, so a refused upload's unread rest "
        "is drained by the server before the next request on that connection is read)",
    )
    fl.add_argument(
        "--flood-expect",
        action="store_true",
        help="send Expect: 100-continue and hold the body back until the server's 100, as curl does for uploads over 1 MB",
    )
    fl.add_argument(
        "--flood-client-cpus",
        type=cpu_set,
        help="run the clients and the /healthz probe on these CPUs (e.g. 1) and the server on the others, "
        "as if the clients were another machine (default: all share every CPU)",
    )
    fl.add_argument("--healthz-interval-ms", type=float, default=100)
    fl.add_argument("--answers-csv", help="write every answer's time, status and latencies to this CSV file")
    fl.add_argument(
        "--memory-bound-mb", type=float, help="the bound to hold; default: derived from the settings (see the output)"
    )
    so = parser.add_argument_group("soak mode")
    so.add_argument("--soak-seconds", type=float, default=600)
    so.add_argument(
        "--soak-warmup", type=float, help="seconds before the start RSS is taken (default: a tenth, at most 60)"
    )
    so.add_argument(
        "--soak-concurrency", type=int, default=4, help="default 4: within workers + queue on 2 CPUs, so no 503"
    )
    so.add_argument("--soak-requests", type=int, default=1_000_000, help="stop after this many requests too")
    so.add_argument("--soak-sample-ms", type=float, default=500)
    parser.add_argument("--sample-ms", type=float, default=100, help="RSS sampling period (default 100)")
    parser.add_argument(
        "--samples-csv", help="flood and soak: write the server's RSS (and fd) samples to this CSV file"
    )
    parser.add_argument("--request-timeout", type=float, default=300, help="seconds for one request (default 300)")
    args = parser.parse_args()
    if args.retry_wait != "header":
        try:
            float(args.retry_wait)
        except ValueError:
            parser.error("--retry-wait takes 'header' or seconds")
    if args.flood:
        run_flood(args)
    elif args.soak:
        run_soak(args)
    else:
        run_load(args)


if __name__ == "__main__":
    main()
