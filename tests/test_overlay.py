"""pneumo.inference.overlay: pure renderings with fixed colours."""

import numpy as np
import pytest

from pneumo.inference import overlay


@pytest.fixture()
def xray():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (120, 100), dtype=np.uint8)


def test_filled_blends_only_mask_pixels_with_a_fixed_colour(xray):
    mask = np.zeros(xray.shape, bool)
    mask[10:20, 30:40] = True
    out = overlay.filled(xray, mask, opacity=0.5)
    assert out.shape == (120, 100, 3) and out.dtype == np.uint8
    expected = np.round(0.5 * xray[15, 35] + 0.5 * np.array(overlay.MASK_COLOUR)).astype(np.uint8)
    assert out[15, 35].tolist() == expected.tolist()
    outside = ~mask
    assert (out[outside] == xray[outside][:, None]).all()
    # an empty mask renders the untouched X-ray (no rescaling to the image's own range)
    assert (overlay.filled(xray, np.zeros_like(mask)) == overlay.grey_to_rgb(xray)).all()
    with pytest.raises(ValueError, match="opacity"):
        overlay.filled(xray, mask, opacity=1.5)


def test_contour_is_a_thin_band_on_the_mask_edge(xray):
    mask = np.zeros(xray.shape, bool)
    mask[30:90, 20:80] = True
    flat = np.zeros_like(xray)
    out = overlay.contour(flat, mask, thickness=1)
    drawn = (out != 0).any(axis=2)
    assert drawn.sum() == pytest.approx(2 * (60 + 60) - 4, abs=8)
    assert not drawn[40:80, 30:70].any()  # nothing inside
    assert (out[drawn] == np.array(overlay.CONTOUR_COLOUR)).all()
    assert (overlay.contour(xray, np.zeros_like(mask)) == overlay.grey_to_rgb(xray)).all()


def test_burn_label_marks_only_the_bottom_left_corner():
    rgb = np.full((512, 512, 3), 128, np.uint8)
    out = overlay.burn_label(rgb)
    changed = (out != rgb).any(axis=2)
    rows, cols = np.nonzero(changed)
    assert changed.sum() > 500
    assert rows.min() > 512 * 0.9 and cols.max() < 512 * 0.5
    assert (out[changed] == 0).any() and (out[changed] == 255).any()  # black box, white text
    assert (rgb == 128).all()  # the input is not modified


def test_side_by_side_pads_to_the_taller_image(xray):
    out = overlay.side_by_side(xray, xray[:60], gap=4)
    assert out.shape == (120, 204, 3)
    assert (out[:, 100:104] == 0).all() and (out[60:, 104:] == 0).all()
