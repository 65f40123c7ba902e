"""Hardening (issue 34): one guarded reader for every DICOM entry point, one mapping from
parser failures to refusals, exports from repaired sources, and absurd sizes refused.

The malformed files are made here, from a real SIIM DICOM, by splicing raw elements in
front of its Pixel Data."""

import io
import struct
import uuid
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.errors import BytesLengthException, InvalidDicomError

from pneumo.errors import (
    CorruptImageError,
    DicomTooComplexError,
    ImageTooLargeError,
    PneumoError,
    UnsupportedImageError,
)
from pneumo.io import dicomguard
from pneumo.io.dicomguard import (
    MAX_DEPTH,
    MAX_ITEMS,
    DicomScan,
    identity,
    read_dataset,
    refusal,
    scan,
)
from pneumo.io.imaging import MAX_SIDE, MIN_SIDE, check_dimensions, declared_pixels, read_image

ITEM = b"\xfe\xff\x00\xe0"
ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
UNDEFINED = b"\xff\xff\xff\xff"
DEFLATED = b"1.2.840.10008.1.2.1.99"


# -- malformed files, made from a real one ------------------------------------------------


def _fresh(data: bytes, **changes) -> bytes:
    """A copy of a DICOM with new study, series and instance UIDs, ``changes`` applied
    (``None`` deletes an attribute)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the deliberately bad values
        for key, value in changes.items():
            if value is None:
                delattr(ds, key)
            else:
                setattr(ds, key, value)
        buf = io.BytesIO()
        ds.save_as(buf)
    return buf.getvalue()


def _before_pixels(data: bytes, raw: bytes) -> bytes:
    """``raw`` (explicit VR little endian elements) spliced in before Pixel Data."""
    at = data.rfind(b"\xe0\x7f\x10\x00")
    return data[:at] + raw + data[at:]


def _empty_items(n: int) -> bytes:
    """Content Sequence (0040,A730), undefined length, of ``n`` empty items."""
    return b"\x40\x00\x30\xa7SQ\x00\x00" + UNDEFINED + (ITEM + b"\x00" * 4) * n + SEQUENCE_END


def _nested(depth: int) -> bytes:
    """Referenced Image Sequence (0008,1140) in its own only item, ``depth`` deep."""
    opening = b"\x08\x00\x40\x11SQ\x00\x00" + UNDEFINED + ITEM + UNDEFINED
    return opening * depth + (ITEM_END + SEQUENCE_END) * depth


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


@pytest.fixture(scope="module")
def source(positive_dicom) -> bytes:
    """A real SIIM DICOM (JPEG Baseline, Part 10), with UIDs of its own."""
    return _fresh(positive_dicom.read_bytes())


def _sop_uid(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


#: Malformed files that used to escape the readers as exceptions other than refusals:
#: (name, what makes it from a good file, the refusal's class, words of its message).
MALFORMED = [
    (
        "nested_250_deep",
        lambda d: _before_pixels(d, _nested(250)),
        DicomTooComplexError,
        f"more than {MAX_DEPTH} deep",
    ),
    (
        "deflate_over_plain_data",
        lambda d: d.replace(b"1.2.840.10008.1.2.4.50", DEFLATED, 1),
        CorruptImageError,
        "not deflate data",
    ),
    (
        "unknown_vr",
        lambda d: _before_pixels(d, _element(0x0009, 0x0010, b"XY", b"abcd")),
        CorruptImageError,
        "Value Representation",
    ),
    (
        "wrong_length_for_vr",
        lambda d: _before_pixels(d, _element(0x0028, 0x0102, b"US", b"abc")),
        CorruptImageError,
        "length does not fit",
    ),
    (
        "header_cut_short",
        lambda d: d + b"\xe1\x7f\x10\x00OB\x00\x00\x01",
        CorruptImageError,
        "cut short",
    ),
    (
        "300000_empty_items",
        lambda d: _before_pixels(d, _empty_items(300_000)),
        DicomTooComplexError,
        f"more than {MAX_ITEMS:,} sequence items",
    ),
]


# -- the guard -------------------------------------------------------------------------


def _pydicom_counts(data: bytes) -> tuple[int, int]:
    """(data elements, sequence items and pixel fragments) of what pydicom builds."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    elements = sum(1 for _ in ds.iterall()) + len(ds.file_meta)
    items = sum(len(e.value) for e in ds.iterall() if e.VR == "SQ")
    if "PixelData" in ds and ds["PixelData"].is_undefined_length:
        items += sum(1 for _ in pydicom.encaps.generate_fragments(ds.PixelData))
    return elements, items


