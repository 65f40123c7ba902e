"""Writing a film in other encodings and reading it back through the upload reader."""

import numpy as np
import pytest

from conftest import SIIM


@pytest.fixture(scope="module")
def film():
    from pneumo.io.imaging import read_image

    return read_image(next(iter(sorted(SIIM.rglob("*.dcm"))))).pixels


@pytest.mark.parametrize("name", ["png", "dicom_raw", "dicom16"])
def test_lossless_encodings_read_back_identical(film, name):
    from pneumo.io.encodings import encode
    from pneumo.io.imaging import read_image

    data, _ = encode(film, name)
    rec = read_image(data)
    assert np.array_equal(rec.pixels, film)
    if name == "dicom16":
        assert rec.meta.bits_stored == 12 and rec.meta.windowing == "window"


@pytest.mark.parametrize(
    "name, suffix, low, high",
    [
        ("jpeg95", ".jpg", 0.05, 1.5),
        ("jpeg50", ".jpg", 0.5, 4.0),
        ("dicom_jpeg", ".dcm", 0.1, 2.0),
    ],
)
def test_lossy_encodings_change_pixels_by_their_quality(film, name, suffix, low, high):
    from pneumo.io.encodings import encode
    from pneumo.io.imaging import read_image

    data, got_suffix = encode(film, name)
    rec = read_image(data)
    diff = np.abs(rec.pixels.astype(int) - film).mean()
    assert got_suffix == suffix and rec.pixels.shape == film.shape and low < diff < high, diff
    if name == "dicom_jpeg":
        assert rec.meta.transfer_syntax == "1.2.840.10008.1.2.4.50"


def test_downscale_halves_the_film(film):
    from pneumo.io.encodings import encode
    from pneumo.io.imaging import read_image

    rec = read_image(encode(film, "downscale2x")[0])
    assert rec.pixels.shape == (film.shape[0] // 2, film.shape[1] // 2)


def test_bad_arguments_are_refused(film):
    from pneumo.io.encodings import downscale, encode, jpeg_bytes

    with pytest.raises(ValueError, match="unknown encoding 'webp'"):
        encode(film, "webp")
    with pytest.raises(ValueError, match="uint8"):
        encode(film.astype(np.float32), "png")
    with pytest.raises(ValueError, match="quality"):
        jpeg_bytes(film, 0)
    with pytest.raises(ValueError, match="factor"):
        downscale(film, 1.5)


def test_encoding_augmentation_keeps_shape_and_is_off_by_default(film):
    from pneumo.training.augment import encode_augment
    from pneumo.training.config import Augment

    rng = np.random.default_rng(0)
    assert not Augment().encodes
    assert np.array_equal(encode_augment(film, Augment(), rng), film)
    strong = Augment(jpeg=1.0, jpeg_quality=(20, 20), resample=1.0, noise=1.0, blur=1.0)
    out = encode_augment(film, strong, rng)
    assert strong.encodes and out.shape == film.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - film).mean() > 1.0
    with pytest.raises(ValueError, match="jpeg_quality"):
        Augment(jpeg_quality=(90, 10))


def test_balancing_groups_by_source_and_format():
    from pneumo.data.examples import Arrays

    a = Arrays(
        np.zeros((3, 4, 4), np.uint8),
        np.zeros((3, 4, 4), np.uint8),
        np.array([True, True, False]),
        np.ones(3, bool),
        np.array(["siim", "siim", "nih"]),
        np.array(["JPEG", "DICOM", "PNG"]),
    )
    assert a.groups("source").tolist() == ["siim", "siim", "nih"]
    assert a.groups("source_format").tolist() == ["siim/JPEG", "siim/DICOM", "nih/PNG"]


def test_the_canonical_jpeg_step_is_part_of_the_model_image(film):
    from pneumo.inference.preprocess import PreprocessConfig, model_image, resize_image
    from pneumo.io.encodings import jpeg_roundtrip

    plain = PreprocessConfig(size=64)
    assert np.array_equal(model_image(film, plain), resize_image(film, 64))
    canon = PreprocessConfig.from_dict({"size": 64, "jpeg_quality": 75})
    assert canon.to_dict()["jpeg_quality"] == 75 and "JPEG quality 75" in canon.describe()
    assert np.array_equal(model_image(film, canon), resize_image(jpeg_roundtrip(film, 75), 64))
    assert "jpeg_quality" not in plain.to_dict()
    with pytest.raises(ValueError, match="jpeg_quality must be in 1..100"):
        PreprocessConfig(size=64, jpeg_quality=0)


