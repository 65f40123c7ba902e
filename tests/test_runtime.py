"""The runtime seam: Keras and OpenVINO run the same weights to the same answer."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_untrained_model


@pytest.mark.slow
def test_openvino_agrees_with_keras(tmp_path, positive_dicom):
    import openvino  # noqa: F401  # a serving dependency: its absence is a failure
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
    with pytest.raises(SettingsError, match="PNEUMO_RUNTIME must be one of auto, keras, openvino"):
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


def test_auto_serves_the_cards_choice_where_it_can_run(monkeypatch):
    from pneumo.inference import runtime

    assert runtime.DEFAULT_RUNTIME == "auto"
    monkeypatch.setattr(runtime, "openvino_installed", lambda: True)
    assert runtime.resolve("auto", "openvino") == "openvino"
    assert runtime.resolve("auto", "openvino", on_gpu=True) == "keras"  # OpenVINO: CPU only
    assert runtime.resolve("auto", None) == "keras"  # a card that chose nothing
    assert runtime.resolve("keras", "openvino") == "keras"  # asked for by name
    assert runtime.resolve("auto", "openvino", backend="jax") == "keras"  # converts TF only
    monkeypatch.setattr(runtime, "openvino_installed", lambda: False)
    assert runtime.resolve("auto", "openvino") == "keras"  # not installed here
    with pytest.raises(ValueError, match="resolve"):
        runtime.load("auto", object())


def in_a_new_process(script: str, args: list, cache) -> dict:
    """Run ``script`` in a new Python with ``args`` and the runtime cache ``cache``; the
    JSON it prints last."""
    run = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, XDG_CACHE_HOME=str(cache)),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_converted_network_is_kept_and_reused(tmp_path, monkeypatch):
    """A card that chose OpenVINO is served by it under ``auto``; the first load converts
    and keeps the network in the cache, the next reads it from there."""
    import openvino as ov
    import json

    from pneumo.inference.predictor import Predictor

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    arch = {
        "name": "double_unet",
        "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1},
    }
    folder = write_untrained_model(tmp_path / "m", arch, {"size": 64, "channels": 1})
    card = json.loads((folder / "model.json").read_text())
    card["serving"] = {"runtime": "openvino"}
    (folder / "model.json").write_text(json.dumps(card))
    first = Predictor.load(folder)
    assert first.runtime.name.startswith("openvino")
    kept = sorted(p.name for p in (tmp_path / "cache" / "pneumo").iterdir())
    assert [k.rsplit(".", 1)[1] for k in kept] == ["bin", "json", "xml"]

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(ov, "convert_model", no_conversion)
    again = Predictor.load(folder)
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    np.testing.assert_allclose(again.output(x).maps, first.output(x).maps, atol=1e-6)
    assert Predictor.load(folder, runtime="keras").runtime.name.startswith("keras")

    # a new process loads the kept network without Keras or TensorFlow, with the same output
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "maps.npy", first.output(x).maps)
    script = f"""
