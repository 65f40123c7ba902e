"""One way to load a model (pneumo.inference.loading) and batch reads
(pneumo.inference.reads): the options are honoured, a batch read gives the Predictor's
own numbers file by file, progress is reported once per file and a bad file is an error
entry, never a crash. Real films from ../shared/data; the bundled model where marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import SIIM

SIIM_PNG = SIIM / "lmquan1609" / "positive_sample.png"
SIIM_JPEGS = sorted((SIIM / "amarshrma" / "Deployment" / "Images").glob("*.jpg"))[:2]
BROKEN = b"\x89PNG\r\n\x1a\n" + b"\0" * 20  # a PNG signature and nothing readable


def real_items(siim_dicoms, positive_dicom) -> list[tuple[str, bytes]]:
    """Real films of every format (three DICOMs, a positive among them, a SIIM PNG, two
    JPEGs) as ``(name, bytes)`` items."""
    dicoms = [positive_dicom] + [p for p in siim_dicoms if p != positive_dicom][:2]
    return [(p.name, p.read_bytes()) for p in dicoms + [SIIM_PNG] + SIIM_JPEGS]


def with_bad_ones(items: list) -> list:
    """``items`` with an unreadable file, a file that could not be fetched and a non-chest
    DICOM (an MR: the header gate) among them."""
    from pydicom.data import get_testdata_file
    from pneumo.errors import UnsupportedImageError

    bad = [
        ("broken.png", BROKEN),
        ("gone.dcm", UnsupportedImageError("No such file: gone.dcm")),
        ("mr.dcm", Path(get_testdata_file("MR_small.dcm")).read_bytes()),
    ]
    return items[:2] + bad[:1] + items[2:4] + bad[1:] + items[4:]


# ---------------------------------------------------------------- options, no model


def test_model_options_are_checked_and_normalised_before_any_work():
    from pneumo.inference.loading import ModelOptions
    from pneumo.inference.predictor import DEFAULT_MODEL_DIR

    default = ModelOptions()
    assert default.model_dir == DEFAULT_MODEL_DIR and default.warm_up
    assert (default.device, default.runtime, default.threads) == ("auto", "auto", None)
    assert (default.operating_point, default.prevalence, default.tta) == (None, None, None)
    options = ModelOptions("models/x", device=" CPU ", threads=2)
    assert options.model_dir == Path("models/x") and options.device == "cpu"
    for bad, message in (
        (dict(device="tpu"), "PNEUMO_DEVICE must be one of auto, cpu, gpu"),
        (dict(threads=0), "PNEUMO_TF_THREADS must be a whole number"),
        (dict(threads=True), "PNEUMO_TF_THREADS"),
        (dict(runtime="onnx"), "unknown runtime 'onnx'"),
    ):
        with pytest.raises(ValueError, match=message):
            ModelOptions(**bad)


# ---------------------------------------------------------------- tiny model


def test_reads_give_one_entry_per_item_in_order_with_progress(
    tiny_predictor, siim_dicoms, positive_dicom
):
    """Across batches: one read per item in input order, progress once per item with that
    read, bad files as error entries between the verdicts, and a read's columns."""
    from pneumo.inference.reads import READ_FIELDS, read_batch, read_items

    items = with_bad_ones(real_items(siim_dicoms, positive_dicom))
    seen = []
    reads = list(read_items(tiny_predictor, items, batch_size=3, progress=seen.append))
    assert [r.key for r in reads] == [k for k, _ in items] and seen == reads
    by_key = {r.key: r for r in reads}
    broken, gone, mr = by_key["broken.png"], by_key["gone.dcm"], by_key["mr.dcm"]
    assert (broken.error_code, broken.refused_by, broken.prediction) == (
        "corrupt_image",
        "reader",
        None,
    )
    assert broken.to_dict() == dict.fromkeys(READ_FIELDS) | dict(
        key="broken.png",
        model="tiny_untrained",
        model_version="test",
        probability_kind="score",
        error=broken.error,
        error_code="corrupt_image",
        refused_by="reader",
    )
    assert gone.error == "No such file: gone.dcm" and gone.refused_by == "reader"
    assert (mr.error_code, mr.refused_by, mr.source_format) == ("not_chest_xray", "header", "DICOM")
    films = [r for r in reads if r.ok]
    assert len(films) == 6 and {r.source_format for r in films} == {"DICOM", "PNG", "JPEG"}
    for read in films:
        assert tuple(read.to_dict()) == READ_FIELDS
        assert (read.rows, read.columns) == read.prediction.mask.shape
        assert read.image_id is None or read.source_format == "DICOM"
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        read_items(tiny_predictor, items, batch_size=0)
    again = read_batch(tiny_predictor, items)  # one batch: the same numbers
    assert [r.to_dict() for r in again] == [r.to_dict() for r in reads]


