import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, JPEG2000Lossless, RLELossless

from pneumo.errors import (
    CorruptImageError,
    ImageTooLargeError,
    PneumoError,
    UnsupportedDicomError,
    UnsupportedImageError,
)
from pneumo.io.imaging import read_image


def test_real_siim_dicoms_decode(siim_dicoms):
    assert len(siim_dicoms) >= 40
    for path in siim_dicoms:
        rec = read_image(path)
        assert rec.pixels.shape == (1024, 1024)
        assert rec.pixels.dtype == np.uint8
        assert rec.meta.transfer_syntax == "1.2.840.10008.1.2.4.50"
        assert rec.meta.photometric_interpretation == "MONOCHROME2"
        assert rec.meta.pixel_spacing_mm is not None
        assert rec.pixels.std() > 10  # a real radiograph, not a blank


def test_bytes_and_fileobj_equal_path(positive_dicom):
    a = read_image(positive_dicom)
    b = read_image(positive_dicom.read_bytes())
    c = read_image(io.BytesIO(positive_dicom.read_bytes()))
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.pixels, c.pixels)
    assert a.image_id and a.image_id == b.image_id


def test_identifiers_hidden_from_repr(positive_dicom):
    rec = read_image(positive_dicom)
    assert rec.identifiers.patient_id
    assert rec.identifiers.patient_id not in repr(rec)
    assert rec.identifiers.patient_id not in repr(rec.identifiers)
    meta = str(rec.meta.to_dict())
    for value in (rec.identifiers.patient_id, rec.identifiers.patient_name):
        assert value not in meta


def test_dicom_pixels_equal_jpeg_copy(rle_table):
    """The amarshrma JPEGs are re-encodings of the DICOM pixels: both paths agree closely."""
    from conftest import SIIM
    from pneumo.data.dataset import dicom_image_id, read_id_map

    id_map = read_id_map(SIIM / "amarshrma/Deployment/train.csv")
    by_id = {v: k for k, v in id_map.items()}
    for dcm in sorted(SIIM.rglob("*.dcm")):
        uid = dicom_image_id(dcm)
        if uid in by_id and (SIIM / "amarshrma/Deployment/Images" / by_id[uid]).exists():
            a = read_image(dcm).pixels.astype(int)
            b = read_image(SIIM / "amarshrma/Deployment/Images" / by_id[uid]).pixels.astype(int)
            assert np.abs(a - b).mean() < 4
            return
    pytest.skip("no DICOM with a JPEG copy in this data")


@pytest.mark.parametrize(
    "name,shape",
    [
        ("CT_small.dcm", (128, 128)),  # 16-bit signed, rescale slope/intercept
        ("MR_small_RLE.dcm", (64, 64)),  # RLE Lossless
        ("MR_small_jpeg_ls_lossless.dcm", (64, 64)),  # JPEG-LS
        ("MR_small_jp2klossless.dcm", (64, 64)),  # JPEG 2000
        ("MR_small_bigendian.dcm", (64, 64)),  # explicit big endian
        ("MR_small_implicit.dcm", (64, 64)),  # implicit little endian
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", (768, 1024)),  # JPEG Lossless
        ("RG1_J2KR.dcm", (1955, 1841)),  # real CR, MONOCHROME1, J2K
        ("vlut_04.dcm", (512, 512)),  # VOI LUT sequence
    ],
)
def test_transfer_syntaxes(name, shape):
    rec = read_image(get_testdata_file(name))
    assert rec.pixels.shape == shape and rec.pixels.dtype == np.uint8
    assert rec.pixels.max() > rec.pixels.min()


def test_same_pixels_across_encodings():
    base = read_image(get_testdata_file("MR_small.dcm")).pixels
    for name in (
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
    ):
        assert np.array_equal(read_image(get_testdata_file(name)).pixels, base), name


def _synthetic(bits=16, photometric="MONOCHROME2", slope=1.0, intercept=0.0, window=None):
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-0001"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = 64, 48
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ramp = np.tile(np.linspace(0, 2**bits - 1, 48), (64, 1)).astype(
        np.uint16 if bits > 8 else np.uint8
    )
    ds.PixelData = ramp.tobytes()
    ds.ImagerPixelSpacing = [0.2, 0.2]
    if slope != 1.0 or intercept:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), ramp, ds


def test_monochrome1_inverted_so_air_dark():
    m2, _, _ = _synthetic(bits=12)
    m1, _, _ = _synthetic(bits=12, photometric="MONOCHROME1")
    a, b = read_image(m2).pixels.astype(int), read_image(m1).pixels.astype(int)
    assert np.array_equal(a, 255 - b)
    assert a[:, 0].mean() < a[:, -1].mean()


