"""The site's prevalence (PNEUMO_PREVALENCE), the review band and the heat map on a result."""

import json

import pytest

from conftest import write_untrained_model
from helpers.web import result_id_from, upload


@pytest.mark.parametrize("raw, value", [("0.05", 0.05), ("5%", 0.05), ("", None)])
def test_prevalence_setting(raw, value):
    from app.settings import Settings

    assert (
        Settings.from_env({"PNEUMO_PREVALENCE": raw}).prevalence == pytest.approx(value)
        if value
        else Settings.from_env({"PNEUMO_PREVALENCE": raw}).prevalence is None
    )


@pytest.mark.parametrize("raw", ["0", "1", "1.5", "five", "-3%"])
def test_prevalence_setting_refuses_nonsense(raw):
    from app.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="PNEUMO_PREVALENCE"):
        Settings.from_env({"PNEUMO_PREVALENCE": raw})


@pytest.fixture(scope="module")
def calibrated_folder(tmp_path_factory):
    from pneumo.inference.card import read_card

    arch = {
        "name": "double_unet",
        "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1},
    }
    folder = write_untrained_model(
        tmp_path_factory.mktemp("models") / "tiny_calibrated",
        arch,
        {"size": 64, "channels": 1},
        calibration={"features": ["evidence"], "coef": [1.0], "intercept": 0.0},
    )
    card = read_card(folder)
    card.calibration_prevalence = 0.4
    # the bundled model's held-out figures, so the page shows real per-source ones
    from pneumo.inference.predictor import DEFAULT_MODEL_DIR

    card.validation = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())["validation"]
    card.write(folder)
    return folder


def test_site_prevalence_rebases_probability_and_threshold_not_the_verdict(
    calibrated_folder, positive_dicom
):
    from pneumo.inference.postprocess import rebase_probability
    from pneumo.inference.predictor import Predictor
    from pneumo.io.imaging import read_image

    record = read_image(positive_dicom)
    plain = Predictor.load(calibrated_folder).predict(record)
    site = Predictor.load(calibrated_folder, prevalence=0.05).predict(record)
    assert site.positive == plain.positive
    assert site.probability == pytest.approx(
        float(rebase_probability(plain.probability, 0.4, 0.05))
    )
    assert site.threshold == pytest.approx(float(rebase_probability(plain.threshold, 0.4, 0.05)))
    assert site.probability < plain.probability
    assert site.heat_map.max() <= site.probability_map.max() * site.probability + 1e-6


def test_prevalence_needs_a_calibrated_model(tiny_model_folder):
    from pneumo.errors import ModelLoadError
    from pneumo.inference.predictor import Predictor

    with pytest.raises(ModelLoadError, match="calibrated probability"):
        Predictor.load(tiny_model_folder, prevalence=0.05)


def test_the_service_refuses_an_unusable_model_at_start_up(tmp_path, tiny_model_folder):
    """The one card check (operating point, prevalence) stops ``create_app`` before the
    loader thread starts, with the reason."""
    from app import create_app
    from pneumo.errors import ModelLoadError

    base = {
        "TESTING": True,
        "SECRET_KEY": "k",
        "DATA_DIR": str(tmp_path / "d"),
        "MODEL_DIR": str(tiny_model_folder),
        "WARM_UP": False,
    }
    with pytest.raises(ModelLoadError, match="unknown operating point 'nope'.*balanced, triage"):
        create_app(dict(base, OPERATING_POINT="nope"))
    with pytest.raises(ModelLoadError, match="PNEUMO_PREVALENCE.*calibrated probability"):
        create_app(dict(base, PREVALENCE="0.05"))


def point_figures(folder):
    from pneumo.inference.card import read_card

    return read_card(folder).source_figures("balanced")


def test_result_page_says_prevalence_split_and_scales_the_legend(
    tmp_path, calibrated_folder, positive_dicom
):
    from app import create_app
    from pneumo.inference.predictor import Predictor

    predictor = Predictor.load(calibrated_folder, prevalence=0.05)
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "t",
            "DATA_DIR": str(tmp_path / "d"),
            "PREDICTOR": predictor,
        }
    )
    client = app.test_client()
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    page = client.get(f"/results/{rid}").get_data(as_text=True)
    assert "at this site's prevalence of 5.0 %" in page and "calibrated at 40 %" in page
    assert "(pooled on the tune split: sensitivity" in page
    # the headline is within each source, from the card's held-out figures and intervals
    figures = {(f["source"], f["figure"]): f for f in point_figures(calibrated_folder)}
    siim = figures[("siim", "sensitivity")]
    nih = figures[("nih", "specificity")]
    assert ("nih", "sensitivity") not in figures  # no NIH positive in validation: no figure
    shown = (
        f"SIIM sensitivity {100 * siim['value']:.0f} % ({100 * siim['ci'][0]:.0f}–"
        f"{100 * siim['ci'][1]:.0f} %) of {siim['n']} films with pneumothorax"
    )
    assert shown in " ".join(page.split()), page[page.find("by-source") :][:600]
    assert f"NIH specificity {100 * nih['value']:.0f} %" in " ".join(page.split())
    point = client.get(f"/api/v1/predictions/{rid}").get_json()["operating_point"]
    assert point["site_prevalence"] == 0.05 and point["calibrated_at"] == 0.4
    assert point["review_band"][1] == pytest.approx(point["threshold"])
    assert point["threshold"] < point["calibrated_threshold"] == 0.3
    assert f'data-mask-threshold="{point["mask_threshold"] * point["heat_scale"]}"' in page
