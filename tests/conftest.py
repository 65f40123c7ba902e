"""Shared fixtures: paths to the real data beside the checkout, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite sends the same real films again and again as new studies (apps, servers and
# commands it starts inherit this); linking a repeated upload to its first result, the
# product's default, is tested where a test asks for it (tests/test_worklist_filters.py).
os.environ.setdefault("PNEUMO_DUPLICATES", "keep")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
SIIM = SHARED / "siim"
RLE_CSV = (
    SIIM / "torchxrayvision-1.5.7-wheel/torchxrayvision/data/siim-pneumothorax-train-rle.csv.gz"
)


def _buffered_test_clients() -> None:
    """Test clients read every response to the end and close it, so a test that does
    not read a file download leaves no open file (warnings are errors here)."""
    from flask import Flask
    from flask.testing import FlaskClient

    class BufferedClient(FlaskClient):
        def open(self, *args, **kwargs):
            kwargs.setdefault("buffered", True)
            return super().open(*args, **kwargs)

    Flask.test_client_class = BufferedClient


_buffered_test_clients()


def pytest_collection_modifyitems(config, items):
    if not SIIM.exists():
        raise pytest.UsageError(f"The shared data folder is missing: {SIIM}")


@pytest.fixture(scope="session")
def rle_table():
    from pneumo.io import rle

    return rle.read_rle_csv(RLE_CSV)


@pytest.fixture(scope="session")
def siim_dicoms():
    return sorted(SIIM.rglob("*.dcm"))


@pytest.fixture(scope="session")
def positive_dicom(rle_table, siim_dicoms):
    """A real labelled SIIM DICOM with a pneumothorax."""
    from pneumo.data.dataset import dicom_image_id
    from pneumo.io.rle import is_positive

    for path in siim_dicoms:
        uid = dicom_image_id(path)
        if uid in rle_table and is_positive(rle_table[uid]):
            return path
    raise AssertionError("no positive labelled DICOM in shared data")


def write_untrained_model(
    folder: Path, arch: dict, preprocess: dict, seed: int = 1, calibration: dict | None = None
) -> Path:
    """An untrained model folder with a v2 card (low thresholds: its random output
    produces a mask). ``calibration``: a Platt calibration for the card, else a score."""
    import keras
    from pneumo.inference.calibration import Calibrator
    from pneumo.inference.card import ModelCard
    from pneumo.inference.postprocess import OperatingPoint, PostProcess
    from pneumo.inference.preprocess import PreprocessConfig
    from pneumo.nets.networks import build_model

    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    build_model(arch).save_weights(folder / "weights.weights.h5")
    size = preprocess["size"]
    card = ModelCard(
        name=folder.name,
        version="test",
        architecture=arch,
        preprocess=PreprocessConfig.from_dict(preprocess),
        postprocess=PostProcess(
            pixel_threshold=0.3, min_area=0, evidence_pixels=4, reference_size=size
        ),
        operating_points={
            "balanced": OperatingPoint("balanced", 0.3, 0.8, 0.7, "test"),
            "triage": OperatingPoint("triage", 0.2, 0.9, 0.5, "test"),
        },
        calibration=Calibrator.from_dict(calibration) if calibration else None,
    )
    card.write(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory):
    """An untrained 64x64 Double-UNet folder with a card, made in seconds."""
    arch = {
        "name": "double_unet",
        "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1},
    }
    return write_untrained_model(
        tmp_path_factory.mktemp("models") / "tiny_untrained", arch, {"size": 64, "channels": 1}
    )


@pytest.fixture(scope="session")
def tiny_predictor(tiny_model_folder):
    from pneumo.inference.predictor import Predictor

    return Predictor.load(tiny_model_folder)


@pytest.fixture()
def app(tmp_path, tiny_predictor):
    from app import create_app

    return create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "DATA_DIR": str(tmp_path / "data"),
            "PREDICTOR": tiny_predictor,
            "MAX_FILES": 5,
        }
    )


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL cluster (Debian's postgresql) on a free loopback port for the
    whole session; each test takes a fresh database from it (``postgres.new_database()``)."""
    from helpers import pgserver

    if not pgserver.available():
        pytest.fail(
            "PostgreSQL is not installed: bash scripts/setup.sh dev installs "
            "Debian's postgresql (initdb, pg_ctl)"
        )
    server = pgserver.PostgresServer().start()
    yield server
    server.close()