@pytest.mark.parametrize(
    "name,syntax",
    [
        ("CT_small.dcm", "explicit VR little endian, sequences"),
        ("MR_small_implicit.dcm", "implicit VR little endian"),
        ("MR_small_bigendian.dcm", "explicit VR big endian"),
        ("image_dfl.dcm", "deflated explicit VR little endian"),
        ("RG1_J2KR.dcm", "JPEG 2000, encapsulated fragments"),
        ("rtplan.dcm", "implicit VR, nested sequences"),
        ("no_meta.dcm", "no preamble, no file meta"),
    ],
)
def test_the_scan_counts_what_pydicom_builds(name, syntax):
    data = Path(get_testdata_file(name)).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _pydicom_counts(data)
    walked = scan(data)
    assert (walked.elements, walked.items) == expected, syntax
    assert walked.deflated == (name == "image_dfl.dcm")


def test_the_scan_reads_a_file_without_preamble_as_pydicom_does(source):
    bare = source[132:]  # File Meta and data set, no preamble or DICM prefix
    assert (scan(bare).elements, scan(bare).items) == (scan(source).elements, scan(source).items)
    assert identity(bare) == identity(source)
    assert read_dataset(bare).SOPInstanceUID == _sop_uid(source)
    with pytest.raises(UnsupportedImageError, match="Part 10"):
        read_dataset(bare, part10_only=True)


def test_every_siim_file_passes_the_guard(siim_dicoms):
    for path in siim_dicoms:
        walked = scan(path.read_bytes())
        assert walked.elements < 1000 and walked.depth <= 2, path.name


def test_300000_empty_items_are_refused_unread(source, monkeypatch):
    """The issue's 3.45 MB file: the walk stops at the first item over the limit, and
    pydicom never sees the file, whichever reader it reaches."""
    data = _before_pixels(source, _empty_items(300_000))
    walk = DicomScan(data)
    with pytest.raises(DicomTooComplexError) as refused:
        walk.run()
    assert walk.items == MAX_ITEMS + 1  # of 300,000: the rest was never looked at
    message = str(refused.value)
    assert f"more than {MAX_ITEMS:,} sequence items" in message and "(0040,A730)" in message
    assert "\n" not in message and refused.value.http_status == 422

    def parsed(*args, **kwargs):
        raise AssertionError("pydicom parsed a file the guard refuses")

    monkeypatch.setattr(pydicom, "dcmread", parsed)
    from app.dicomweb import precheck
    from app.service import seg_note

    with pytest.raises(DicomTooComplexError):
        read_image(data)
    assert declared_pixels(data) is None and seg_note(data) is None
    header, (reason, words) = precheck(data, "application/dicom")
    assert reason == 0xA700 and f"{MAX_ITEMS:,}" in words
    assert header.SOPInstanceUID == identity(source)[1]  # named, read from the raw bytes


