import numpy as np
import pytest

from pneumo.inference.laterality import patient_side
from pneumo.io.imaging import DisplayMetadata


def meta(**kw):
    return DisplayMetadata(format="DICOM", rows=8, columns=8, **kw)


LEFT_HALF = np.zeros((8, 8), bool)
LEFT_HALF[2:5, 0:3] = True
RIGHT_HALF = LEFT_HALF[:, ::-1]
BOTH = np.zeros((8, 8), bool)
BOTH[2:4, 1:7] = True


@pytest.mark.parametrize(
    "mask,kw,side,basis",
    [
        (LEFT_HALF, dict(view_position="PA"), "right", "assuming"),
        (RIGHT_HALF, dict(view_position="AP"), "left", "assuming"),
        (LEFT_HALF, dict(patient_orientation=("L", "F")), "right", "Patient Orientation"),
        (LEFT_HALF, dict(patient_orientation=("R", "F")), "left", "Patient Orientation"),
        (BOTH, dict(view_position="PA"), "bilateral", "assuming"),
        (LEFT_HALF, dict(), None, "no orientation"),
    ],
)
def test_side_table(mask, kw, side, basis):
    s = patient_side(mask, meta(**kw))
    assert s.side == side and basis in s.basis
    assert s.label


def test_empty_mask():
    s = patient_side(np.zeros((8, 8), bool), meta(view_position="PA"))
    assert s.side is None and s.label == "no finding"
