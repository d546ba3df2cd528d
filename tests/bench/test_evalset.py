"""The evaluation set's scores on hand-made masks whose answers are known, and the real set as loaded."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from bench import evalset
from tests.images import REPO

REAL = REPO.parent / "shared" / "evaldata" / "real"
LEMUR = REPO.parent / "shared" / "evaldata" / "dev"
CATEGORIES = {  # STATS.md's counts
    "animal": 22,
    "car": 9,
    "composite_alpha": 3,
    "object_cluttered": 10,
    "object_plain": 8,
    "person": 19,
    "plant": 3,
    "thin_structure": 12,
}


def _item(truth: np.ndarray, ignore: np.ndarray | None = None, category: str = "c", name: str = "x") -> evalset.Item:
    return evalset.Item(name, category, b"", truth.astype(np.float32), ignore)


def _square(left: int, top: int = 30, side: int = 40, size: int = 100) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    mask[top : top + side, left : left + side] = 1.0
    return mask


def _png(array: np.ndarray, mode: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, "PNG")
    return out.getvalue()


# ---------------------------------------------------------------- the metrics


def test_a_square_shifted_by_4_px_scores_what_geometry_says() -> None:
    """40x40 square, moved 4 px right: 2 x 4 x 40 wrong pixels, IoU 36/44, band 58^2 - 22^2."""
    truth = _square(30)
    item = _item(truth)
    assert int(evalset.edge_band(truth).sum()) == 58 * 58 - 22 * 22  # 2-px ring at 29..70, +-8 px
    mae, iou, edge = evalset.score(_square(34), item)
    assert mae == pytest.approx(320 / 10_000)
    assert iou == pytest.approx(36 / 44)
    assert edge == pytest.approx(320 / 2880)  # every wrong pixel lies in the band


def test_the_image_border_is_not_a_boundary() -> None:
    """reference.csv's band pads like OpenCV: a subject cut by the frame has no edge along the frame."""
    truth = np.zeros((100, 100), np.float32)
    truth[:, :50] = 1.0
    band = evalset.edge_band(truth)
    assert band.sum() == 100 * 18 and band[:, 41:59].all()  # columns 49|50, +-8 px


def test_thresholds_on_8_bit_values() -> None:
    """128 of 255 is foreground for the truth and for the prediction, 127 is not."""
    truth = np.array([[128, 127, 0, 255]], np.uint8)
    item = _item(truth / 255.0)
    alpha = evalset.decode_mask(_png(np.array([[128, 128, 127, 255]], np.uint8), "L"))
    _, iou, _ = evalset.score(alpha, item)
    assert iou == pytest.approx(2 / 3)  # foreground: truth {0, 3}, prediction {0, 1, 3}
    assert int(evalset.edge_band(truth / 255.0).sum()) == 4  # 128 is inside the boundary's foreground
    assert evalset.score(np.full((1, 4), 0.5, np.float32), item)[1] == 0.0  # exactly 0.5 is not > 0.5


def test_empty_masks_and_no_boundary() -> None:
    empty = np.zeros((20, 30), np.float32)
    assert evalset.score(empty, _item(empty)) == (0.0, 1.0, 0.0)  # nothing to find, nothing found
    full = np.ones((20, 30), np.float32)
    assert evalset.score(full, _item(empty)) == (1.0, 0.0, 0.0)  # no boundary: no band to score
    some = empty.copy()
    some[5:10, 5:10] = 1.0
    assert evalset.score(empty, _item(some))[1] == 0.0  # all missed


def test_score_refuses_a_wrong_shape_or_scale() -> None:
    item = _item(_square(30))
    with pytest.raises(ValueError, match="shape|is"):
        evalset.score(np.zeros((100, 99), np.float32), item)
    with pytest.raises(ValueError, match="0..1"):
        evalset.score(_square(30) * 255, item)


def test_the_ignore_band_leaves_all_three_scores() -> None:
    """A square with a 2-px 128 ring (GrabCut's unknown band), predicted as hard 255 through the ring."""
    truth8 = np.zeros((100, 100), np.uint8)
    truth8[28:72, 28:72] = 128
    truth8[30:70, 30:70] = 255
    ring = truth8 == 128
    alpha = (truth8 > 0).astype(np.float32)
    item = _item(truth8 / 255.0, ignore=ring)
    wrong = ring.sum() * (127 / 255)
    mae, iou, edge = evalset.score(alpha, item)
    assert mae == pytest.approx(wrong / 10_000, rel=1e-5) and iou == 1.0
    assert edge == pytest.approx(wrong / evalset.edge_band(truth8 / 255.0).sum(), rel=1e-5)
    assert evalset.score(alpha, item, use_ignore=True) == (0.0, 1.0, 0.0)

    # the ignored pixels leave IoU's union too: a prediction that misses only the ring is perfect
    inner = (truth8 == 255).astype(np.float32)
    assert evalset.score(inner, item)[1] == pytest.approx(1600 / 1936)
    assert evalset.score(inner, item, use_ignore=True)[1] == 1.0
    assert evalset.score(alpha, _item(truth8 / 255.0), use_ignore=True) == (mae, iou, edge)  # no ignore/: no change