def test_upscale_and_dr_sized_dicom(film):
    from pneumo.io.encodings import DR_SIDE, encode
    from pneumo.io.imaging import read_image

    up = read_image(encode(film, "upscale2x")[0])
    assert up.pixels.shape == (film.shape[0] * 2, film.shape[1] * 2)
    dr = read_image(encode(film, "dicom16_2500")[0])
    assert max(dr.pixels.shape) == DR_SIDE and dr.meta.bits_stored == 12
    assert dr.meta.windowing == "window"


def test_a_film_and_its_area_downscale_reach_the_network_as_the_same_array(film):
    """The 512-px NIH files stand for NIH's 1024-px originals: same model input (issue 32)."""
    import cv2

    from pneumo.inference.preprocess import PreprocessConfig, model_image

    assert film.shape == (1024, 1024)
    half = cv2.resize(film, (512, 512), interpolation=cv2.INTER_AREA)
    pcfg = PreprocessConfig(
        size=384, channels=3, normalisation="efficientnet_lite", jpeg_quality=75, working_size=512
    )
    assert np.array_equal(model_image(film, pcfg), model_image(half, pcfg))
    # without the working resolution the canonical JPEG step ran at each file's own size
    old = PreprocessConfig(size=384, channels=3, normalisation="efficientnet_lite", jpeg_quality=75)
    assert not np.array_equal(model_image(film, old), model_image(half, old))
    # a 2x bicubic upscale and a CR/DX-sized film land within rounding of the original
    for factor in (2.0, 2500 / 1024):
        big = cv2.resize(film, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        diff = np.abs(model_image(big, pcfg).astype(int) - model_image(film, pcfg))
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (factor, diff.mean())


def test_working_size_is_checked_and_travels_with_the_card():
    from pneumo.inference.preprocess import PreprocessConfig

    with pytest.raises(ValueError, match="working_size"):
        PreprocessConfig(size=384, working_size=256)
    pcfg = PreprocessConfig(size=384, channels=3, jpeg_quality=75, working_size=512)
    assert PreprocessConfig.from_dict(pcfg.to_dict()) == pcfg
    assert "working resolution 512 x 512" in pcfg.describe()
    assert PreprocessConfig.from_dict({"size": 384}).working_size is None


def test_only_films_under_the_working_resolution_get_the_enlarged_note():
    from pneumo.inference.preprocess import PreprocessConfig, enlarged_note

    pcfg = PreprocessConfig(size=384, channels=3, jpeg_quality=75, working_size=512)
    for shape in [(512, 512), (1024, 1024), (2500, 2048)]:
        assert enlarged_note(shape, pcfg) is None, shape
    note = enlarged_note((256, 300), pcfg)  # rows x columns; the note says width x height
    assert "300 x 256 px" in note and "512 x 512 px" in note and "enlarged" in note
    assert enlarged_note((2500, 400), pcfg) is not None  # one short side is enough
    assert enlarged_note((256, 256), PreprocessConfig(size=384)) is None  # no working size


def test_canonical_jpeg_step_averaged_over_block_grid_offsets(film):
    """``jpeg_offsets``: the canonical JPEG round trip averaged with the block grid moved;
    it travels with the card and stays close to the single round trip."""
    import cv2

    from pneumo.inference.preprocess import PreprocessConfig, canonical, model_image
    from pneumo.io.encodings import jpeg_roundtrip

    working = cv2.resize(film, (512, 512), interpolation=cv2.INTER_AREA)
    assert np.array_equal(canonical(working, 75, 1), jpeg_roundtrip(working, 75))
    four = canonical(working, 75, 4)
    assert four.shape == working.shape and four.dtype == np.uint8
    single = canonical(working, 75).astype(int)
    # closer to the film than one round trip (the artefacts partly average out), not equal
    err_four = np.abs(four.astype(int) - working).mean()
    assert 0 < err_four < np.abs(single - working).mean()
    assert 0 < np.abs(four.astype(int) - single).mean() < 2

    pcfg = PreprocessConfig(size=384, channels=3, jpeg_quality=75, working_size=512, jpeg_offsets=4)
    assert PreprocessConfig.from_dict(pcfg.to_dict()) == pcfg
    assert "averaged over 4 round trips" in pcfg.describe()
    assert "jpeg_offsets" not in PreprocessConfig(size=384, jpeg_quality=75).to_dict()
    assert np.array_equal(
        model_image(film, pcfg), cv2.resize(four, (384, 384), interpolation=cv2.INTER_AREA)
    )
    for bad in (3, 0):
        with pytest.raises(ValueError, match="jpeg_offsets"):
            PreprocessConfig(size=384, jpeg_quality=75, jpeg_offsets=bad)
    with pytest.raises(ValueError, match="jpeg_offsets needs a jpeg_quality"):
        PreprocessConfig(size=384, jpeg_offsets=4)
