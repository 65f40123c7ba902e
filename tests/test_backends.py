"""Every Keras backend gives the same answers, on the device PNEUMO_DEVICE asks for:
weights trained under torch load under TensorFlow; the bundled model gives equal
probabilities under TensorFlow, torch and (when installed) JAX on real SIIM
DICOMs; the app serves under torch and JAX and says so in /readyz."""

import importlib.util
import json
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from conftest import ROOT

PREDICT_RUN = ROOT / "scripts" / "device" / "predict_run.py"
HAS_JAX = importlib.util.find_spec("jax") is not None
OTHER_BACKENDS = [
    "torch",
    pytest.param(
        "jax",
        marks=pytest.mark.skipif(
            not HAS_JAX, reason="JAX is not installed (requirements-dev.txt installs it)"
        ),
    ),
]

TRAIN_UNDER_TORCH = r"""
import json, sys
import numpy as np, keras
from pneumo.nets import losses
from pneumo.nets.networks import build_model
arch = json.loads(sys.argv[1])
keras.utils.set_random_seed(0)
model = build_model(arch)
model.compile(optimizer="adam", loss=[losses.bce_dice] * 2)
rng = np.random.default_rng(0)
x = rng.random((4, 32, 32, 1)).astype("float32")
y = (x > 0.7).astype("float32")
model.fit(x, (y, y), epochs=2, batch_size=2, verbose=0)
model.save_weights(sys.argv[2])
np.save(sys.argv[3], np.asarray(model.predict(x, verbose=0)[1]))
np.save(sys.argv[4], x)
print(keras.config.backend())
"""


