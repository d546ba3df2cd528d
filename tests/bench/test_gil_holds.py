"""The GIL-hold probe: it must see a hold that is there, and none where the GIL is let go."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from bench.gil_holds import Holds, held_gil

REPO = Path(__file__).resolve().parents[2]


def test_a_big_concatenation_is_seen_holding_the_gil() -> None:
    half = b"\x00" * (64 << 20)
    holds = held_gil(lambda: half + half, repeats=3)  # a 128 MB memcpy that keeps the GIL throughout
    # Back-to-back holds may read as one (the worker can take the GIL straight back), so count time, not holds.
    assert sum(holds.held_ms) > 0.5 * holds.seconds * 1000
    assert max(holds.held_ms) > 10


def _held_share(holds: Holds) -> float:
    return sum(holds.held_ms) / (holds.seconds * 1000)


def test_sleeping_lets_the_probe_run() -> None:
    """Against a control taken in the same moment: a busy machine (or another thread of this
    process) delays the probe now and then, and that must not read as a sleep holding the GIL."""
    half = b"\x00" * (64 << 20)
    sleeping = held_gil(lambda: time.sleep(0.1), repeats=3)
    holding = held_gil(lambda: half + half, repeats=3)
    assert sleeping.seconds >= 0.3
    assert _held_share(sleeping) < 0.2 * _held_share(holding), (sleeping.held_ms, _held_share(holding))


def test_the_bench_runs_a_real_cut_out() -> None:
    run = subprocess.run(
        [sys.executable, "bench/gil_holds.py", "--sizes", "0.5", "--formats", "png", "--images", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stderr
    row = re.search(r"^\| 0\.5 MP \| png \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", run.stdout, re.MULTILINE)
    assert row is not None, run.stdout
    assert int(row[1]) > 0