def test_16bit_rescale_and_window():
    data, _, _ = _synthetic(bits=16, slope=2.0, intercept=-1000.0, window=(0.0, 2000.0))
    rec = read_image(data)
    assert rec.meta.windowing == "window"
    assert (
        rec.meta.pixel_spacing_mm == (0.2, 0.2)
        and "Imager Pixel Spacing" in rec.meta.spacing_source
    )
    # stored 0 -> -1000 -> below window -> 0; stored 65535 -> 130070 -> above -> 255
    assert rec.pixels[:, 0].max() == 0 and rec.pixels[:, -1].min() == 255


def test_12bit_without_window_uses_percentile():
    data, _, _ = _synthetic(bits=12)
    rec = read_image(data)
    assert rec.meta.windowing == "percentile"
    assert rec.pixels.min() == 0 and rec.pixels.max() == 255


def test_jpeg_ls_and_j2k_encoded_fixtures():
    """Encode a 16-bit image with the pylibjpeg/pyjpegls plugins and read it back."""
    data, ramp, ds = _synthetic(bits=12)
    plain = read_image(data).pixels
    for uid in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        enc = pydicom.dcmread(io.BytesIO(data))
        try:
            enc.compress(uid)
        except (RuntimeError, NotImplementedError) as exc:  # encoder plugin missing
            pytest.fail(f"no encoder for {uid.name}: {exc}")
        buf = io.BytesIO()
        enc.save_as(buf)
        rec = read_image(buf.getvalue())
        assert rec.meta.transfer_syntax == uid
        assert np.array_equal(rec.pixels, plain)


def test_png_and_jpeg_inputs(tmp_path):
    rng = np.random.default_rng(0)
    grey = (rng.random((40, 30)) * 255).astype(np.uint8)
    for _mode, arr in (
        ("L", grey),
        ("RGB", np.dstack([grey] * 3)),
        ("I;16", (grey.astype(np.uint16) * 257)),
    ):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        rec = read_image(buf.getvalue())
        assert rec.meta.format == "PNG" and rec.pixels.shape == (40, 30)
        assert rec.meta.pixel_spacing_mm is None
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, "JPEG", quality=95)
    rec = read_image(buf.getvalue())
    assert rec.meta.format == "JPEG" and np.abs(rec.pixels.astype(int) - grey).mean() < 8


@pytest.mark.parametrize(
    "maker,err,words",
    [
        (lambda d: b"hello world, not an image" * 10, UnsupportedImageError, "not a DICOM"),
        (lambda d: b"", CorruptImageError, "empty"),
        (lambda d: d[: len(d) // 2], CorruptImageError, "truncated"),
        (lambda d: d[:300], CorruptImageError, None),
    ],
)
def test_bad_bytes(positive_dicom, maker, err, words):
    data = maker(positive_dicom.read_bytes())
    with pytest.raises(err) as info:
        read_image(data)
    if words:
        assert words in str(info.value)


def test_no_pixel_data():
    with pytest.raises(UnsupportedDicomError, match=r"7FE0,0010"):
        read_image(get_testdata_file("rtplan.dcm"))


def test_multiframe_and_colour():
    with pytest.raises(UnsupportedDicomError, match=r"Multi-frame.*0028,0008"):
        read_image(get_testdata_file("emri_small.dcm"))
    with pytest.raises(UnsupportedDicomError, match=r"Colour.*RGB"):
        read_image(get_testdata_file("SC_rgb.dcm"))


def test_absurd_and_zero_dimensions():
    data, _, ds = _synthetic(bits=12)
    ds.Rows, ds.Columns = 60000, 60000
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(ImageTooLargeError, match="60000"):
        read_image(buf.getvalue())
    ds.Rows = 0
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(ImageTooLargeError, match="zero"):
        read_image(buf.getvalue())
    big_png = io.BytesIO()
    Image.new("L", (9000, 9000)).save(big_png, "PNG")
    with pytest.raises(ImageTooLargeError):
        read_image(big_png.getvalue())


def test_unsupported_transfer_syntax():
    data, _, ds = _synthetic(bits=12)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no image decoder
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 10])
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(UnsupportedDicomError, match="1.2.840.10008.1.2.4.100"):
        read_image(buf.getvalue())


def test_damaged_transfer_syntax_uid():
    data, _, _ = _synthetic(bits=12)
    damaged = data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.<40.10008.1.2.1\x00", 1)
    assert damaged != data
    with pytest.raises(UnsupportedDicomError, match="0002,0010"):
        read_image(damaged)


def test_all_errors_are_one_family():
    for cls in (
        CorruptImageError,
        UnsupportedDicomError,
        UnsupportedImageError,
        ImageTooLargeError,
    ):
        assert issubclass(cls, PneumoError)


# --------------------------------------------------------------------------- pixel spacing


