import subprocess
import sys

import numpy as np

from pneumo.data import dataset
from pneumo.data.datacfg import DataConfig
from pneumo.io.imaging import read_image
import pytest

from pneumo.inference.postprocess import upsample_probability
from pneumo.inference.preprocess import PreprocessConfig, resize_target_mask
from pneumo.nets.networks import FIRST_MASK_OUTPUT, IMAGE_OUTPUT, MASK_OUTPUT
from conftest import ROOT, SIIM


def test_index_counts_and_committed_splits(rle_table):
    v1 = DataConfig.load(ROOT / "configs" / "data_siim.json")
    result, samples = v1.samples(rle_table)
    counts = result.counts()
    assert counts["matched_images"] == 789
    assert counts["positives"] == 733 and counts["negatives"] == 56
    assert counts["unlabelled_images"] == 10  # SIIM stage-2 test DICOMs
    ids = [s.image_id for s in result.samples]
    assert len(ids) == len(set(ids))
    # DICOM copies win over PNG/JPEG copies of the same image
    assert all(s.format == "DICOM" for s in result.samples if s.image_id.endswith("280319"))
    # the committed splits are exactly what the deterministic splitters make
    split_v1 = v1.make_split(samples)
    assert dataset.read_split(v1.split) == split_v1
    v2 = DataConfig.load()  # the default: split_v2 with its tune split and NIH positives
    _, samples2 = v2.samples(rle_table)
    split_v2 = dataset.read_split(v2.split)
    assert split_v2 == v2.make_split(samples2)
    # validation is split_v1's, unchanged; tune is carved from training only
    assert {k for k, v in split_v2.items() if v == "val"} == {
        k for k, v in split_v1.items() if v == "val"
    }
    assert all(split_v1.get(k, "train") == "train" for k, v in split_v2.items() if v == "tune")
    label_only = [s for s in samples2 if not s.has_mask]
    assert len(label_only) == 40 and all(s.positive and s.source == "nih" for s in label_only)
    # NIH patients never straddle splits
    by_patient = {}
    for s in samples2:
        if s.source == "nih":
            by_patient.setdefault(s.group, set()).add(split_v2[s.image_id])
    assert all(len(v) == 1 for v in by_patient.values())


def test_carve_tune_keeps_validation_and_groups():
    samples = [
        dataset.Sample(f"id{i}", "x", "PNG", positive=i % 3 == 0, group=f"p{i // 2}")
        for i in range(300)
    ]
    base = {s.image_id: ("val" if i % 5 == 0 else "train") for i, s in enumerate(samples)}
    extra = dataset.Sample("new", "x", "PNG", positive=True, group="p0", has_mask=False)
    split = dataset.carve_tune(samples + [extra], base, 0.2, seed=3)
    assert all(split[k] == "val" for k, v in base.items() if v == "val")
    assert split["new"] == "excluded"  # its patient p0 has a validation image (id0)
    tune = [k for k, v in split.items() if v == "tune"]
    assert 0.1 < len(tune) / 240 < 0.3
    groups = {}
    for s in samples:
        if split[s.image_id] != "val":
            groups.setdefault(s.group, set()).add(split[s.image_id])
    assert all(len(v) == 1 for v in groups.values())


def test_split_is_stratified_and_deterministic():
    samples = [dataset.Sample(f"id{i}", "x", "PNG", positive=i % 4 == 0) for i in range(400)]
    a = dataset.assign_split(samples, 0.25, seed=1)
    assert a == dataset.assign_split(list(reversed(samples)), 0.25, seed=1)
    pos_val = sum(1 for s in samples if s.positive and a[s.image_id] == "val")
    neg_val = sum(1 for s in samples if not s.positive and a[s.image_id] == "val")
    assert pos_val == 25 and neg_val == 75
    assert a != dataset.assign_split(samples, 0.25, seed=2)


def test_id_map_reads_both_csv_styles():
    amar = dataset.read_id_map(SIIM / "amarshrma/Deployment/train.csv")
    assert sum(k.endswith(".jpg") for k in amar) >= 700
    ktl = dataset.read_id_map(SIIM / "thermistokles_CS534-Final-Project/stage_1_train_images.csv")
    assert ktl["0_train_0_.png"] == "1.2.276.0.7230010.3.1.4.8323329.5597.1517875188.959090"


class _InputRecorder:
    """Stands in for a Keras model: keeps every batch the Predictor feeds it."""

    output_names = [FIRST_MASK_OUTPUT, MASK_OUTPUT, IMAGE_OUTPUT]

    def __init__(self, model):
        self.model, self.inputs = model, []

    def predict_on_batch(self, x):
        self.inputs.append(np.array(x))
        return self.model.predict_on_batch(x)