def test_limits_on_depth_elements_and_inflated_size(source, monkeypatch):
    assert scan(_before_pixels(source, _nested(MAX_DEPTH))).depth == MAX_DEPTH
    with pytest.raises(DicomTooComplexError, match=r"more than 12 deep \(at \(0008,1140\)\)"):
        scan(_before_pixels(source, _nested(MAX_DEPTH + 1)))
    elements = scan(source).elements
    monkeypatch.setattr(dicomguard, "MAX_ELEMENTS", elements)
    scan(source)  # at the limit
    with pytest.raises(DicomTooComplexError, match="data elements"):
        scan(_before_pixels(source, _element(0x0009, 0x0010, b"LO", b"PNEUMO")))
    bomb = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = bomb.compress(b"\x00" * 3_000_000) + bomb.flush()
    assert len(dicomguard.inflate(deflated, 3_000_000)) == 3_000_000
    with pytest.raises(DicomTooComplexError, match="inflates to more than 2 MB"):
        dicomguard.inflate(deflated, 2 * 2**20)
    with pytest.raises(CorruptImageError, match="truncated"):
        dicomguard.inflate(deflated[: len(deflated) // 2])


# -- one mapping from parser failures to refusals ----------------------------------------


@pytest.mark.parametrize(
    "exc,cls,words",
    [
        (
            RecursionError("maximum recursion depth exceeded"),
            CorruptImageError,
            "nested too deeply",
        ),
        (zlib.error("Error -3 while decompressing data"), CorruptImageError, "deflate"),
        (
            NotImplementedError("Unknown Value Representation 'XY'"),
            CorruptImageError,
            "Value Representation",
        ),
        (BytesLengthException("Expected total bytes"), CorruptImageError, "length does not fit"),
        (struct.error("unpack requires a buffer of 4 bytes"), CorruptImageError, "cut short"),
        (ValueError("anything else"), CorruptImageError, "truncated or damaged."),
        (
            InvalidDicomError("File is missing DICOM File Meta"),
            UnsupportedImageError,
            "Not a readable DICOM",
        ),
    ],
)
def test_every_parser_failure_is_a_refusal(exc, cls, words):
    refused = refusal(exc)
    assert type(refused) is cls and words in str(refused)
    assert "'XY'" not in str(refused) and "unpack" not in str(refused)  # our words only
    same = CorruptImageError("already a refusal")
    assert refusal(same) is same
    with pytest.raises(KeyboardInterrupt):
        refusal(KeyboardInterrupt())


@pytest.mark.parametrize("name,make,cls,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_every_reader_refuses_a_malformed_file(source, name, make, cls, words):
    from app.dicomweb import precheck
    from app.service import seg_note

    data = make(source)
    with pytest.raises(cls, match=words):
        read_dataset(data)
    with pytest.raises(cls, match=words):
        read_image(data)
    header_read = name == "header_cut_short"  # its damage lies after the pixel data
    assert (declared_pixels(data) is not None) == header_read and seg_note(data) is None
    header, failure = precheck(data, "application/dicom")
    assert failure is not None and words in failure[1]
    assert str(header.SOPInstanceUID) == _sop_uid(source)  # the refusal names the instance


def _related(*parts: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            b"--"
            + boundary.encode()
            + b"\r\nContent-Type: application/dicom\r\n\r\n"
            + part
            + b"\r\n"
            for part in parts
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


@pytest.mark.parametrize(
    "bad_kind,reason", [("unknown_vr", 0xC000), ("300000_empty_items", 0xA700)]
)
def test_a_stow_with_one_malformed_instance_stores_the_others(app, source, bad_kind, reason):
    store = app.extensions["pneumo"].store
    store.accounts.create("pacs", "a-long-password-1")
    auth = {"Authorization": f"Bearer {store.accounts.create_token('pacs')}"}
    make = next(m[1] for m in MALFORMED if m[0] == bad_kind)
    good = [_fresh(source), _fresh(source)]
    named = _fresh(source)
    body, ctype = _related(good[0], make(named), good[1])
    resp = app.test_client().post("/dicomweb/studies", data=body, content_type=ctype, headers=auth)
    assert resp.status_code == 202 and resp.mimetype == "application/dicom+json"
    answer = pydicom.Dataset.from_json(resp.json)
    stored = {str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence}
    assert stored == {_sop_uid(g) for g in good}
    (failed,) = answer.FailedSOPSequence
    assert str(failed.ReferencedSOPInstanceUID) == _sop_uid(named)
    assert failed.FailureReason == reason
    assert len(app.test_client().get("/api/v1/predictions", headers=auth).json["results"]) == 2


# -- exports from repaired sources -------------------------------------------------------

#: Sources whose SEG, SR or secondary capture used to fail (issue 34 part C).
DAMAGED_SOURCES = {
    "no_preamble": lambda d: d[132:],
    "unknown_character_set": lambda d: _fresh(d, SpecificCharacterSet="GARBAGE"),
    "no_sop_class": lambda d: _fresh(d, SOPClassUID=None),
    "no_modality": lambda d: _fresh(d, Modality=None),
}


@pytest.mark.parametrize("kind", sorted(DAMAGED_SOURCES))
def test_damaged_sources_give_a_seg_an_sr_and_a_capture(source, kind):
    import highdicom as hd
    from app.renditions import dataset_bytes
    from pneumo.inference.overlay import filled
    from pneumo.io.capture import make_secondary_capture
    from pneumo.io.seg import make_seg, make_seg_dataset, source_dataset
    from pneumo.io.sr import make_sr_dataset

    data = DAMAGED_SOURCES[kind](source)
    pixels = read_image(data).pixels
    mask = np.zeros(pixels.shape, bool)
    mask[100:300, 600:800] = True
    repaired = source_dataset(data, "result-1")
    assert source_dataset(repaired, "result-1") == repaired  # repairing twice: no change
    seg = make_seg_dataset(data, mask, "double_unet_v2", "result-1", 1_700_000_000.0)
    sr = make_sr_dataset(
        data,
        seg,
        positive=True,
        probability=0.87,
        probability_kind="probability",
        operating_point="balanced",
        threshold=0.5,
        area_px=int(mask.sum()),
        area_cm2=None,
        side="left",
        model_name="double_unet_v2",
        model_version="2.1.0",
        uid_seed="result-1",
        created=1_700_000_000.0,
    )
    sc = make_secondary_capture(
        data,
        filled(pixels, mask),
        model_name="double_unet_v2",
        uid_seed="result-1",
        created=1_700_000_000.0,
    )
    read = {
        name: pydicom.dcmread(io.BytesIO(dataset_bytes(ds)))
        for name, ds in (("seg", seg), ("sr", sr), ("sc", sc))
    }
    assert (read["seg"].Modality, read["sr"].Modality) == ("SEG", "SR")
    assert hd.seg.segread(io.BytesIO(dataset_bytes(seg))).SOPInstanceUID == seg.SOPInstanceUID
    assert (
        make_seg(
            data,
            mask,
            "double_unet_v2",
            deidentify=True,
            uid_seed="result-1",
            created=1_700_000_000.0,
        )[128:132]
        == b"DICM"
    )
    referenced = read["sc"].SourceImageSequence[0]
    assert referenced.ReferencedSOPInstanceUID == repaired.SOPInstanceUID
    assert pydicom.uid.UID(str(referenced.ReferencedSOPClassUID)).is_valid
    assert len({str(d.StudyInstanceUID) for d in read.values()}) == 1
    if kind == "unknown_character_set":
        assert all("SpecificCharacterSet" not in d for d in read.values())
    if kind == "no_sop_class":  # the File Meta still says Secondary Capture (SIIM's class)
        assert repaired.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    if kind == "no_modality":
        assert repaired.Modality == "OT" and read["sc"].Modality == "OT"


def test_source_dataset_leaves_the_callers_dataset_alone(source):
    from pneumo.io.seg import source_dataset

    ds = pydicom.dcmread(io.BytesIO(_fresh(source, Modality=None, SOPInstanceUID="ID_1")))
    repaired = source_dataset(ds, "result-1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "ID_1" is no UID (SIIM's own files have such)
        assert "Modality" not in ds and ds.SOPInstanceUID == "ID_1"
    assert repaired.Modality == "OT" and repaired.SOPInstanceUID != "ID_1"


@pytest.mark.parametrize(
    "value,written",
    [
        ("GARBAGE", None),
        ("", None),
        ("ISO_IR 6", None),
        ("ISO_IR 100", "ISO_IR 100"),
        ("ISO_IR 192", "ISO_IR 192"),
        (["", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 87"]),
        (["ISO 2022 IR 6", "BOGUS"], None),
        (["ISO_IR 100", "ISO_IR 192"], None),
    ],
)
def test_export_character_set(value, written):
    from pneumo.io.seg import export_character_set

    assert export_character_set(value) == written


def test_the_app_exports_a_result_whose_source_has_no_preamble(app, source):
    store = app.extensions["pneumo"].store
    store.accounts.create("ann", "a-long-password-1")
    auth = {"Authorization": f"Bearer {store.accounts.create_token('ann')}"}
    client = app.test_client()
    resp = client.post(
        "/api/v1/predictions", headers=auth, data={"file": (io.BytesIO(source[132:]), "bare.dcm")}
    )
    assert resp.status_code == 201, resp.get_json()
    rid = resp.get_json()["results"][0]["id"]
    for kind in ("seg", "sr", "sc"):
        answer = client.get(f"/results/{rid}/{kind}.dcm", headers=auth)
        assert answer.status_code == 200, kind
        assert pydicom.dcmread(io.BytesIO(answer.data)).SOPInstanceUID


# -- sizes no radiograph has -------------------------------------------------------------


@pytest.mark.parametrize(
    "rows,columns,words",
    [
        (1, 70_000, "side over 65,500"),
        (70_000, 40, "side over 65,500"),
        (10, 100, "at least 16"),
        (4000, 200, "at most 16 times"),
        (0, 10, "zero size"),
    ],
)
def test_absurd_sizes_are_refused(rows, columns, words):
    with pytest.raises(ImageTooLargeError, match=words):
        check_dimensions(rows, columns, 10**9)


@pytest.mark.parametrize(
    "rows,columns",
    [(MIN_SIDE, MIN_SIDE), (40, 30), (1024, 1024), (3000, 2500), (4300, 1075), (MAX_SIDE, 4096)],
)
def test_radiograph_sizes_pass(rows, columns):
    check_dimensions(rows, columns, 10**9)


def test_a_70000_by_1_png_is_refused_not_a_server_error(client):
    buf = io.BytesIO()
    Image.new("L", (70_000, 1)).save(buf, "PNG", optimize=True)
    png = buf.getvalue()
    assert len(png) < 400  # the file was 149 bytes
    with pytest.raises(ImageTooLargeError, match="65,500"):
        read_image(png)
    data, _ = _synthetic_dicom(rows=40, columns=65_535)  # US: 65,535 at most
    with pytest.raises(ImageTooLargeError, match="65,500"):
        read_image(data)
    resp = client.post("/api/v1/predictions", data={"file": (io.BytesIO(png), "strip.png")})
    assert resp.status_code == 413, resp.get_json()
    assert "65,500" in resp.get_json()["errors"][0]["message"]


def _synthetic_dicom(rows: int, columns: int) -> tuple[bytes, pydicom.Dataset]:
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "CR", rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(rows * columns)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), ds


def test_refusals_are_one_family():
    assert issubclass(DicomTooComplexError, PneumoError)
    assert DicomTooComplexError.code == "dicom_too_complex"
