"""Does the pipeline scale with the cores? No HTTP: the same cut-outs in N threads of one process,
as the service runs them, against N one-thread processes, and variants that each take one
suspect away.

    .venv/bin/python bench/scaling.py [--sizes 0.5,12] [--seconds 8] [--concurrency N] [--variants ...]

N defaults to the available CPUs. Each variant runs in fresh processes, so no allocator state
carries over. Every thread (or process) first cuts one photo out to warm up, then all start
together and go on for ``--seconds``; a variant's rate is the sum of each thread's own rate
(images over the time to its last image), so images still running at the deadline bias nothing.
The images are bench/load.py's (.bench/images, made from the shared dev photo on first use).

Variants:
  processes             N processes of one thread each: the ceiling for this pipeline
  threads               the service's layout: N threads, one shared session and arena
  threads-model         the model alone (resize, normalise, run), N threads, shared session
  processes-model       the model alone, N processes: bench/load.py's "model-only limit"
  threads-own-sessions  N threads, each with its own session and onnxruntime arena
  threads-give-back     N threads, glibc handing big buffers back at once (mmap 8 MB, trim 1 MB, as before)
  threads-keep-all      N threads, glibc keeping whatever is freed (mmap 32 MB, trim 1 GB)
  threads-unrefined     N threads, without edge refinement
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.latency import make_image  # noqa: E402

VARIANTS = (  # "processes" first: the others are given as a share of it
    "processes",
    "threads",
    "threads-model",
    "processes-model",
    "threads-own-sessions",
    "threads-give-back",
    "threads-keep-all",
    "threads-unrefined",
)
MODEL_ONLY = ("threads-model", "processes-model")  # the photo's size does not matter to these
CHILD_SLACK_S = 120.0


@dataclass
class Outcome:
    rate: float  # images/s
    span_s: float  # from the common start to the last image's end
    cpu_s: float
    sys_s: float
    peak_rss_mb: float


# ---------------------------------------------------------------- one child: T threads in one process


def child(variant: str, megapixels: float, threads: int, start_at: float, seconds: float) -> dict[str, float]:
    from app.allocator import keep_buffers_while_busy
    from app.model.loader import load_model
    from app.pipeline import RemoveOptions, remove_background
    from app.settings import Settings

    if variant == "threads-give-back":
        keep_buffers_while_busy(mmap_threshold_bytes=8 << 20, trim_threshold_bytes=1 << 20)
    elif variant == "threads-keep-all":
        keep_buffers_while_busy(trim_threshold_bytes=1 << 30)
    else:
        keep_buffers_while_busy()  # as the service does
    settings = replace(Settings.from_env(), workers=threads, intra_op_threads=1, solo_threads=1)
    shared = load_model(settings)
    models = [shared] * threads
    if variant == "threads-own-sessions":
        models = [_own_session_model(shared) for _ in range(threads)]
    data = make_image(megapixels).read_bytes()
    options = RemoveOptions(refine=variant != "threads-unrefined")

    if variant in MODEL_ONLY:
        from app.imaging.decode import decode_image

        rgb = decode_image(data, 10**9).rgb

        def one(model: object) -> None:
            model.predict(rgb)  # type: ignore[attr-defined]
    else:

        def one(model: object) -> None:
            remove_background(data, options, model)  # type: ignore[arg-type]

    rates: list[float] = [0.0] * threads
    spans: list[float] = [0.0] * threads
    usage: list[resource.struct_rusage] = []

    def work(index: int) -> None:
        model = models[index]
        with model.in_use(), model.in_use():  # never the solo session, as under load
            one(model)
            time.sleep(max(0.0, start_at - time.time()))
            if index == 0:
                usage.append(resource.getrusage(resource.RUSAGE_SELF))
            started = time.perf_counter()
            deadline = started + seconds
            done = 0
            while time.perf_counter() < deadline:
                one(model)
                done += 1
            spans[index] = time.perf_counter() - started
            rates[index] = done / spans[index]

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    before = usage[0]
    return {
        "span_s": max(spans),
        "rate": sum(rates),
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "sys_s": after.ru_stime - before.ru_stime,
        "peak_rss_mb": after.ru_maxrss / 1024,
    }


def _own_session_model(shared: object) -> object:
    """The same model with a session of its own arena (onnxruntime's default), not the process-wide one."""
    from app.model.session import SaliencyModel, _session

    info = shared.info  # type: ignore[attr-defined]
    return SaliencyModel(_session(Path(info.path).read_bytes(), 1, shared_arena=False), info)


# ---------------------------------------------------------------- the parent


def run_variant(variant: str, megapixels: float, concurrency: int, seconds: float, load_margin_s: float) -> Outcome:
    processes = concurrency if variant.startswith("processes") else 1
    threads = 1 if variant.startswith("processes") else concurrency
    start_at = time.time() + load_margin_s
    command = [
        sys.executable, __file__, "--child", variant, "--size", str(megapixels),
        "--threads", str(threads), "--start-at", str(start_at), "--seconds", str(seconds),
    ]
    children = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    results = []
    for process in children:
        out, err = process.communicate(timeout=load_margin_s + seconds + CHILD_SLACK_S)
        if process.returncode != 0:
            raise RuntimeError(f"{variant} child failed: {err.strip().splitlines()[-1:] or process.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return Outcome(
        rate=sum(r["rate"] for r in results),
        span_s=max(r["span_s"] for r in results),
        cpu_s=sum(r["cpu_s"] for r in results),
        sys_s=sum(r["sys_s"] for r in results),
        peak_rss_mb=sum(r["peak_rss_mb"] for r in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.5,12", help="megapixels, comma-separated (default 0.5,12)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds of each variant (default 8)")
    parser.add_argument("--concurrency", type=int, default=len(os.sched_getaffinity(0)), help="default: the CPUs")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: all)")
    parser.add_argument(
        "--load-margin", type=float, default=8.0,
        help="seconds for every process to load the model and warm up before the common start (default 8)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size, args.threads, args.start_at, args.seconds)), flush=True)
        return

    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    sizes = [float(s) for s in args.sizes.split(",")]
    print(f"{args.concurrency} at once, {args.seconds:g} s a variant, {os.cpu_count()} CPUs online", flush=True)
    print("\n| photo | variant | images/s | of processes | CPU % | of it system | peak RSS MB |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for index, megapixels in enumerate(sizes):
        ceiling = None
        for variant in variants:
            if variant in MODEL_ONLY and index > 0:
                continue  # measured with the first size
            try:
                outcome = run_variant(variant, megapixels, args.concurrency, args.seconds, args.load_margin)
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                print(f"| {megapixels:g} MP | {variant} | failed: {exc} | | | | |", flush=True)
                continue
            if variant == "processes":
                ceiling = outcome.rate
            share = f"{outcome.rate / ceiling:.0%}" if ceiling and variant not in MODEL_ONLY else "-"
            cpu = 100 * outcome.cpu_s / outcome.span_s
            system = f"{outcome.sys_s / outcome.cpu_s:.0%}" if outcome.cpu_s else "-"
            print(
                f"| {megapixels:g} MP | {variant} | {outcome.rate:.2f} | {share} | {cpu:.0f} | {system} "
                f"| {outcome.peak_rss_mb:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
