"""``bgremove``: cut out many photos from the command line.

    bgremove photos/ -o cutouts/                  # a folder, recursively, in parallel
    bgremove 'shoot/*.jpg' portrait.heic -o out/  # files and globs (quoted globs work on any shell)
    bgremove cat.jpg -o cat.webp                  # one file; the format follows the suffix
    bgremove photos/ -o out/ --server http://host:8000   # send the work to a running service

The work runs in this process through the very same ``remove_background`` the
service uses, so no server is needed; ``--server`` sends it to one instead.
Exit status: 0 when every image was cut out, 1 when any failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO, get_args

from app import __version__
from app.errors import ApiError
from app.imaging.color import parse_color
from app.imaging.encode import EncoderSettings, OutputFormat
from app.pipeline import Limits, RemoveOptions, remove_background
from app.settings import QUALITIES, Settings, SettingsError, available_cpus

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif", ".hif"}
)
FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)
SUFFIX_FORMATS: dict[str, OutputFormat] = {".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}
FORMAT_SUFFIXES: dict[OutputFormat, str] = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}

Cutter = Callable[[bytes], bytes]  # image bytes -> encoded cut-out; raises on failure


class UsageError(Exception):
    """A command line that cannot be carried out; reported before any work starts."""


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass
class Tally:
    done: int = 0
    skipped: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)


# ---- planning: arguments -> jobs ----------------------------------------------------------------


def collect_sources(inputs: Sequence[str], output_folder: Path | None = None) -> list[tuple[Path, Path]]:
    """(file, its path relative to the output folder) for every input, in a stable order.

    A folder contributes its image files, recursively, keeping its sub-folders;
    a file is taken whatever its suffix (the format is sniffed from its bytes);
    anything else is expanded as a glob, so quoted patterns work on every shell.
    Folders and globs never reach into ``output_folder``: a cut-out there would be
    cut out again on the next run. Only a file named on its own is taken from it.
    """
    outside = _outside(output_folder)
    found: list[tuple[Path, Path]] = []
    for argument in inputs:
        path = Path(argument)
        if path.is_dir():
            if output_folder is not None and not outside(path):
                raise UsageError(
                    f"the input folder {shown(argument)} is the output folder or inside it: its cut-outs would be read "
                    "as photos on the next run; name another -o"
                )
            found.extend((image, image.relative_to(path)) for image in _images_in(path, outside))
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            matches = sorted(Path(match) for match in glob.glob(argument, recursive=True) if Path(match).is_file())
            if not matches:
                raise UsageError(f"no such file, folder or match: {shown(argument)}")
            found.extend((match, Path(match.name)) for match in matches if outside(match))
    unique: dict[Path, Path] = {}
    for source, relative in found:
        unique.setdefault(source.resolve(), relative)
    return [(source, relative) for source, relative in unique.items()]


def _outside(folder: Path | None) -> Callable[[Path], bool]:
    """Whether a path lies outside ``folder`` (every path does when there is none)."""
    if folder is None:
        return lambda path: True
    resolved = folder.resolve()
    return lambda path: not path.resolve().is_relative_to(resolved)


def _images_in(folder: Path, outside: Callable[[Path], bool]) -> list[Path]:
    """The image files under ``folder``, sorted, never walking into a sub-folder that fails ``outside``."""
    images: list[Path] = []
    for parent, folders, names in os.walk(folder):
        here = Path(parent)
        folders[:] = [name for name in folders if outside(here / name)]
        images.extend(here / name for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(image for image in images if image.is_file())


def plan_jobs(inputs: Sequence[str], output: Path, output_format: OutputFormat, into_file: bool) -> list[Job]:
    """Map each source to its output; two sources that would share a name keep their suffixes apart."""
    sources = collect_sources(inputs, None if into_file else output)
    if into_file:
        if len(sources) != 1:
            raise UsageError(
                f"-o {shown(output)} names one file, but {len(sources)} inputs were given; name a folder instead"
            )
        return [_checked(Job(sources[0][0], output))]
    suffix = FORMAT_SUFFIXES[output_format]
    jobs: list[Job] = []
    taken: set[Path] = set()
    for source, relative in sources:
        target = output / relative.with_suffix(suffix)
        if target in taken:  # photo.jpg and photo.png in one folder
            target = output / relative.with_name(relative.name + suffix)
        taken.add(target)
        jobs.append(_checked(Job(source, target)))
    return jobs


def _checked(job: Job) -> Job:
    if job.target.resolve() == job.source.resolve():
        raise UsageError(f"the output for {shown(job.source)} would overwrite it; name another -o")
    return job


# ---- the two ways of doing the work ---------------------------------------------------------------


def local_cutter(options: RemoveOptions, settings: Settings, model_name: str | None = None) -> Cutter:
    """The pipeline in this process, one model shared by every worker thread: ``--model``, or for
    ``--quality best`` the strongest model of the catalogue, else the MODEL setting's."""
    from app.model import load_model  # onnxruntime loads only when work is really done here
    from app.model.catalog import CATALOGUE

    if model_name is None and options.quality == "best" and settings.model_path is None:
        model_name = next(iter(CATALOGUE))
    model = load_model(settings if model_name is None else replace(settings, model=model_name, model_path=None))
    limits, encoder = Limits.from_settings(settings), EncoderSettings.from_settings(settings)

    def cut(data: bytes) -> bytes:
        return remove_background(data, options, model, limits, encoder).body

    return cut


