"""Shared fixtures: paths to the real data beside the checkout, tiny models."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
SIIM = SHARED / "siim"
RLE_CSV = SIIM / "torchxrayvision-1.5.7-wheel/torchxrayvision/data/siim-pneumothorax-train-rle.csv.gz"


def pytest_collection_modifyitems(config, items):
    if not SIIM.exists():
        raise pytest.UsageError(f"The shared data folder is missing: {SIIM}")


@pytest.fixture(scope="session")
def rle_table():
    from pneumo import rle
    return rle.read_rle_csv(RLE_CSV)


@pytest.fixture(scope="session")
def siim_dicoms():
    return sorted(SIIM.rglob("*.dcm"))


@pytest.fixture(scope="session")
def positive_dicom(rle_table, siim_dicoms):
    """A real labelled SIIM DICOM with a pneumothorax."""
    from pneumo.dataset import dicom_image_id
    from pneumo.rle import is_positive
    for path in siim_dicoms:
        uid = dicom_image_id(path)
        if uid in rle_table and is_positive(rle_table[uid]):
            return path
    raise AssertionError("no positive labelled DICOM in shared data")


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory):
    """An untrained 64x64 Double-UNet folder with a card, made in seconds.

    Its thresholds are set low so that its (random) output produces a mask.
    """
    import json
    from pneumo.networks import build_model
    folder = tmp_path_factory.mktemp("models") / "tiny_untrained"
    folder.mkdir()
    arch = {"name": "double_unet", "args": {"input_size": 64, "depth": 2, "width": 0.125,
                                            "channels": 1}}
    import keras
    keras.utils.set_random_seed(1)
    build_model(arch).save_weights(folder / "weights.weights.h5")
    card = {"name": "tiny_untrained", "version": "test", "architecture": arch,
            "preprocess": {"size": 64, "channels": 1},
            "postprocess": {"pixel_threshold": 0.3, "top_threshold": 0.3, "min_top_pixels": 4,
                            "min_area": 0, "reference_size": 64},
            "tta": False, "validation": {}}
    (folder / "model.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="session")
def tiny_predictor(tiny_model_folder):
    from pneumo.inference import Predictor
    return Predictor.load(tiny_model_folder)


@pytest.fixture()
def app(tmp_path, tiny_predictor):
    from app import create_app
    return create_app({"TESTING": True, "SECRET_KEY": "test", "DATA_DIR": str(tmp_path / "data"),
                       "PREDICTOR": tiny_predictor, "MAX_FILES": 5})


@pytest.fixture()
def client(app):
    return app.test_client()