def _ds(**tags):
    """A real Dataset, or a plain mapping where pydicom itself refuses the value."""
    try:
        ds = pydicom.Dataset()
        for k, v in tags.items():
            setattr(ds, k, v)
        return ds
    except (ValueError, UserWarning):  # pydicom warns, then refuses, an invalid DS
        return dict(tags)


@pytest.mark.parametrize(
    "tags,mm,source_word,warn",
    [
        # 1024 px at 0.4 mm: a 41 cm chest, plausible
        (dict(PixelSpacing=[0.4, 0.4]), (0.4, 0.4), "calibration not stated", None),
        (
            dict(PixelSpacing=[0.4, 0.4], PixelSpacingCalibrationType="GEOMETRY"),
            (0.4, 0.4),
            "calibrated (geometry)",
            None,
        ),
        # Pixel Spacing wins over Imager Pixel Spacing when both are present
        (
            dict(PixelSpacing=[0.35, 0.35], ImagerPixelSpacing=[0.4, 0.4]),
            (0.35, 0.35),
            "Pixel Spacing",
            None,
        ),
        # detector plane corrected by the magnification factor
        (
            dict(ImagerPixelSpacing=[0.44, 0.44], EstimatedRadiographicMagnificationFactor=1.1),
            (0.4, 0.4),
            "magnification factor 1.1",
            None,
        ),
        (dict(ImagerPixelSpacing=[0.4, 0.4]), (0.4, 0.4), "not corrected", None),
        # SIIM's case: the full-size film's spacing on a 1024 px image
        (dict(PixelSpacing=[0.143, 0.143]), (0.143, 0.143), "Pixel Spacing", "14.6 cm wide"),
        (dict(PixelSpacing=[0.6, 0.6]), (0.6, 0.6), "Pixel Spacing", "61.4 cm wide"),
        (dict(PixelSpacing=[0.6, 0.4]), (0.6, 0.4), "Pixel Spacing", "61.4 cm tall"),
        # unusable values are ignored, never a crash
        (dict(PixelSpacing=[0, 0.4]), None, None, None),
        (
            dict(ImagerPixelSpacing=[0.4, 0.4], EstimatedRadiographicMagnificationFactor="x"),
            (0.4, 0.4),
            "not corrected",
            None,
        ),
    ],
)
def test_pixel_spacing_rules(tags, mm, source_word, warn):
    from pneumo.io.spacing import from_dataset

    s = from_dataset(_ds(**tags), 1024, 1024)
    if mm is None:
        assert s.mm is None and s.source is None and not s.usable
        return
    assert s.mm == pytest.approx(mm)
    assert source_word in s.source
    assert (s.warning is None) == (warn is None) and (warn is None or warn in s.warning)
    assert s.usable == (warn is None)


def test_siim_files_get_no_misleading_area(positive_dicom):
    """Every SIIM DICOM here keeps its full-size film's spacing: no cm² for any of them."""
    rec = read_image(str(positive_dicom))
    assert rec.meta.pixel_spacing_mm and "implausible" in rec.meta.spacing_warning
    from pneumo.inference.postprocess import OperatingPoint
    from pneumo.inference.predictor import Predictor
    from conftest import write_untrained_model
    import tempfile
    from pathlib import Path

    arch = {
        "name": "double_unet",
        "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1},
    }
    with tempfile.TemporaryDirectory() as tmp:
        predictor = Predictor.load(
            write_untrained_model(Path(tmp) / "m", arch, {"size": 64, "channels": 1})
        )
        predictor.operating_point = OperatingPoint("test", 0.0, 1.0, 0.0)  # always positive
        pred = predictor.predict(rec)
    assert pred.area_px > 0 and pred.area_cm2 is None


def test_16_bit_display_is_made_in_blocks_with_the_same_pixels():
    """Display pixels of a 16-bit image are computed a block of rows at a time (bounded
    memory for huge images) and equal the whole-array percentile window exactly."""
    import io as _io
    import numpy as _np
    from PIL import Image as _Image
    from pneumo.io import imaging

    rng = _np.random.default_rng(3)
    values = rng.normal(2000, 600, (1100, 900)).clip(0, 65535).astype(_np.uint16)
    buf = _io.BytesIO()
    _Image.fromarray(values).save(buf, "PNG")
    got = imaging.read_image(buf.getvalue()).pixels
    v = values.astype(_np.float64)
    lo, hi = _np.percentile(v, [0.5, 99.5])
    expected = _np.round(_np.clip((v - lo) / (hi - lo), 0, 1) * 255).astype(_np.uint8)
    assert imaging.BLOCK_ROWS < values.shape[0] and _np.array_equal(got, expected)
    assert imaging.declared_pixels(buf.getvalue()) == values.size
