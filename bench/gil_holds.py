"""Where does a cut-out hold Python's GIL in one go? No HTTP: the pipeline in the main thread,
and beside it a probe thread that asks to run every 0.5 ms.

    .venv/bin/python bench/gil_holds.py [--sizes 0.5,12] [--formats png,webp,jpeg] [--images 8]

A probe that wakes late found the GIL held that long by C code that kept it (Python code would
have let it go after ``sys.getswitchinterval()``, 5 ms). Each late wake-up is charged to the line
the worker stands on right after, which is the call that held it or the one after that. With
16 workers in one process every such hold stalls the other 15 and the event loop, which is why
bench/scaling.py's threads trail its processes; this names the holds worth removing.
The images are bench/load.py's (.bench/images, made from the shared dev photo on first use).
"""

from __future__ import annotations

import argparse
import linecache
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.latency import make_image  # noqa: E402

TICK_S = 0.0005
APP = f"{REPO / 'app'}/"


@dataclass
class Holds:
    repeats: int
    seconds: float  # wall time of all repeats
    held_ms: list[float] = field(default_factory=list)  # each hold over the threshold
    where_ms: Counter[tuple[str, int]] = field(default_factory=Counter)  # by the worker's line right after

    def per_repeat(self, value: float) -> float:
        return value / max(1, self.repeats)


def held_gil(work: Callable[[], object], repeats: int, threshold_ms: float = 3.0) -> Holds:
    """Run ``work`` ``repeats`` times in this thread while a probe thread measures its own lateness."""
    worker = threading.get_ident()
    holds = Holds(repeats=repeats, seconds=0.0)
    done = threading.Event()

    def probe() -> None:
        last = time.perf_counter()
        while True:
            time.sleep(TICK_S)
            now = time.perf_counter()
            late_ms = (now - last - TICK_S) * 1000.0
            last = now
            if late_ms > threshold_ms:
                holds.held_ms.append(late_ms)
                holds.where_ms[_where(sys._current_frames().get(worker))] += late_ms
            if done.is_set():  # checked after the wake-up, so a hold that ends the run is counted
                return

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    started = time.perf_counter()
    try:
        for _ in range(repeats):
            work()
    finally:
        holds.seconds = time.perf_counter() - started
        done.set()
        prober.join()
    return holds


def _where(frame: FrameType | None) -> tuple[str, int]:
    """The innermost line of our own code in the worker's stack (app/, else the innermost of all).
    No source is read here: reading a file lets go of the GIL, and the worker would run unseen."""
    innermost: tuple[str, int] | None = None
    while frame is not None:
        place = (frame.f_code.co_filename, frame.f_lineno)
        if place[0].startswith(APP):
            return place
        innermost = innermost or place
        frame = frame.f_back
    return innermost or ("?", 0)


def describe(place: tuple[str, int]) -> str:
    filename, line = place
    return f"{filename.removeprefix(APP)}:{line} {linecache.getline(filename, line).strip()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.5,12", help="megapixels, comma-separated (default 0.5,12)")
    parser.add_argument("--formats", default="png", help="png, webp, jpeg, comma-separated (default png)")
    parser.add_argument("--images", type=int, default=8, help="cut-outs a row (default 8)")
    parser.add_argument("--threshold-ms", type=float, default=3.0, help="a shorter wait is not counted (default 3)")
    parser.add_argument("--top", type=int, default=5, help="lines to name a row (default 5)")
    args = parser.parse_args()

    from app.model.loader import load_model
    from app.pipeline import RemoveOptions, remove_background
    from app.settings import Settings

    model = load_model(Settings.from_env())
    print(f"python {sys.version.split()[0]}, switch interval {sys.getswitchinterval() * 1000:.0f} ms")
    print("| photo | format | ms a cut-out | holds over the threshold a cut-out | held ms a cut-out | longest ms |")
    print("|---|---|---|---|---|---|")
    named: list[str] = []
    for megapixels in (float(size) for size in args.sizes.split(",")):
        data = make_image(megapixels).read_bytes()
        for output in args.formats.split(","):
            options = RemoveOptions(format=output)  # type: ignore[arg-type]
            remove_background(data, options, model)  # warm-up: first-call costs are not holds
            holds = held_gil(lambda: remove_background(data, options, model), args.images, args.threshold_ms)
            print(
                f"| {megapixels:g} MP | {output} | {holds.per_repeat(holds.seconds * 1000):.0f} "
                f"| {holds.per_repeat(len(holds.held_ms)):.1f} | {holds.per_repeat(sum(holds.held_ms)):.1f} "
                f"| {max(holds.held_ms, default=0.0):.1f} |"
            )
            for place, ms in holds.where_ms.most_common(args.top):
                named.append(f"  {megapixels:g} MP {output}: {holds.per_repeat(ms):6.1f} ms a cut-out before {describe(place)}")
    if named:
        print("\nWhere the worker stood right after each hold:")
        print("\n".join(named))


if __name__ == "__main__":
    main()
