"""The scaling bench: threads of one process against processes, on the real model and photo."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_threads_are_measured_against_processes() -> None:
    run = subprocess.run(
        [
            sys.executable, "bench/scaling.py", "--concurrency", "2", "--seconds", "1", "--sizes", "0.5",
            "--variants", "processes,threads,threads-give-back", "--load-margin", "4",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stderr
    rows = {
        match["variant"]: match
        for match in re.finditer(
            r"^\| 0\.5 MP \| (?P<variant>[\w-]+) \| (?P<rate>[\d.]+) \| (?P<share>\d+%|-) \| (?P<cpu>\d+) \|",
            run.stdout, re.MULTILINE,
        )
    }
    assert set(rows) == {"processes", "threads", "threads-give-back"}, run.stdout
    assert rows["processes"]["share"] == "100%"
    for row in rows.values():
        assert float(row["rate"]) > 0.2  # two cut-outs at once on any machine that runs the suite
        assert int(row["cpu"]) > 50  # busy, not waiting for the common start