class ServerError(Exception):
    pass


def server_cutter(
    base_url: str, options: RemoveOptions, bg: str | None, model_name: str | None = None, timeout_s: float = 300.0
) -> Cutter:
    """``POST /remove`` on a running service; a busy one (503) is waited for as its Retry-After says."""
    query: dict[str, object] = {
        "format": options.format, "mask": options.mask_only, "crop": options.crop, "refine": options.refine, "quality": options.quality
    }
    if bg is not None:
        query["bg"] = bg
    if model_name is not None:
        query["model"] = model_name
    url = base_url.rstrip("/") + "/remove?" + urllib.parse.urlencode({k: str(v).lower() for k, v in query.items()})

    def cut(data: bytes) -> bytes:
        for _ in range(60):
            request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/octet-stream"})
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as response:
                    return response.read()
            except urllib.error.HTTPError as exc:
                if exc.code == 503 and exc.headers.get("Retry-After", "").isdigit():
                    time.sleep(max(1, int(exc.headers["Retry-After"])))
                    continue
                raise ServerError(_server_message(exc)) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ServerError(f"cannot reach {base_url}: {reason}") from None
        raise ServerError(f"{base_url} stayed busy; try fewer --workers")

    return cut


def _server_message(error: urllib.error.HTTPError) -> str:
    try:
        return f"{json.loads(error.read())['error']['message']} ({error.code})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {error.code} {error.reason}"


class InputError(Exception):
    """The input file could not be taken; the message says why (its path is on the failure line)."""


class OutputError(Exception):
    """The cut-out could not be written; the message names the output path."""


def process(job: Job, cut: Cutter, max_bytes: int) -> None:
    """Read, cut out, and write the result whole (a stopped run never leaves half a file)."""
    result = cut(read_input(job.source, max_bytes))
    try:
        job.target.parent.mkdir(parents=True, exist_ok=True)
        partial = job.target.with_name(f".{job.target.name}.partial")
        partial.write_bytes(result)
        os.replace(partial, job.target)
    except OSError as exc:
        raise OutputError(f"cannot write {shown(job.target)}: {exc.strerror or exc}") from None


def read_input(source: Path, max_bytes: int) -> bytes:
    """The file's bytes, its size checked before any is read (MAX_UPLOAD_BYTES, as the service does)."""
    try:
        with source.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > max_bytes:
                raise InputError(f"it is {size:,} bytes, larger than MAX_UPLOAD_BYTES ({max_bytes:,})")
            data = file.read(max_bytes + 1)  # a file that grew since the check is still cut short
    except OSError as exc:
        raise InputError(f"cannot read it: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise InputError(f"it grew past MAX_UPLOAD_BYTES ({max_bytes:,}) while being read")
    return data


def run_jobs(jobs: Sequence[Job], cut: Cutter, workers: int, progress: Progress, max_bytes: int) -> Tally:
    """At most ``workers`` images in flight (and in memory) at once, whatever the number of jobs."""
    tally = Tally()
    pending: dict[Future[None], Job] = {}
    queue = iter(jobs)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bgremove") as pool:
        try:
            for job in _take(queue, workers):
                pending[pool.submit(process, job, cut, max_bytes)] = job
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    error = future.exception()
                    if error is None:
                        tally.done += 1
                    else:
                        tally.failures.append((job.source, _describe(error)))
                    progress.advance(failed=error is not None)
                    for following in _take(queue, 1):
                        pending[pool.submit(process, following, cut, max_bytes)] = following
        except KeyboardInterrupt:
            for future in pending:
                future.cancel()
            raise
    return tally


def _take(jobs: Iterable[Job], count: int) -> list[Job]:
    taken = []
    for job in jobs:
        taken.append(job)
        if len(taken) == count:
            break
    return taken


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiError):
        return shown(error.message)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return shown(str(error) or type(error).__name__)