def test_training_batch_equals_what_the_predictor_feeds_the_network(
    tmp_path, rle_table, positive_dicom
):
    """The same DICOM through the training sequence (augmentation off) and through the
    server's Predictor (uploaded bytes) reaches the network as identical arrays."""
    from conftest import write_untrained_model
    from pneumo.data.dataset import Sample, dicom_image_id
    from pneumo.inference.predictor import Predictor
    from pneumo.training.config import TrainConfig
    from pneumo.training.data import BalancedBatches, cached_arrays

    arch = {
        "name": "double_unet",
        "args": {
            "input_size": 64,
            "depth": 5,
            "width": 0.125,
            "channels": 3,
            "encoder": "efficientnet_lite0",
            "image_head": True,
        },
    }
    pre = {"size": 64, "channels": 3, "normalisation": "efficientnet_lite"}
    predictor = Predictor.load(write_untrained_model(tmp_path / "m", arch, pre))
    sample = Sample(dicom_image_id(positive_dicom), str(positive_dicom), "DICOM", True)
    arrays = cached_arrays([sample], rle_table, 64, tmp_path / "cache", progress=False)
    cfg = TrainConfig(architecture=arch, preprocess=pre, batch_size=1)
    seq = BalancedBatches(
        arrays, cfg, predictor.pcfg, predictor.model.output_names, augment=None, steps=1
    )
    train_x, targets, weights = seq[0]
    recorder = _InputRecorder(predictor.model)
    predictor.runtime.model = recorder  # the Keras runtime now feeds the recorder
    predictor.predict(read_image(positive_dicom.read_bytes()))
    assert train_x.shape == (1, 64, 64, 3) and train_x.dtype == np.float32
    np.testing.assert_array_equal(recorder.inputs[0], train_x)
    assert -1.0 <= train_x.min() < 0 < train_x.max() <= 1.0  # (255 v - 127) / 128
    assert targets[MASK_OUTPUT].shape == (1, 64, 64, 1) and targets[MASK_OUTPUT].max() == 1.0
    assert targets[IMAGE_OUTPUT].tolist() == [[1.0]]
    assert [w.tolist() for w in weights] == [[1.0]] * 3


def test_model_input_normalisations():
    from pneumo.inference.preprocess import model_input

    img = np.array([[[0, 255], [127, 64]]], np.uint8)
    unit = model_input(img, PreprocessConfig(2, 1, "unit"))
    assert unit.shape == (1, 2, 2, 1) and unit[0, 0, 1, 0] == 1.0
    lite = model_input(img, PreprocessConfig(2, 3, "efficientnet_lite"))
    assert lite.shape == (1, 2, 2, 3) and lite[0, 1, 0].tolist() == [0.0] * 3
    caffe = model_input(img, PreprocessConfig(2, 3, "caffe"))
    assert caffe[0, 0, 0].tolist() == pytest.approx([-103.939, -116.779, -123.68])
    # float input in [0, 1] (after photometric augmentation) means the same as uint8 / 255
    np.testing.assert_allclose(
        model_input(img.astype(np.float32) / 255, PreprocessConfig(2, 3, "efficientnet_lite")), lite
    )
    with pytest.raises(ValueError, match="normalisation"):
        PreprocessConfig(64, 3, "zscore")
    with pytest.raises(ValueError, match=r"\(N, 2, 2\)"):
        model_input(np.zeros((2, 2), np.uint8), PreprocessConfig(2, 1))


def test_mask_and_probability_resizing():
    mask = np.zeros((1024, 1024), bool)
    mask[:512, :256] = True
    small = resize_target_mask(mask, 256)
    assert small.shape == (256, 256) and small.dtype == np.uint8
    assert small[:128, :64].min() == 1 and small[128:, 64:].max() == 0
    back = upsample_probability(small.astype(np.float32), (1024, 1024)) > 0.5
    assert (back == mask).mean() > 0.99


@pytest.mark.slow
def test_cli_inspect_every_siim_file():
    files = [p for p in SIIM.rglob("*") if p.suffix.lower() in (".dcm", ".png", ".jpg")]
    out = subprocess.run(
        [sys.executable, "-m", "pneumo.cli", "inspect", "--strict", str(SIIM)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("SIIM ground truth") == len(files)
    assert "ERROR" not in out.stdout
    assert "1.2.840.10008.1.2.4.50 (JPEG Baseline (Process 1))" in out.stdout
    assert "known (pneumothorax)" in out.stdout and "known (no pneumothorax)" in out.stdout


def test_cli_inspect_reports_bad_file(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x40\x00")
    out = subprocess.run(
        [sys.executable, "-m", "pneumo.cli", "inspect", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 1  # an unreadable file is an honest failure
    assert "ERROR CorruptImageError" in out.stdout and "Traceback" not in out.stderr
    assert "1 of 1 file(s) could not be read" in out.stderr
    kept = subprocess.run(
        [sys.executable, "-m", "pneumo.cli", "inspect", "--keep-going", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert kept.returncode == 0 and "ERROR CorruptImageError" in kept.stdout
