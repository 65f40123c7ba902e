"""Regression test for the bundled default model on the committed validation split.

Runs the default model on every validation image under ../shared/data (SIIM
DICOMs, PNGs and JPEGs, NIH negatives), decoded from the files, and checks
floors a little under the figures measured when the model was packaged
(models/double_unet_siim_256/README.md). A retrained model that is worse, a
preprocessing change that silently shifts the input, or a card whose figures
do not match its weights fails here.
"""
import json

import pytest

from conftest import ROOT

BUNDLED = ROOT / "models" / "double_unet_siim_256"

# measured when packaged (model.json "validation"): positive-image Dice 0.316, AUC 0.812
FLOOR_DICE_POSITIVE = 0.29
FLOOR_AUC = 0.79

pytestmark = [pytest.mark.bundled, pytest.mark.slow]


@pytest.fixture(scope="module")
def validation_scores(tmp_path_factory):
    from pneumo.evaluation import evaluate
    from pneumo.inference import DEFAULT_MODEL_DIR, Predictor
    from pneumo.training import TrainConfig, split_samples
    assert DEFAULT_MODEL_DIR.resolve() == BUNDLED.resolve()
    predictor = Predictor.load()  # the default, as the app and `pneumo predict` load it
    data = split_samples(TrainConfig(data=str(ROOT / "configs" / "data_siim_v2.json")))
    val = data.samples["val"]
    formats = {s.format for s in val}
    assert "DICOM" in formats and len(val) == 404, formats
    return evaluate(predictor, val, data.table, tmp_path_factory.mktemp("eval"), progress=False)


def test_bundled_model_floors(validation_scores):
    assert validation_scores["n_images"] == 404 and validation_scores["n_positive"] == 147
    assert validation_scores["dice_positive"] >= FLOOR_DICE_POSITIVE
    assert validation_scores["auc"] >= FLOOR_AUC


def test_bundled_model_card_matches_its_weights(validation_scores):
    card = json.loads((BUNDLED / "model.json").read_text())["validation"]
    for key in ("dice_positive", "auc", "siim_score", "siim_score_reweighted", "sensitivity",
                "specificity"):
        assert validation_scores[key] == pytest.approx(card[key], abs=0.005), key