def test_file_items_name_the_files_that_cannot_be_opened(tmp_path, positive_dicom):
    from pneumo.errors import UnsupportedImageError
    from pneumo.inference.reads import file_items

    items = list(file_items([positive_dicom, tmp_path / "gone.dcm", tmp_path]))
    assert items[0] == (str(positive_dicom), positive_dicom.read_bytes())
    assert [type(data) for _, data in items[1:]] == [UnsupportedImageError] * 2
    assert str(items[1][1]) == "No such file: gone.dcm"
    assert str(items[2][1]) == f"{tmp_path.name} is a folder, not an image"


# ---------------------------------------------------------------- the bundled model


@pytest.fixture(scope="module")
def bundled():
    from pneumo.inference.loading import ModelOptions, load_predictor

    return load_predictor(ModelOptions(device="cpu"))


@pytest.mark.bundled
def test_load_predictor_honours_the_options(bundled, monkeypatch):
    from pneumo.inference.loading import ModelOptions, load_predictor
    from pneumo.inference.predictor import DEFAULT_MODEL_DIR, Predictor

    card = bundled.card
    assert bundled.model_dir == DEFAULT_MODEL_DIR and bundled.tta == card.tta
    assert bundled.operating_point == card.operating_point(None) and bundled.prevalence is None
    served = bundled.card.serving["runtime"]  # auto: the card's measured choice
    assert bundled.device.startswith("CPU (") and bundled.runtime.name.startswith(served)
    assert bundled.where == f"{bundled.device}, runtime {bundled.runtime.name}"
    calls = []
    real_output = Predictor.output
    monkeypatch.setattr(
        Predictor,
        "output",
        lambda self, batch: calls.append(len(batch)) or real_output(self, batch),
    )
    other = load_predictor(
        ModelOptions(
            DEFAULT_MODEL_DIR,
            device="cpu",
            operating_point="triage",
            tta=not card.tta,
            prevalence=0.05,
            warm_up=False,
        )
    )
    assert calls == []  # no warm-up
    assert other.operating_point.name == "triage" != bundled.operating_point.name
    assert other.tta is (not card.tta) and other.prevalence == 0.05
    load_predictor(ModelOptions(device="cpu", tta=False))
    assert calls == [1]  # warmed up on one blank image


@pytest.mark.bundled
def test_a_batch_read_gives_the_predictor_numbers_one_by_one(bundled, siim_dicoms, positive_dicom):
    """read_batch on real films of every format (with bad files among them) gives, per
    film, what Predictor.predict gives for that film alone."""
    from pneumo.inference.reads import read_batch
    from pneumo.io import rle
    from pneumo.io.imaging import read_image

    items = with_bad_ones(real_items(siim_dicoms, positive_dicom))
    seen = []
    reads = read_batch(bundled, items, progress=seen.append)
    assert [r.key for r in reads] == [k for k, _ in items] and seen == reads
    assert [r.refused_by for r in reads if not r.ok] == ["reader", "reader", "header"]
    films = dict(items)
    verdicts = [r for r in reads if r.ok]
    assert len(verdicts) == 6
    for read in verdicts:
        alone = bundled.predict(read_image(films[read.key]))
        assert read.probability == pytest.approx(alone.probability, abs=1e-5), read.key
        assert (read.positive, read.operating_point, read.threshold) == (
            alone.positive,
            alone.operating_point.name,
            alone.threshold,
        )
        assert read.rle == rle.encode(alone.mask) and read.area_px == alone.area_px
        assert read.area_cm2 == (None if alone.area_cm2 is None else pytest.approx(alone.area_cm2))
        assert np.allclose(read.prediction.probability_map, alone.probability_map, atol=1e-5)
    positive = next(r for r in verdicts if r.key == positive_dicom.name)
    assert positive.positive and positive.area_px > 0 and positive.rle != "-1"
