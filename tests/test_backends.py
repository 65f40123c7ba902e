"""Weights trained under one Keras backend load under another (torch -> TensorFlow)."""
import json
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT

TRAIN_UNDER_TORCH = r"""
import json, sys
import numpy as np, keras
from pneumo import losses
from pneumo.networks import build_model
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


def test_torch_trained_weights_load_under_tensorflow(tmp_path):
    arch = {"name": "double_unet", "args": {"input_size": 32, "depth": 2, "width": 0.125,
                                            "channels": 1}}
    w, out, inp = tmp_path / "w.weights.h5", tmp_path / "out.npy", tmp_path / "x.npy"
    env = dict(os.environ, KERAS_BACKEND="torch")
    res = subprocess.run([sys.executable, "-c", TRAIN_UNDER_TORCH, json.dumps(arch), str(w),
                          str(out), str(inp)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("torch")
    import keras
    from pneumo.networks import build_model
    assert keras.config.backend() == "tensorflow"
    model = build_model(arch)
    model.load_weights(w)
    ours = np.asarray(model.predict(np.load(inp), verbose=0)[1])
    np.testing.assert_allclose(ours, np.load(out), atol=1e-4)