@pytest.mark.slow  # trains under torch in a subprocess
def test_torch_trained_weights_load_under_tensorflow(tmp_path):
    arch = {
        "name": "double_unet",
        "args": {"input_size": 32, "depth": 2, "width": 0.125, "channels": 1},
    }
    w, out, inp = tmp_path / "w.weights.h5", tmp_path / "out.npy", tmp_path / "x.npy"
    env = dict(os.environ, KERAS_BACKEND="torch")
    res = subprocess.run(
        [sys.executable, "-c", TRAIN_UNDER_TORCH, json.dumps(arch), str(w), str(out), str(inp)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("torch")
    import keras
    from pneumo.nets.networks import build_model

    assert keras.config.backend() == "tensorflow"
    model = build_model(arch)
    model.load_weights(w)
    ours = np.asarray(model.predict(np.load(inp), verbose=0)[1])
    np.testing.assert_allclose(ours, np.load(out), atol=1e-4)


def predict_under(backend: str, files, tmp_path, device: str = "cpu") -> tuple[dict, np.ndarray]:
    """The bundled model's report and maps for ``files`` under ``backend`` (own process)."""
    out, maps = tmp_path / f"{backend}.json", tmp_path / f"{backend}.npz"
    res = subprocess.run(
        [
            sys.executable,
            str(PREDICT_RUN),
            *map(str, files),
            "--device",
            device,
            "--out",
            str(out),
            "--maps",
            str(maps),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, KERAS_BACKEND=backend),
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return json.loads(out.read_text()), np.load(maps)["maps"]


@pytest.fixture(scope="module")
def siim_sample(siim_dicoms, positive_dicom):
    """Four real SIIM DICOMs, a pneumothorax among them."""
    return [positive_dicom] + [p for p in siim_dicoms if p.name != positive_dicom.name][:3]


@pytest.fixture(scope="module")
def tensorflow_outputs(siim_sample, tmp_path_factory):
    return predict_under("tensorflow", siim_sample, tmp_path_factory.mktemp("tf"))


@pytest.mark.slow
@pytest.mark.bundled
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_bundled_model_gives_equal_probabilities_under_each_backend(
    backend, siim_sample, tensorflow_outputs, tmp_path
):
    """PNEUMO_DEVICE=cpu: the bundled model on real SIIM DICOMs, its weights on the
    CPU, probabilities and maps equal to TensorFlow's within 1e-4."""
    from pneumo.inference.predictor import DEFAULT_MODEL_DIR

    ref, ref_maps = tensorflow_outputs
    ours, maps = predict_under(backend, siim_sample, tmp_path)
    assert ref["device"] == "CPU (tensorflow)" and ours["device"] == f"CPU ({backend})"
    assert ours["backend"] == backend and "cpu" in ours["weights_device"].lower()
    assert ours["model_dir"] == str(DEFAULT_MODEL_DIR.resolve()) == ref["model_dir"]
    assert [f["image_id"] for f in ours["files"]] == [f["image_id"] for f in ref["files"]]
    assert len(ours["files"]) == len(siim_sample)
    np.testing.assert_allclose(
        [f["probability"] for f in ours["files"]],
        [f["probability"] for f in ref["files"]],
        atol=1e-4,
    )
    np.testing.assert_allclose(maps, ref_maps, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_app_serves_under_the_backend_on_the_device_asked_for(backend, tmp_path, tiny_model_folder):
    """gunicorn with KERAS_BACKEND and PNEUMO_DEVICE=cpu: /readyz names both, the log
    says where the weights went."""
    from helpers.localserver import LocalServer

    log = tmp_path / "gunicorn.log"
    server = LocalServer(
        tiny_model_folder,
        tmp_path / "instance",
        log_path=log,
        env={"KERAS_BACKEND": backend, "PNEUMO_DEVICE": "cpu", "PNEUMO_TF_THREADS": "1"},
    )
    try:
        with urllib.request.urlopen(server.url + "/readyz", timeout=10) as resp:
            ready = json.loads(resp.read())
    finally:
        server.stop()
    threads = " (torch, 1 thread)" if backend == "torch" else " (jax)"
    assert ready["backend"] == backend and ready["device"] == "CPU" + threads, ready
    text = log.read_text()
    assert f"on CPU{threads} (weights on cpu" in text, text[-3000:]
    assert "Traceback" not in text


def test_the_app_leaves_keras_unstarted_until_the_device_is_chosen():
    """PNEUMO_DEVICE=cpu under torch and JAX's lazy GPU memory hold only when
    configure_device runs before Keras is imported: the app's modules must not import it."""
    code = (
        "import sys, app, app.api, app.model, app.views, pneumo.inference.predictor, "
        "pneumo.inference.runtime; "
        "print(sorted({'keras', 'tensorflow', 'jax', 'torch'} & set(sys.modules)))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr[-2000:]


def test_device_choice_is_checked_and_a_missing_gpu_is_an_error():
    from app.settings import Settings, SettingsError
    from pneumo.inference.device import DeviceError, configure_device, has_gpu

    assert Settings.from_env({}).device == "auto"
    assert Settings.from_env({"PNEUMO_DEVICE": "CPU"}).device == "cpu"
    with pytest.raises(SettingsError, match="PNEUMO_DEVICE must be one of auto, cpu, gpu"):
        Settings.from_env({"PNEUMO_DEVICE": "cuda"})
    with pytest.raises(ValueError, match="PNEUMO_DEVICE"):
        configure_device(device="tpu")
    placement = configure_device(device="cpu")  # TensorFlow here, already started
    assert str(placement) == "CPU (tensorflow)" and not has_gpu()
    assert str(configure_device(device="auto")).startswith(("CPU (tensorflow)", "GPU 0: "))
    if not has_gpu():
        with pytest.raises(
            DeviceError, match="PNEUMO_DEVICE=gpu, but the tensorflow backend sees no GPU"
        ):
            configure_device(device="gpu")


def test_placement_words():
    from pneumo.inference.device import Placement

    assert (
        str(Placement("jax", "gpu", 0, "NVIDIA H100 80GB HBM3"))
        == "GPU 0: NVIDIA H100 80GB HBM3 (jax)"
    )
    assert str(Placement("tensorflow", "cpu", threads=2)) == "CPU (tensorflow, 2 threads)"
    assert str(Placement("torch", "cpu", threads=1)) == "CPU (torch, 1 thread)"
    assert str(Placement("torch", "cpu")) == "CPU (torch)"
