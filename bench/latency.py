"""End-to-end latency and peak memory of our pipeline against rembg 2.x, on the same photos.

Run from anywhere (``make bench`` calls ``.venv/bin/python bench/latency.py``)::

    .venv/bin/python bench/latency.py                          # 0.5, 12, 24, 48 MP, 3 timed runs each
    .venv/bin/python bench/latency.py --sizes 0.5,12 --repeats 1
    .venv/bin/python bench/latency.py --only ours

"ours" is the service's defaults (u2net, quality balanced, refined); "ours-unrefined" the
same with ``refine=false``, so the table shows what refinement costs in the same run;
"ours-u2netp" is ``MODEL=u2netp``, the fast model one setting away. rembg runs on the same
ONNX files: "rembg" on u2netp (the anchor of the quality targets), "rembg-u2net" on u2net
(the same weights as our default).

Both sides do the same job: JPEG bytes in, transparent full-resolution PNG bytes out, on
the CPU. Each (implementation, size) runs in a
fresh child process, one after another, so its peak RSS (VmHWM) belongs to that run
alone. A child loads the model, does one warm-up call, then times ``--repeats`` calls
and prints the median as JSON.

The photos are made from the real lemur photo in ../shared/evaldata (680x440): Lanczos
upscaling to the target pixel count plus seeded Gaussian grain, so the JPEGs carry
realistic detail; they are cached in .bench/images/. rembg is pointed at
.bench/u2net/NAME.onnx, links to models/NAME.onnx, and the children refuse any network
connection, so rembg cannot download a model behind our back.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SOURCE_PHOTO = REPO / "../shared/evaldata/dev/images/lemur_original.jpg"
MODEL = REPO / "models/u2netp.onnx"
MODEL_MD5 = "8e83ca70e441ab06c318d82300c84806"  # what rembg expects for u2netp
CACHE = REPO / ".bench"
IMAGES = CACHE / "images"
U2NET_HOME = CACHE / "u2net"
DEFAULT_SIZES = (0.5, 12.0, 24.0, 48.0)  # megapixels
IMPLEMENTATIONS = ("ours", "ours-unrefined", "ours-u2netp", "rembg", "rembg-u2net")
REMBG_MODELS = {"rembg": "u2netp", "rembg-u2net": "u2net"}
CHILD_TIMEOUT_S = 1800  # a 48 MP run with three repeats on two slow cores stays far below this
GRAIN_SIGMA = 3.0
SEED = 20240607


# ---------------------------------------------------------------- test images


def image_path(megapixels: float) -> Path:
    return IMAGES / f"lemur_{megapixels:g}mp.jpg"


def make_image(megapixels: float) -> Path:
    """Upscale the real photo to ``megapixels`` and add grain; cached, deterministic."""
    path = image_path(megapixels)
    if path.exists():
        return path
    import numpy as np
    from PIL import Image

    with Image.open(SOURCE_PHOTO) as source:
        source = source.convert("RGB")
        aspect = source.width / source.height
        height = round((megapixels * 1e6 / aspect) ** 0.5)
        width = round(height * aspect)
        pixels = np.asarray(source.resize((width, height), Image.Resampling.LANCZOS))
    rng = np.random.default_rng(SEED)
    grained = np.empty_like(pixels)
    band = 512  # rows at a time, so a 48 MP image needs no gigabyte of float noise
    for top in range(0, height, band):
        rows = pixels[top : top + band].astype(np.float32)
        rows += rng.standard_normal(rows.shape, dtype=np.float32) * GRAIN_SIGMA
        grained[top : top + band] = np.clip(np.rint(rows), 0, 255)
    IMAGES.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    Image.fromarray(grained).save(partial, "JPEG", quality=90)
    partial.replace(path)  # never leave a half-written file in the cache
    return path


REMBG_MD5 = {"u2netp": MODEL_MD5, "u2net": "60024c5c889badc19c04ad937298a77b"}  # what rembg expects


def prepare_rembg_home(name: str = "u2netp") -> None:
    """Give rembg our model file under the name it looks for, so it has nothing to fetch.

    rembg 2.0.86 takes ``$U2NET_HOME/NAME.onnx`` as soon as it exists, without checking
    it, so we check the md5 it would have downloaded against ourselves.
    """
    model = REPO / "models" / f"{name}.onnx"
    digest = hashlib.md5(model.read_bytes()).hexdigest()
    if digest != REMBG_MD5[name]:
        raise SystemExit(f"{model} has md5 {digest}, not rembg's {name} {REMBG_MD5[name]}")
    U2NET_HOME.mkdir(parents=True, exist_ok=True)
    link = U2NET_HOME / f"{name}.onnx"
    if not link.exists():
        link.unlink(missing_ok=True)  # a dangling link
        link.symlink_to(os.path.relpath(model, U2NET_HOME))


# ---------------------------------------------------------------- child: one implementation, one image


def _refuse_network() -> None:
    """Any attempt to connect (a model download) fails loudly instead of happening."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("network access attempted during the benchmark")

    socket.getaddrinfo = refuse  # type: ignore[assignment]
    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(impl: str, megapixels: float, repeats: int) -> dict[str, Any]:
    """Load, warm up once, time ``repeats`` end-to-end calls: bytes in, PNG bytes out."""
    _refuse_network()
    report: dict[str, Any] = {"impl": impl, "megapixels": megapixels}
    if impl.startswith("ours"):
        sys.path.insert(0, str(REPO))
        from app.allocator import keep_buffers_while_busy
        from app.imaging.encode import EncoderSettings
        from app.model import load_model
        from app.pipeline import Limits, RemoveOptions, remove_background
        from app.settings import Settings

        # The service's own configuration (INTRA_OP_THREADS etc. may be set); cwd is the repo
        # root, so the default model path resolves and is checked against its pinned hash.
        settings = Settings.from_env()
        if impl == "ours-u2netp":
            settings = replace(settings, model="u2netp")
        keep_buffers_while_busy()  # as the service's lifespan does
        model = load_model(settings)
        refine = settings.refine and impl != "ours-unrefined"
        options = RemoveOptions(refine=refine, quality=settings.quality)
        limits, encoder = Limits.from_settings(settings), EncoderSettings.from_settings(settings)
        report["model"] = model.info.name
        report["intra_op_threads"] = f"{settings.intra_op_threads}, {model.solo_threads or 'no'} for an image alone"

        def call(data: bytes) -> tuple[bytes, dict[str, float]]:
            result = remove_background(data, options, model, limits, encoder)
            return result.body, result.timings_ms

    else:
        from rembg import new_session, remove

        session = new_session(REMBG_MODELS[impl])
        report["model_file"] = os.path.realpath(type(session).download_models())  # found, not fetched

        def call(data: bytes) -> tuple[bytes, dict[str, float]]:
            return remove(data, session=session), {}

    data = image_path(megapixels).read_bytes()
    call(data)  # warm-up: lazy initialisation and first-touch allocations are not latency
    runs: list[tuple[float, int, dict[str, float]]] = []
    for _ in range(repeats):
        started = time.perf_counter()
        body, stages = call(data)
        runs.append((time.perf_counter() - started, len(body), stages))
    runs.sort(key=lambda run: run[0])
    middle = runs[(len(runs) - 1) // 2]  # for an even count, the faster middle run's stages
    report.update(
        median_s=statistics.median(run[0] for run in runs),
        runs_s=[round(run[0], 3) for run in runs],
        png_bytes=middle[1],
        stages_ms=middle[2],
        peak_rss_mb=round(_peak_rss_mb(), 1),
    )
    return report


# ---------------------------------------------------------------- parent: run children, print the table


def spawn(impl: str, megapixels: float, repeats: int) -> dict[str, Any]:
    """One fresh process per measurement; a failure becomes a row, not a crash."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", impl, f"{megapixels:g}", "--repeats", str(repeats)]
    env = {**os.environ, "U2NET_HOME": str(U2NET_HOME)}
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT_S} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {last[:160]}"}
    return json.loads(lines[-1])  # the report is the last line; libraries may print before it


def _cell(value: float | None, fmt: str, report: dict[str, Any] | None = None) -> str:
    if report and "error" in report:
        return f"FAILED ({report['error']})"
    return "-" if value is None else format(value, fmt)


def print_table(results: dict[tuple[str, float], dict[str, Any]], sizes: list[float]) -> None:
    impls = list(dict.fromkeys(impl for impl, _ in results))
    print("\n| size | " + " | ".join(f"{impl} s" for impl in impls) + " | " + " | ".join(f"{impl} peak MB" for impl in impls) + " |")
    print("|---|" + "---|" * (2 * len(impls)))
    for size in sizes:
        row = [results.get((impl, size), {}) for impl in impls]
        times = [_cell(report.get("median_s"), ".3f", report) for report in row]
        peaks = [_cell(report.get("peak_rss_mb"), ".0f") for report in row]
        print(f"| {size:g} MP | " + " | ".join(times) + " | " + " | ".join(peaks) + " |")

    pairs = [(ours, rembg) for ours in ("ours", "ours-u2netp") for rembg in REMBG_MODELS if ours in impls and rembg in impls]
    if pairs:
        print("\n| size | " + " | ".join(f"{o} against {r}: faster, RSS ratio" for o, r in pairs) + " | refinement adds |")
        print("|---|" + "---|" * (len(pairs) + 1))
    for size in sizes if pairs else []:
        cells = []
        for ours_impl, rembg_impl in pairs:
            ours, rembg = results.get((ours_impl, size), {}), results.get((rembg_impl, size), {})
            o_s, r_s, o_m, r_m = ours.get("median_s"), rembg.get("median_s"), ours.get("peak_rss_mb"), rembg.get("peak_rss_mb")
            speed_up = r_s / o_s if o_s and r_s else None
            rss_ratio = o_m / r_m if o_m and r_m else None
            cells.append(f"{_cell(speed_up, '.2f')}x, {_cell(rss_ratio, '.2f')}")
        o_s, p_s = results.get(("ours", size), {}).get("median_s"), results.get(("ours-unrefined", size), {}).get("median_s")
        added = (o_s / p_s - 1) * 100 if o_s and p_s else None
        print(f"| {size:g} MP | " + " | ".join(cells) + f" | {_cell(added, '+.0f')}{' %' if added is not None else ''} |")

    print("\nOutput PNG sizes (bytes) and every timed run (s):")
    for (impl, size), report in results.items():
        if "error" not in report:
            print(f"  {size:g} MP {impl:14}: {report['png_bytes']:>12,} bytes   runs {report['runs_s']}")

    threads = next((r["intra_op_threads"] for r in results.values() if "intra_op_threads" in r), None)
    print(f"\nOur pipeline's stages in the median run (ms; onnxruntime intra-op threads: {threads}):")
    for (impl, size), report in results.items():
        if report.get("stages_ms"):
            print(f"  {size:g} MP {impl:14}: " + ", ".join(f"{name} {ms:.0f}" for name, ms in report["stages_ms"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(f"{s:g}" for s in DEFAULT_SIZES), help="megapixels, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per run, after one warm-up")
    parser.add_argument("--only", choices=IMPLEMENTATIONS, help="benchmark one implementation")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "MP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    if args.child:
        impl, size = args.child
        print(json.dumps(run_child(impl, float(size), args.repeats)))
        return

    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    impls = [args.only] if args.only else list(IMPLEMENTATIONS)
    for impl in impls:
        if impl in REMBG_MODELS:
            prepare_rembg_home(REMBG_MODELS[impl])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.repeats} timed run(s) after 1 warm-up")
    for size in sizes:
        path = make_image(size)
        from PIL import Image

        with Image.open(path) as image:
            print(f"  {path.relative_to(REPO)}: {image.width}x{image.height}, {path.stat().st_size / 1e6:.1f} MB")

    results: dict[tuple[str, float], dict[str, Any]] = {}
    for size in sizes:
        for impl in impls:
            print(f"running {impl} at {size:g} MP ...", flush=True)
            results[(impl, size)] = report = spawn(impl, size, args.repeats)
            if "model_file" in report:
                print(f"  rembg loaded {report['model_file']}")
    print_table(results, sizes)


if __name__ == "__main__":
    main()
