"""The runtime seam: Keras and OpenVINO run the same weights to the same answer."""

import numpy as np
import pytest

from conftest import write_untrained_model


@pytest.mark.slow
def test_openvino_agrees_with_keras(tmp_path, positive_dicom):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    from pneumo.inference.predictor import Predictor
    from pneumo.inference.preprocess import resize_image
    from pneumo.io.imaging import read_image

    arch = {
        "name": "double_unet",
        "args": {
            "input_size": 64,
            "depth": 5,
            "width": 0.125,
            "channels": 3,
            "encoder": "efficientnet_lite0",
            "image_head": True,
            "output_stride": 2,
        },
    }
    folder = write_untrained_model(
        tmp_path / "m", arch, {"size": 64, "channels": 3, "normalisation": "efficientnet_lite"}
    )
    keras_p = Predictor.load(folder)
    ov_p = Predictor.load(folder, runtime="openvino")
    assert keras_p.runtime.name.startswith("keras") and ov_p.runtime.name.startswith("openvino")
    pixels = read_image(str(positive_dicom)).pixels
    rng = np.random.default_rng(0)
    batch = np.stack(
        [resize_image(pixels, 64)]
        + [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(4)]
    )
    a, b = keras_p.output(batch), ov_p.output(batch)  # batch of 5: a dynamic batch size
    np.testing.assert_allclose(b.maps, a.maps, atol=1e-4)
    np.testing.assert_allclose(b.head, a.head, atol=1e-4)
    one_a = keras_p.predict(read_image(str(positive_dicom)))
    one_b = ov_p.predict(read_image(str(positive_dicom)))
    assert one_a.probability == pytest.approx(one_b.probability, abs=1e-4)
    assert one_a.positive == one_b.positive


def test_runtime_is_chosen_by_name(tmp_path):
    from app.settings import Settings, SettingsError
    from pneumo.errors import ModelLoadError
    from pneumo.inference import runtime
    from pneumo.inference.predictor import Predictor

    assert Settings.from_env({"PNEUMO_RUNTIME": "OpenVINO"}).runtime == "openvino"
    with pytest.raises(SettingsError, match="PNEUMO_RUNTIME must be one of keras, openvino"):
        Settings.from_env({"PNEUMO_RUNTIME": "onnx"})
    with pytest.raises(ValueError, match="unknown runtime"):
        runtime.load("onnx", object())
    arch = {
        "name": "double_unet",
        "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1},
    }
    folder = write_untrained_model(tmp_path / "m", arch, {"size": 64, "channels": 1})
    with pytest.raises(ModelLoadError, match="unknown runtime"):
        Predictor.load(folder, runtime="onnx", warm_up=False)


def test_a_card_that_calibrates_a_missing_head_is_refused(tmp_path):
    from pneumo.errors import ModelLoadError
    from pneumo.inference.predictor import Predictor

    arch = {
        "name": "double_unet",
        "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1},
    }
    folder = write_untrained_model(
        tmp_path / "m",
        arch,
        {"size": 64, "channels": 1},
        calibration={"features": ["head"], "coef": [1.0], "intercept": 0.0},
    )
    with pytest.raises(ModelLoadError, match="no image head"):
        Predictor.load(folder, warm_up=False)
