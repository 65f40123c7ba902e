import gzip

import numpy as np
import pytest
from PIL import Image

from pneumo.errors import RLEError
from pneumo.io import rle
from conftest import SIIM


def test_orientation_row_zero():
    mask = np.zeros((4, 5), bool)
    mask[0, :] = True  # top row, every column
    text = rle.encode(mask)
    # column-major: pixel (0, x) is at flat index x * height
    assert text == "0 1 3 1 3 1 3 1 3 1"
    back = rle.decode(text, (4, 5))
    assert back[0].all() and not back[1:].any()


@pytest.mark.parametrize("case", ["empty", "first", "last", "full", "corners"])
def test_edge_masks_roundtrip(case):
    mask = np.zeros((1024, 1024), bool)
    if case == "first":
        mask[0, 0] = True
    elif case == "last":
        mask[-1, -1] = True
    elif case == "full":
        mask[:] = True
    elif case == "corners":
        mask[0, 0] = mask[0, -1] = mask[-1, 0] = mask[-1, -1] = True
    text = rle.encode(mask)
    assert (text == "-1") == (case == "empty")
    assert np.array_equal(rle.decode(text), mask)
    assert np.array_equal(rle.decode_absolute(rle.encode_absolute(mask)), mask)


def test_first_and_full_values():
    mask = np.zeros((1024, 1024), bool)
    mask[0, 0] = True
    assert rle.encode(mask) == "0 1"
    assert rle.encode_absolute(mask) == "1 1"
    assert rle.encode(np.ones((1024, 1024), bool)) == f"0 {1024 * 1024}"


@pytest.mark.parametrize("seed", range(5))
def test_random_roundtrip(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
    mask = rng.random(shape) > rng.random()
    assert np.array_equal(rle.decode(rle.encode(mask), shape), mask)
    assert np.array_equal(rle.decode_absolute(rle.encode_absolute(mask), shape), mask)


def test_merge_is_or():
    a = np.zeros((8, 8), bool)
    a[1:3, 1:3] = True
    b = np.zeros((8, 8), bool)
    b[2:6, 4:7] = True
    merged = rle.merge([rle.encode(a), rle.encode(b), "-1"], (8, 8))
    assert np.array_equal(merged, a | b)


@pytest.mark.parametrize("bad", ["1 2 3", "a b", "0 5 -1 2", "0 100"])
def test_bad_rle_raises(bad):
    with pytest.raises(RLEError):
        rle.decode(bad, (4, 4))


def test_read_csv_both_header_spellings(tmp_path, rle_table):
    assert len(rle_table) == 12047
    assert sum(rle.is_positive(v) for v in rle_table.values()) == 2669
    assert sum(len(v) > 1 for v in rle_table.values()) == 624
    plain = tmp_path / "plain.csv"
    plain.write_text("ImageId,EncodedPixels\nA,-1\nB,0 1\nB,5 2\n")
    gz = tmp_path / "x.csv.gz"
    gz.write_bytes(gzip.compress(b"ImageId, EncodedPixels\nA, -1\n"))
    t = rle.read_rle_csv(plain)
    assert t == {"A": ["-1"], "B": ["0 1", "5 2"]}
    assert rle.read_rle_csv(gz) == {"A": ["-1"]}
    noheader = (
        SIIM / "kaggle_sample_OleguerCanal/kaggle_provided_data/sample images/train-rle-sample.csv"
    )
    assert len(rle.read_rle_csv(noheader)) >= 7


def test_csv_masks_equal_committed_png_masks(rle_table):
    import csv

    id_of = {}
    for part in ("train", "test"):
        path = SIIM / f"thermistokles_CS534-Final-Project/stage_1_{part}_images.csv"
        with open(path) as fh:
            id_of.update({r["new_filename"]: r["ImageId"] for r in csv.DictReader(fh)})
    checked = 0
    for png in sorted(SIIM.glob("ktlProject0/data/*/masks/*.png")):
        image_id = id_of.get(png.name)
        if image_id not in rle_table:
            continue
        truth = np.asarray(Image.open(png)) > 127
        assert np.array_equal(rle.mask_for(rle_table, image_id), truth), png.name
        checked += 1
    assert checked >= 20
