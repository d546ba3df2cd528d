"""``bgremove``: the installed console script over real photos, in-process and through a live server."""

from __future__ import annotations

import io
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import Job, Progress, plan_jobs
from tests.conftest import LiveServer
from tests.images import dev_images, dev_mask, heif_bytes, photo

BGREMOVE = Path(sys.executable).parent / "bgremove"


def bgremove(
    *args: object, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BGREMOVE), *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Three real photos, one in a sub-folder, and one broken file among them."""
    folder = tmp_path / "in"
    (folder / "more").mkdir(parents=True)
    first, second, third = dev_images()[:3]
    shutil.copy(first, folder / first.name)
    shutil.copy(second, folder / second.name)
    shutil.copy(third, folder / "more" / third.name)
    (folder / "broken.jpg").write_bytes(b"a text file named like a photo")
    (folder / "notes.txt").write_text("not an image, and not taken from a folder")
    return folder


def test_a_folder_is_cut_out_recursively_and_one_broken_file_fails_the_run(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = bgremove(photos, "-o", out, "--workers", "2")

    assert run.returncode == 1, run.stderr
    assert "3 done, 1 failed" in run.stderr
    assert "broken.jpg: The bytes are not an image format" in run.stderr
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*"))
    expected = sorted(f"{image.stem}.png" for image in dev_images()[:2]) + ["more", f"more/{dev_images()[2].stem}.png"]
    assert written == expected  # no output for the broken file or the text file, no partial files
    for source in dev_images()[:2]:
        cutout = Image.open(out / f"{source.stem}.png")
        assert cutout.mode == "RGBA" and cutout.size == Image.open(source).size
        alpha = np.asarray(cutout.getchannel("A"), dtype=np.float32) / 255.0
        assert np.abs(alpha - dev_mask(source)).mean() < 0.06  # a real cut-out of the lemur, not a blank


def test_a_phone_s_heic_in_a_folder_is_found_and_cut_out_upright(tmp_path: Path) -> None:
    (tmp_path / "DCIM").mkdir()
    (tmp_path / "DCIM" / "IMG_0001.HEIC").write_bytes(heif_bytes(photo(), orientation=6))  # shown 440x680
    out = tmp_path / "out"

    run = bgremove(tmp_path / "DCIM", "-o", out, "--no-refine")

    assert run.returncode == 0, run.stderr
    assert "1 done, 0 failed" in run.stderr
    cutout = Image.open(out / "IMG_0001.png")
    assert cutout.mode == "RGBA" and cutout.size == (440, 680)


def test_skip_existing_leaves_finished_outputs_alone(photos: Path, tmp_path: Path) -> None:
    (photos / "broken.jpg").unlink()
    out = tmp_path / "out"
    out.mkdir()
    done = out / f"{dev_images()[0].stem}.png"
    done.write_bytes(b"an earlier run's output")

    run = bgremove(photos, "-o", out, "--skip-existing", "--no-refine")

    assert run.returncode == 0, run.stderr
    assert "2 done, 0 failed, 1 skipped" in run.stderr
    assert done.read_bytes() == b"an earlier run's output"


def test_one_file_to_a_named_file_takes_the_format_from_its_suffix(tmp_path: Path) -> None:
    source = dev_images()[0]
    run = bgremove(source, "-o", tmp_path / "cut.webp", "--crop", "-q")

    assert run.returncode == 0, run.stderr
    cutout = Image.open(tmp_path / "cut.webp")
    assert cutout.format == "WEBP" and cutout.mode == "RGBA"
    assert cutout.width < Image.open(source).width  # cropped to the lemur


def test_jpeg_on_a_colour_through_a_glob(tmp_path: Path) -> None:
    source = dev_images()[0]
    shutil.copy(source, tmp_path / source.name)
    run = bgremove("*.jpg", "-o", "out", "--format", "jpeg", "--bg", "red", cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    result = np.asarray(Image.open(tmp_path / "out" / f"{source.stem}.jpg").convert("RGB"), dtype=np.int16)
    background = dev_mask(source) < 0.01
    assert np.abs(result[background] - (255, 0, 0)).mean() < 12


def test_model_and_quality_pick_the_network_and_its_passes(tmp_path: Path) -> None:
    source = dev_images()[0]
    masks = {}
    for model in ("u2net-int8", "u2netp"):
        run = bgremove(source, "-o", tmp_path / f"{model}.png", "--mask", "--model", model, "--quality", "fast", "-q")
        assert run.returncode == 0, run.stderr
        masks[model] = np.asarray(Image.open(tmp_path / f"{model}.png"), dtype=np.int16)
    assert np.abs(masks["u2net-int8"] - masks["u2netp"]).mean() > 0.5, "two networks, two masks"
    unknown = bgremove(source, "-o", tmp_path / "x.png", "--model", "u2net_human_seg")
    assert unknown.returncode == 2 and "u2net_human_seg" in unknown.stderr and "u2netp" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-photo.jpg", "-o", "out"], "no such file, folder or match: no-such-photo.jpg"),
        (["{image}", "-o", "out", "--quality", "ultra"], "--quality"),
        (["{image}", "-o", "cut.webp", "--format", "png"], "contradicts the output file's suffix"),
        (["{image}", "{image2}", "-o", "cut.png"], "names one file, but 2 inputs were given"),
        (["{image}", "-o", "out", "--bg", "not-a-colour"], "--bg"),
        (["{image}", "-o", "out", "--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_usage_errors_stop_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    image, image2 = dev_images()[:2]
    run = bgremove(*(arg.format(image=image, image2=image2) for arg in args), cwd=tmp_path)

    assert run.returncode == 2
    assert message in run.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("cut.*"))


def test_server_mode_sends_the_work_to_a_running_service(photos: Path, tmp_path: Path, server: LiveServer) -> None:
    out = tmp_path / "out"
    run = bgremove(photos, "-o", out, "--server", server.url, "--mask", "--workers", "2")

    assert run.returncode == 1, run.stderr
    assert "3 done, 1 failed" in run.stderr
    assert "broken.jpg: The bytes are not an image format" in run.stderr and "(415)" in run.stderr
    mask = Image.open(out / f"{dev_images()[0].stem}.png")
    assert mask.mode == "L" and mask.size == Image.open(dev_images()[0]).size


def test_server_mode_reports_an_unreachable_server(tmp_path: Path) -> None:
    run = bgremove(dev_images()[0], "-o", tmp_path / "out", "--server", "http://127.0.0.1:9")

    assert run.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in run.stderr


def test_names_that_would_collide_keep_their_suffixes_apart(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "a.png").write_bytes(b"")

    jobs = plan_jobs([str(tmp_path / "a.jpg"), str(tmp_path / "a.png")], Path("out"), "png", into_file=False)

    assert jobs == [Job(tmp_path / "a.jpg", Path("out/a.png")), Job(tmp_path / "a.png", Path("out/a.png.png"))]


def test_progress_line_shows_count_rate_eta_and_failures() -> None:
    stream = io.StringIO()
    progress = Progress(4, stream)
    progress.started -= 2.0  # two seconds in
    progress.advance()
    progress.advance(failed=True)

    line = progress.line(progress.started + 2.0)
    assert line.startswith("[############............] 2/4  50%  1.0 img/s  ETA 2s  1 failed")


FAST = ("--model", "u2netp", "--quality", "fast", "--no-refine", "-q")


def test_an_output_folder_inside_the_input_folder_is_never_read_back(tmp_path: Path) -> None:
    shoot = tmp_path / "shoot"
    (shoot / "day2").mkdir(parents=True)
    shutil.copy(dev_images()[0], shoot / "cat.jpg")
    shutil.copy(dev_images()[1], shoot / "day2" / "dog.jpg")
    out = shoot / "cutouts"

    for _ in range(2):
        run = bgremove(shoot, "-o", out, *FAST)
        assert run.returncode == 0, run.stderr
        assert "2 done, 0 failed" in run.stderr  # not 4 (its own cut-outs) on the second run
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file())
    assert written == ["cat.png", "day2/dog.png"]  # no cutouts/cutouts/...

    globbed = bgremove(f"{shoot}/**/*", "-o", out, *FAST)  # a glob does not reach into it either
    assert globbed.returncode == 0 and "2 done, 0 failed" in globbed.stderr, globbed.stderr


@pytest.mark.parametrize("inside", [False, True], ids=["same", "inside"])
def test_an_input_folder_in_its_own_output_folder_is_a_usage_error(tmp_path: Path, inside: bool) -> None:
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(dev_images()[0], photos / "sub" / "cat.png")

    run = bgremove(photos / "sub" if inside else photos, "-o", photos, *FAST)

    assert run.returncode == 2
    assert "is the output folder or inside it" in run.stderr, run.stderr
    assert (photos / "sub" / "cat.png").read_bytes() == dev_images()[0].read_bytes()


def test_an_output_that_would_overwrite_its_input_is_a_usage_error(tmp_path: Path) -> None:
    shutil.copy(dev_images()[0], tmp_path / "cat.png")
    run = bgremove(tmp_path / "cat.png", "-o", tmp_path, *FAST)
    assert run.returncode == 2 and "would overwrite it" in run.stderr, run.stderr
    assert (tmp_path / "cat.png").read_bytes() == dev_images()[0].read_bytes()


def test_an_input_over_max_upload_bytes_fails_alone_before_it_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(dev_images()[0], folder / "small.jpg")
    huge = folder / "huge.jpg"
    with huge.open("wb") as file:
        file.write(b"\xff\xd8\xff")
        file.truncate(8 * 1024**3)  # 8 GiB, sparse: no disk used, and far more than the memory a read may take
    limit = dev_images()[0].stat().st_size + 1

    run = bgremove(folder, "-o", tmp_path / "out", *FAST, env={"MAX_UPLOAD_BYTES": str(limit)})

    assert run.returncode == 1, run.stderr
    assert "1 done, 1 failed" in run.stderr
    assert f"huge.jpg: it is 8,589,934,592 bytes, larger than MAX_UPLOAD_BYTES ({limit:,})" in run.stderr
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    assert peak_kib < 4 * 1024**2, "the 8 GiB file was read"
    assert (tmp_path / "out" / "small.png").exists()


def test_file_names_are_printed_with_their_control_characters_escaped(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "evil\n  failed: forged\x1b[31m.jpg").write_bytes(b"not an image")

    run = bgremove(folder, "-o", tmp_path / "out", *FAST)

    assert run.returncode == 1
    assert "\x1b" not in run.stderr
    (line,) = [line for line in run.stderr.splitlines() if "failed:" in line]  # one line, no forged second
    assert line.startswith("  failed: ") and "evil\\n  failed: forged\\x1b[31m.jpg: The bytes are not" in line


def test_a_failed_write_names_the_output_path(tmp_path: Path) -> None:
    shutil.copy(dev_images()[0], tmp_path / "cat.jpg")
    (tmp_path / "blocker").write_text("a file where the output folder should go")

    run = bgremove(tmp_path / "cat.jpg", "-o", tmp_path / "blocker" / "out", *FAST)

    assert run.returncode == 1
    assert f"cat.jpg: cannot write {tmp_path / 'blocker' / 'out' / 'cat.png'}: Not a directory" in run.stderr