def test_decode_mask_reads_grey_and_alpha() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(evalset.decode_mask(_png(values, "L")) * 255, values)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = values
    assert np.array_equal(evalset.decode_mask(_png(rgba, "RGBA")) * 255, values)  # a cut-out: its alpha


# ---------------------------------------------------------------- the real set


@pytest.fixture(scope="module")
def real() -> list[evalset.Item]:
    return evalset.load(REAL)


def test_load_reads_the_86_pairs_in_their_8_categories(real: list[evalset.Item]) -> None:
    assert len(real) == 86 and len({item.name for item in real}) == 86
    assert Counter(item.category for item in real) == CATEGORIES
    zeros = [(0.0, 0.0, 0.0)] * len(real)
    assert list(evalset.category_means(zeros, real)) == [*sorted(CATEGORIES), "all"]
    assert evalset.category_means(zeros, real)["all"][0] == 86
    for item in real:
        with Image.open(io.BytesIO(item.data)) as image:
            assert image.size[::-1] == item.truth.shape, item.name
        assert item.truth.dtype == np.float32 and 0.0 <= item.truth.min() and item.truth.max() <= 1.0
    ignored = [item for item in real if item.ignore is not None]
    assert len(ignored) == 11 and all(item.name.startswith("grabcut_") for item in ignored)
    for item in ignored:
        band = _ignored(item)
        assert band.shape == item.truth.shape and band.dtype == bool and band.any()
        assert np.all(np.round(item.truth[band] * 255) == 128), item.name  # the band is the 128 pixels
    soft = {item.name for item in real if np.any((item.truth > 0) & (item.truth < 1) & ~_ignored(item))}
    assert soft == {item.name for item in real if item.category == "composite_alpha"}  # the rest is binary


def _ignored(item: evalset.Item) -> np.ndarray:
    return item.ignore if item.ignore is not None else np.zeros(item.truth.shape, bool)


def test_the_truth_itself_scores_perfectly(real: list[evalset.Item]) -> None:
    for item in real:
        assert evalset.score(item.truth, item) == (0.0, 1.0, 0.0), item.name
        assert evalset.score(item.truth, item, use_ignore=True) == (0.0, 1.0, 0.0), item.name


def test_a_set_without_manifest_is_one_category() -> None:
    items = evalset.load(LEMUR)
    assert len(items) == 8 and {item.category for item in items} == {LEMUR.name}
    assert all(item.ignore is None and item.name.startswith("lemur_") for item in items)


def test_load_refuses_a_mask_of_another_size(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "images" / "a.png")
    Image.new("L", (10, 20)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match="a.png"):
        evalset.load(tmp_path)


# ---------------------------------------------------------------- summaries


@pytest.fixture()
def small() -> tuple[dict[str, list[evalset.Scores]], list[evalset.Item]]:
    blank = np.zeros((2, 2), np.float32)
    items = [_item(blank, category=c, name=f"{c}{i}") for i, c in enumerate(["a", "a", "b"])]
    scores = {
        "anchor": [(0.10, 0.80, 0.20), (0.20, 0.60, 0.40), (0.10, 0.90, 0.10)],
        "new": [(0.05, 0.90, 0.30), (0.20, 0.70, 0.40), (0.20, 0.80, 0.05)],
    }
    return scores, items


def test_category_means_and_worse_categories(small) -> None:
    scores, items = small
    summary = evalset.summarise(scores, items)
    assert list(summary["new"]) == ["a", "b", "all"]
    count, means = summary["new"]["a"]
    assert count == 2 and means == pytest.approx((0.125, 0.80, 0.35))
    assert summary["anchor"]["all"] == (3, pytest.approx((0.40 / 3, 2.30 / 3, 0.70 / 3)))
    # a: MAE 0.125 < 0.15, IoU 0.80 > 0.70, edge 0.35 > 0.30; b: MAE and IoU worse, edge better;
    # all: MAE 0.15 > 0.133, IoU 0.80 > 0.767, edge 0.25 > 0.233
    assert evalset.worse_categories(scores, items, "new", than="anchor") == [
        ("a", "edge MAE"),
        ("b", "MAE"),
        ("b", "IoU"),
        ("all", "MAE"),
        ("all", "edge MAE"),
    ]
    assert evalset.better_counts(scores, "new", "anchor") == (1, 2, 1)  # ties are not wins


def test_markdown_tables(small) -> None:
    scores, items = small
    text = evalset.markdown_tables(scores, items, anchor="anchor", mark=("new", "anchor"))
    assert "| category | n | anchor | new | new worse than anchor |" in text
    assert "| b | 1 | 0.1000 | 0.2000 | **worse** |" in text  # the MAE table
    assert "| a | 2 | 0.3000 | 0.3500 | **worse** |" in text  # the edge MAE table
    assert "| b | 1 | 2.000 |" in text  # MAE / anchor
    assert "| new | 1.125 | 1.043 | 1.071 | 1 of 3 | 2 of 3 | 1 of 3 |" in text
    assert text.count("**worse**") == 5
    assert "worse than" not in evalset.markdown_tables(scores, items, anchor="anchor")
