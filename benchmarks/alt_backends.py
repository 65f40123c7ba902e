#!/usr/bin/env python3
"""Optional inference backends against TensorFlow, for the bundled model.

    .venv/bin/pip install openvino          # optional, not in requirements.txt
    .venv/bin/python benchmarks/alt_backends.py [--repeats 15] [--out FILE]

Exports the bundled Keras model as a TensorFlow SavedModel, converts it with
OpenVINO's converter, checks that both give the same probabilities on real
validation images (largest absolute difference, the issue's bound is 1e-4)
and times a forward pass at batch 1 and 4 (median and range) against
TensorFlow through Keras' compiled predict function, the path the app uses.
Writes ``benchmarks/results/alt_backends.json``. A backend that is not
installed is reported as such, not silently skipped.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from run import timed, write_report  # noqa: E402  (benchmarks/run.py, beside this script)

BUNDLED = ROOT / "models" / "double_unet_siim_256"


def validation_inputs(pcfg, n: int = 8) -> np.ndarray:
    """``n`` real validation images as the network sees them (the one model-input path)."""
    from pneumo.preprocess import model_input
    from pneumo.training import TrainConfig, load_example, split_samples
    data = split_samples(TrainConfig(data=str(ROOT / "configs" / "data_siim_v2.json")))
    images = np.stack([load_example(s, data.table, pcfg.size)[0]
                       for s in data.samples["val"][:n]])
    return model_input(images, pcfg)


def openvino_row(ov, saved: Path, size: int, precision: str, x8: np.ndarray,
                 reference: np.ndarray, tf_row: dict, repeats: int) -> dict:
    core = ov.Core()
    row = {"version": ov.__version__, "inference_precision": precision}
    for batch in (1, 4, 8):
        converted = ov.convert_model(str(saved), input=[batch, size, size, x8.shape[-1]])
        compiled = core.compile_model(converted, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                         "INFERENCE_PRECISION_HINT": precision})
        port = compiled.outputs[len(compiled.outputs) - 1]  # the second U-Net's mask

        def run(xb, compiled=compiled, port=port):
            return compiled(xb)[port]
        if batch == 8:
            probs = np.asarray(run(x8), np.float32)[..., 0]
        else:
            row[f"batch{batch}_s"] = timed(lambda xb=x8[:batch], run=run: run(xb), repeats)
    row["max_abs_diff_vs_tensorflow"] = float(np.abs(probs - reference).max())
    row["within_1e-4"] = row["max_abs_diff_vs_tensorflow"] <= 1e-4
    for batch in (1, 4):
        row[f"speed_up_batch{batch}"] = (tf_row[f"batch{batch}_s"]["median"]
                                         / row[f"batch{batch}_s"]["median"])
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(BUNDLED))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "alt_backends.json"))
    args = p.parse_args()

    from pneumo.inference import Predictor, _predict_once
    predictor = Predictor.load(args.model)
    size = predictor.pcfg.size
    model = predictor.model
    x8 = validation_inputs(predictor.pcfg)

    def _predict_batch(m, x):
        return _predict_once(m, x)[0]
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": predictor.name,
              "input_size": size, "cores": os.cpu_count(), "backends": {}}
    reference = _predict_batch(model, x8)
    tf_row = {}
    for batch in (1, 4):
        xb = x8[:batch]
        tf_row[f"batch{batch}_s"] = timed(lambda: _predict_batch(model, xb), args.repeats)
    report["backends"]["tensorflow"] = tf_row

    try:
        import openvino as ov
    except ImportError:
        report["backends"]["openvino"] = {"status": "not installed (pip install openvino)"}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            saved = Path(tmp) / "saved_model"
            model.export(str(saved), format="tf_saved_model", verbose=False)
            # fp32 is the like-for-like comparison; this CPU also has AVX512_BF16, which
            # OpenVINO picks by default (faster, but no longer identical within 1e-4)
            for precision in ("f32", "bf16"):
                report["backends"][f"openvino_{precision}"] = openvino_row(
                    ov, saved, size, precision, x8, reference, tf_row, args.repeats)
    try:
        import onnxruntime  # noqa: F401
        report["backends"]["onnxruntime"] = {
            "status": "installed, not measured: exporting this Keras 3 model to ONNX needs "
                      "tf2onnx (or the torch backend), which this project does not install"}
    except ImportError:
        report["backends"]["onnxruntime"] = {"status": "not installed"}

    write_report(report, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
