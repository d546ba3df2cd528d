"""Cold start: process start to the first 200 from ``/healthz`` (model loaded and warmed up).

    .venv/bin/python bench/cold_start.py [--runs 5]

Each run starts ``python -m app`` afresh, as a container or ``make run`` would,
polls ``/healthz`` every 10 ms and stops the process once it answers 200.
Prints every run and the median; the seed's serverless deployment took 30 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cold_start_s(timeout_s: float = 60.0) -> float:
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=REPO, env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - started < timeout_s:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError):
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode} before it was ready")
            time.sleep(0.01)
        raise RuntimeError(f"not ready after {timeout_s} s")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = [cold_start_s() for _ in range(args.runs)]
    for index, seconds in enumerate(times, 1):
        print(f"run {index}: {seconds:.2f} s")
    print(f"median of {len(times)}: {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