import json, sys
import numpy as np
from pneumo.inference.loading import ModelOptions, load_predictor
p = load_predictor(ModelOptions({str(folder)!r}, device="cpu"))
out = p.output(np.load({str(tmp_path / "x.npy")!r}))
print(json.dumps(dict(
    built=p.model is not None,
    runtime=p.runtime.name,
    keras="keras" in sys.modules,
    tensorflow="tensorflow" in sys.modules,
    diff=float(np.abs(out.maps - np.load({str(tmp_path / "maps.npy")!r})).max()),
)))
"""

    def load_in_a_new_process(cache: str) -> dict:
        return in_a_new_process(script, [], tmp_path / cache)

    kept = load_in_a_new_process("cache")
    assert kept["runtime"].startswith("openvino") and kept["diff"] <= 1e-6
    assert not kept["built"] and not kept["keras"] and not kept["tensorflow"]
    # with the kept network gone, the model is built with Keras (and converted again)
    fresh = load_in_a_new_process("elsewhere")
    assert fresh["runtime"].startswith("openvino") and fresh["diff"] <= 1e-6
    assert fresh["built"] and fresh["keras"]


@pytest.mark.bundled
def test_the_served_runtime_keeps_the_keras_verdicts():
    """The accuracy guard of the runtime the bundled model is served by (issue 36): on
    validation films, the same verdict as Keras at every operating point, probabilities
    within 1e-3 and masks within 1e-3 (benchmarks/runtime_choice.py measures the whole
    split: AUC, Dice and verdicts)."""
    from conftest import ROOT

    from pneumo.data import dataset
    from pneumo.data.datacfg import DataConfig
    from pneumo.data.examples import decode_examples
    from pneumo.inference.predictor import Predictor, image_probability

    served = Predictor.load()
    reference = Predictor.load(runtime="keras")
    assert served.card.serving["runtime"] in served.runtime.name
    dcfg = DataConfig.load(ROOT / "configs" / "data_siim_v2.json")
    table = dcfg.table()
    _, samples = dcfg.samples(table)
    split = dataset.read_split(dcfg.split)
    val = [s for s in samples if split.get(s.image_id) == "val"]
    chosen = val[::17]  # both sources, both classes
    assert {s.source for s in chosen} == {"nih", "siim"}
    arrays = decode_examples(chosen, table, served.pcfg, None)
    a, b = reference.output(arrays.x), served.output(arrays.x)
    pa, pb = image_probability(reference.card, a), image_probability(served.card, b)
    np.testing.assert_allclose(pb, pa, atol=1e-3)
    np.testing.assert_allclose(b.maps, a.maps, atol=1e-3)
    for point in served.card.operating_points.values():
        assert ((pa >= point.threshold) == (pb >= point.threshold)).all(), point.name


SLIM_APP = """
import io, json, sys, time
for name in ("keras", "tensorflow", "jax", "torch"):
    sys.modules[name] = None  # as in the slim image: none of them can be imported
from app import create_app
model, data_dir, film = sys.argv[1:4]
app = create_app({"TESTING": True, "SECRET_KEY": "k" * 32, "DATA_DIR": data_dir,
                  "MODEL_DIR": model, "RUNTIME": "openvino"})
client = app.test_client()
for _ in range(600):
    ready = client.get("/readyz")
    if ready.status_code != 503 or ready.get_json().get("status") == "failed":
        break
    time.sleep(0.1)
with open(film, "rb") as fh:
    upload = client.post("/api/v1/predictions", data={"file": (io.BytesIO(fh.read()), "x.dcm")})
print(json.dumps({"ready": [ready.status_code, ready.get_json()],
                  "upload": [upload.status_code, upload.get_json()]}))
"""


@pytest.mark.slow
def test_the_app_serves_a_kept_network_without_keras(tmp_path, tiny_model_folder, positive_dicom):
    """The slim image's Python path: with Keras, TensorFlow, JAX and torch unimportable, the
    app serves a model whose OpenVINO network is kept, and says why it cannot serve one
    whose network is not."""
    from pneumo.inference.loading import ModelOptions, load_predictor

    def slim_app(cache: str) -> dict:
        args = [tiny_model_folder, tmp_path / cache, positive_dicom]
        return in_a_new_process(SLIM_APP, args, tmp_path / cache)

    missing = slim_app("empty")
    assert missing["ready"][0] == 503
    assert "Keras is not installed here" in missing["ready"][1]["error"]
    assert missing["upload"][0] == 503

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path / "kept"))
        load_predictor(ModelOptions(tiny_model_folder, runtime="openvino", warm_up=False))
    served = slim_app("kept")
    assert served["ready"][0] == 200, served
    assert served["ready"][1]["device"].startswith("CPU (openvino")
    assert served["upload"][0] == 201, served["upload"]
    assert served["upload"][1]["results"][0]["probability"] is not None