def shown(text: object) -> str:
    """``text`` safe for a terminal: control characters (a newline, an escape sequence) and
    undecodable bytes in a file name are printed as Python escapes, not sent raw."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(text))


# ---- progress -------------------------------------------------------------------------------------


class Progress:
    """A one-line bar with rate and ETA on a terminal; a line every few seconds in a log."""

    def __init__(self, total: int, stream: TextIO, enabled: bool = True) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.finished = self.failed = 0
        self.started = self._last_drawn = time.monotonic()
        self.interactive = stream.isatty()

    def advance(self, failed: bool = False) -> None:
        self.finished += 1
        self.failed += failed
        now = time.monotonic()
        if self.enabled and (self.interactive or now - self._last_drawn >= 5 or self.finished == self.total):
            self._last_drawn = now
            self.stream.write(("\r" if self.interactive else "") + self.line(now) + ("" if self.interactive else "\n"))
            self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.finished / elapsed
        share = self.finished / self.total if self.total else 1.0
        bar = ("#" * round(share * 24)).ljust(24, ".")
        eta = (self.total - self.finished) / rate if rate > 0 else 0.0
        failed = f"  {self.failed} failed" if self.failed else ""
        return f"[{bar}] {self.finished}/{self.total} {share:4.0%}  {rate:.1f} img/s  ETA {_duration(eta)}{failed}  "

    def close(self) -> None:
        if self.enabled and self.interactive and self.finished:
            self.stream.write("\n")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


# ---- the command ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgremove",
        description="Remove the background of photos: files, folders (recursively) and globs.",
        epilog="The model and limits follow the service's settings (MODEL, MODEL_PATH, QUALITY, MAX_PIXELS, ...).",
    )
    parser.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                        help="output folder (sub-folders mirror the input folders), or a file name for a single input")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: png, or the suffix of a single output file)")
    parser.add_argument("--bg", metavar="COLOUR", help="background colour: #rrggbb, #rrggbbaa or a CSS name (default transparent)")
    parser.add_argument("--mask", action="store_true", help="write the alpha mask instead of the cut-out")
    parser.add_argument("--crop", action="store_true", help="crop to the subject")
    parser.add_argument("--no-refine", dest="refine", action="store_false", help="skip edge refinement (faster, softer edges)")
    parser.add_argument("--model", metavar="NAME", help="u2net or u2netp (default: the MODEL setting); with --server, any model it has loaded")
    parser.add_argument("--quality", choices=QUALITIES, help="fast, balanced or best (default: the QUALITY setting)")
    parser.add_argument("--workers", type=int, metavar="N", help="images processed at once (default: the CPUs available)")
    parser.add_argument("--skip-existing", action="store_true", help="leave inputs whose output already exists")
    parser.add_argument("--server", metavar="URL", help="send the work to a running service instead, e.g. http://127.0.0.1:8000")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def output_format(args: argparse.Namespace, into_file: bool) -> OutputFormat:
    implied = SUFFIX_FORMATS.get(args.output.suffix.lower()) if into_file else None
    if args.format and implied and args.format != implied:
        raise UsageError(f"--format {args.format} contradicts the output file's suffix {shown(args.output.suffix)}")
    return args.format or implied or "png"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.workers is not None and args.workers < 1:
            raise UsageError("--workers must be at least 1")
        into_file = args.output.suffix.lower() in SUFFIX_FORMATS and not args.output.is_dir()
        settings = Settings.from_env()
        options = RemoveOptions(
            format=output_format(args, into_file),
            background=parse_color(args.bg) if args.bg is not None else None,
            mask_only=args.mask,
            crop=args.crop,
            refine=args.refine,
            quality=args.quality or settings.quality,
        )
        jobs = plan_jobs(args.inputs, args.output, options.format, into_file)
    except (UsageError, SettingsError) as exc:
        parser.error(str(exc))
    except ApiError as exc:  # a bad --bg
        parser.error(f"--bg: {shown(exc.message)}")

    skipped = [job for job in jobs if args.skip_existing and job.target.exists()]
    todo = [job for job in jobs if job not in skipped]
    workers = min(args.workers or available_cpus(), max(1, len(todo)))
    started = time.monotonic()
    tally = Tally(skipped=len(skipped))
    if todo:
        try:
            if args.server:
                cut = server_cutter(args.server, options, args.bg, args.model)
            else:
                # Spare cores go to each inference: one photo alone still uses the whole machine.
                threads = max(settings.intra_op_threads, available_cpus() // workers)
                cut = local_cutter(options, replace(settings, intra_op_threads=threads), args.model)
        except Exception as exc:  # noqa: BLE001 - a model that cannot load ends the run with its reason
            print(f"bgremove: error: {shown(exc)}", file=sys.stderr)
            return 2
        progress = Progress(len(todo), sys.stderr, enabled=not args.quiet)
        try:
            ran = run_jobs(todo, cut, workers, progress, settings.max_upload_bytes)
        except KeyboardInterrupt:
            progress.close()
            print("bgremove: interrupted", file=sys.stderr)
            return 130
        progress.close()
        tally.done, tally.failures = ran.done, ran.failures
    print_summary(tally, time.monotonic() - started, sys.stderr)
    return 1 if tally.failures else 0


def print_summary(tally: Tally, elapsed_s: float, stream: TextIO) -> None:
    parts = [f"{tally.done} done", f"{len(tally.failures)} failed"]
    if tally.skipped:
        parts.append(f"{tally.skipped} skipped (output exists)")
    print(f"bgremove: {', '.join(parts)} in {_duration(elapsed_s)}", file=stream)
    for source, reason in tally.failures:
        print(f"  failed: {shown(source)}: {reason}", file=stream)


if __name__ == "__main__":
    sys.exit(main())
