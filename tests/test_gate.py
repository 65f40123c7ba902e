"""The chest gate: what is not a frontal chest radiograph gets no verdict."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import SIIM, write_untrained_model
from helpers.web import upload


def meta(**kw):
    from pneumo.io.imaging import DisplayMetadata

    return DisplayMetadata(format="DICOM", rows=8, columns=8, **kw)


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"modality": "CT"}, "Modality (0008,0060) is CT"),
        ({"modality": "MR"}, "Modality (0008,0060) is MR"),
        ({"modality": "CR", "body_part": "KNEE"}, "Body Part Examined (0018,0015) is KNEE"),
        ({"modality": "DX", "view_position": "LL"}, "lateral view"),
        ({"modality": "CR", "view_position": "LATERAL"}, "lateral view"),
        ({"chroma": 40.0}, "colour image"),
    ],
)
def test_header_and_colour_say_no(fields, words):
    from pneumo.inference.gate import metadata_reason

    assert words in metadata_reason(meta(**fields))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"modality": "CR", "body_part": "CHEST", "view_position": "PA"},
        {"modality": "DX", "body_part": "PORT CHEST", "view_position": "AP"},
        {"modality": "OT"},
        {"chroma": 2.0},
    ],
)
def test_header_of_a_frontal_chest_film_passes(fields):
    from pneumo.inference.gate import metadata_reason

    assert metadata_reason(meta(**fields)) is None


def test_chroma_of_a_colour_photograph_and_of_a_real_grey_jpeg():
    from skimage import data
    from pneumo.io.imaging import read_image

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="PNG")
    assert read_image(buf.getvalue()).meta.chroma > 12
    jpeg = next(iter(sorted(SIIM.rglob("*.jpg"))))
    assert read_image(jpeg).meta.chroma < 3


def test_pydicom_test_files_chest_passes_extremity_and_ct_do_not():
    from pydicom.data import get_testdata_file
    from pneumo.inference.gate import metadata_reason
    from pneumo.io.imaging import read_image

    chest = read_image(get_testdata_file("RG1_UNCI.dcm"))
    assert chest.meta.body_part == "CHEST" and metadata_reason(chest.meta) is None
    assert "EXTREMITY" in metadata_reason(read_image(get_testdata_file("RG3_UNCI.dcm")).meta)
    assert "CT" in metadata_reason(read_image(get_testdata_file("CT_small.dcm")).meta)


def test_a_ct_slice_uploaded_gets_no_verdict_and_nothing_is_stored(app, client):
    from pydicom.data import get_testdata_file
    from pathlib import Path

    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    r = client.post(
        "/api/v1/predictions",
        data={"file": (io.BytesIO(data), "ct.dcm")},
        content_type="multipart/form-data",
    )
    assert r.status_code == 422
    (error,) = r.get_json()["errors"]
    assert error["code"] == "not_chest_xray" and error["file"] == "ct.dcm"
    assert "Not analysed: not a frontal chest X-ray" in error["message"]
    assert "Modality (0008,0060) is CT" in error["message"]
    results = app.extensions["pneumo"].store.files.results_dir
    assert not results.exists() or not [p for p in results.iterdir() if not p.name.startswith(".")]
    page = upload(client, ("ct.dcm", data))
    assert page.status_code == 422 and b"not a frontal chest X-ray" in page.data


def test_gate_fit_separates_and_round_trips():
    from pneumo.inference.gate import AppearanceGate, fit

    rng = np.random.default_rng(0)
    chest = rng.normal(0, 1, (300, 16))
    other = rng.normal(4, 1, (80, 16))
    g = fit(chest, other, margin=0.5)
    assert g.passes(chest).all()  # every fitted chest film passes
    assert (~g.passes(rng.normal(4, 1, (200, 16)))).mean() > 0.95
    again = AppearanceGate.from_dict(json.loads(json.dumps(g.to_dict())))
    assert np.allclose(again.scores(chest), g.scores(chest), atol=1e-4)
    with pytest.raises(ValueError, match="expects 16 features"):
        g.scores(np.zeros((1, 3)))


@pytest.fixture(scope="module")
def head_model_folder(tmp_path_factory):
    arch = {
        "name": "double_unet",
        "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1, "image_head": True},
    }
    return write_untrained_model(
        tmp_path_factory.mktemp("models") / "tiny_head", arch, {"size": 64, "channels": 1}
    )


def _with_gate(folder, threshold):
    from pneumo.inference.card import read_card
    from pneumo.inference.predictor import Predictor
    from pneumo.nets.networks import build_model, with_features

    card = read_card(folder)
    width = with_features(build_model(card.architecture)).output_shape[-1][-1]
    card.chest_gate = {
        "mean": [0.0] * width,
        "scale": [1.0] * width,
        "coef": [0.0] * width,
        "intercept": 0.0,
        "threshold": threshold,
        "info": {},
    }
    card.write(folder)
    return Predictor.load(folder)


def test_predictor_refuses_what_the_appearance_gate_refuses(head_model_folder, positive_dicom):
    from pneumo.errors import NotChestXrayError
    from pneumo.io.imaging import read_image

    record = read_image(positive_dicom)
    passing = _with_gate(head_model_folder, threshold=-1.0)  # every score is 0
    assert passing.output(np.zeros((2, 64, 64), np.uint8)).features.shape[0] == 2
    assert passing.predict(record).probability_map.shape == (64, 64)
    refusing = _with_gate(head_model_folder, threshold=1.0)
    with pytest.raises(NotChestXrayError, match="does not look like a frontal chest"):
        refusing.predict(record)


def test_batch_predict_skips_non_chest_files_with_the_reason(
    tmp_path, tiny_predictor, capsys, positive_dicom
):
    import shutil
    from pydicom.data import get_testdata_file
    from pneumo.evaluation.batch import predict_files

    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "mr.dcm")
    shutil.copy(positive_dicom, tmp_path / "chest.dcm")
    counts = predict_files(tiny_predictor, [str(tmp_path)], tmp_path / "sub.csv", progress=False)
    assert counts["images"] == 1 and counts["not_chest"] == 1
    (line,) = counts["skipped"]
    assert line.startswith("skipped mr.dcm: Not analysed") and "Modality (0008,0060) is MR" in line
