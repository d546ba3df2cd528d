"""The GIL-hold probe: it must see a hold that is there, and none where the GIL is let go."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from bench.gil_holds import held_gil

REPO = Path(__file__).resolve().parents[2]


def test_a_big_concatenation_is_seen_holding_the_gil() -> None:
    half = b"\x00" * (64 << 20)
    holds = held_gil(lambda: half + half, repeats=3)  # a 128 MB memcpy that keeps the GIL throughout
    # Back-to-back holds may read as one (the worker can take the GIL straight back), so count time, not holds.
    assert sum(holds.held_ms) > 0.5 * holds.seconds * 1000
    assert max(holds.held_ms) > 10


def test_sleeping_lets_the_probe_run() -> None:
    holds = held_gil(lambda: time.sleep(0.1), repeats=3)
    assert holds.held_ms == []
    assert holds.seconds >= 0.3


def test_the_bench_runs_a_real_cut_out() -> None:
    run = subprocess.run(
        [sys.executable, "bench/gil_holds.py", "--sizes", "0.5", "--formats", "png", "--images", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stderr
    row = re.search(r"^\| 0\.5 MP \| png \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", run.stdout, re.MULTILINE)
    assert row is not None, run.stdout
    assert int(row[1]) > 0
