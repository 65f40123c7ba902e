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
