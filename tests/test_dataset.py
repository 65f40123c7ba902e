import csv
import subprocess
import sys

import numpy as np

from pneumo import dataset
from pneumo.datacfg import DataConfig
from pneumo.imaging import read_image
from pneumo.preprocess import PreprocessConfig, preprocess, resize_mask, resize_probability
from conftest import ROOT, SIIM


def test_index_counts_and_committed_split(rle_table):
    cfg = DataConfig.load()
    result, samples = cfg.samples(rle_table)
    counts = result.counts()
    assert counts["matched_images"] == 789
    assert counts["positives"] == 733 and counts["negatives"] == 56
    assert counts["unlabelled_images"] == 10  # SIIM stage-2 test DICOMs
    ids = [s.image_id for s in result.samples]
    assert len(ids) == len(set(ids))
    # DICOM copies win over PNG/JPEG copies of the same image
    assert all(s.format == "DICOM" for s in result.samples if s.image_id.endswith("280319"))
    # the committed split is exactly what the deterministic splitter makes
    split = dataset.assign_split(samples, cfg.val_fraction, cfg.split_seed)
    assert dataset.read_split(cfg.split) == split
    # NIH patients never straddle splits
    by_patient = {}
    for s in samples:
        if s.source == "nih":
            by_patient.setdefault(s.group, set()).add(split[s.image_id])
    assert all(len(v) == 1 for v in by_patient.values())


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


def test_training_and_serving_paths_give_identical_arrays(positive_dicom):
    """Training reads files by path; serving reads uploaded bytes. Same input either way."""
    cfg = PreprocessConfig(size=256, channels=3)
    train_x = preprocess(read_image(str(positive_dicom)).pixels, cfg)
    serve_x = preprocess(read_image(positive_dicom.read_bytes()).pixels, cfg)
    assert train_x.shape == (256, 256, 3) and train_x.dtype == np.float32
    assert np.array_equal(train_x, serve_x)
    assert 0.0 <= train_x.min() and train_x.max() <= 1.0
    from pneumo.preprocess import preprocess_uint8
    compact = preprocess_uint8(read_image(positive_dicom.read_bytes()).pixels, cfg)
    assert compact.shape == (256, 256) and compact.dtype == np.uint8
    assert np.array_equal(compact.astype(np.float32) / 255.0, train_x[..., 0])  # lossless


def test_mask_and_probability_resizing():
    mask = np.zeros((1024, 1024), bool)
    mask[:512, :256] = True
    small = resize_mask(mask, 256)
    assert small.shape == (256, 256, 1)
    assert small[:128, :64].min() == 1.0 and small[128:, 64:].max() == 0.0
    back = resize_probability(small[..., 0], (1024, 1024)) > 0.5
    assert (back == mask).mean() > 0.99


def test_cli_inspect_every_siim_file():
    files = [p for p in SIIM.rglob("*") if p.suffix.lower() in (".dcm", ".png", ".jpg")]
    out = subprocess.run([sys.executable, "-m", "pneumo.cli", "inspect", "--strict", str(SIIM)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("SIIM ground truth") == len(files)
    assert "ERROR" not in out.stdout
    assert "1.2.840.10008.1.2.4.50 (JPEG Baseline (Process 1))" in out.stdout
    assert "known (pneumothorax)" in out.stdout and "known (no pneumothorax)" in out.stdout


def test_cli_inspect_reports_bad_file(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x40\x00")
    out = subprocess.run([sys.executable, "-m", "pneumo.cli", "inspect", str(bad)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0
    assert "ERROR CorruptImageError" in out.stdout and "Traceback" not in out.stderr
