"""Training, evaluation and prediction end to end on a tiny configuration."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from pneumo.io import rle
from pneumo.training.augment import augment_pair
from pneumo.training.config import Augment
from pneumo.training.data import balanced_indices
from conftest import ROOT, SIIM


def read_rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    cache = tmp_path_factory.mktemp("cache")
    cfg = json.loads((ROOT / "configs/train_tiny.json").read_text())
    cfg["cache_dir"] = str(cache)
    cfg["data"] = str(ROOT / "configs/data_siim_v2.json")
    cfg_path = out.parent / "tiny.json"
    cfg_path.write_text(json.dumps(cfg))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo.cli",
            "train",
            "--config",
            str(cfg_path),
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.mark.slow
def test_train_writes_model_folder(tiny_model_dir):
    for name in (
        "weights.weights.h5",
        "last.weights.h5",
        "model.json",
        "log.csv",
        "curves.png",
        "state.json",
        "README.md",
    ):
        assert (tiny_model_dir / name).exists(), name
    card = json.loads((tiny_model_dir / "model.json").read_text())
    assert card["architecture"]["name"] == "double_unet"
    assert card["preprocess"]["size"] == 64
    assert set(card["postprocess"]) >= {"pixel_threshold", "min_area", "evidence_pixels"}
    assert set(card["operating_points"]) == {"triage", "balanced"}
    assert (
        card["calibration"]["fitted_on"] == "tune" and card["default_operating_point"] == "balanced"
    )
    assert card["data"]["train_images"] == 24 and card["data"]["val_images"] == 12
    assert card["data"]["tune_images"] == 12
    assert card["architecture"]["args"]["image_head"] is True
    # the triage point keeps at least 90 % sensitivity on the split it was chosen on
    assert card["operating_points"]["triage"]["sensitivity"] >= 0.9
    assert card["tune"]["operating_points"]["triage"]["sensitivity"] >= 0.9
    assert card["config"]["seed"] == 2026
    assert 0.0 <= card["validation"]["siim_score"] <= 1.0
    rows = read_rows(tiny_model_dir / "log.csv")
    assert len(rows) == 2 and "tune_auc" in rows[0] and "tune_key" in rows[0]


@pytest.mark.slow
def test_finalize_packages_a_run(tiny_model_dir, tmp_path):
    cfg = json.loads((ROOT / "configs/train_tiny.json").read_text())
    cfg.update(cache_dir=str(tmp_path / "cache"), data=str(ROOT / "configs/data_siim_v2.json"))
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    out = tmp_path / "packaged"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo.cli",
            "finalize",
            "--config",
            str(tmp_path / "c.json"),
            "--run",
            str(tiny_model_dir),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    card = json.loads((out / "model.json").read_text())
    assert card["parameters"] > 0 and card["training"]["epochs_run"] == 2
    readme = (out / "README.md").read_text()
    assert "not a diagnosis" in readme and "SIIM score at 22 % prevalence" in readme
    assert "expected calibration error" in readme and (out / "reliability.png").exists()
    from pneumo.inference.predictor import Predictor

    assert Predictor.load(out).pcfg.size == 64


@pytest.mark.slow
def test_resume_continues_from_checkpoint(tiny_model_dir, tmp_path):
    import shutil

    work = tmp_path / "resumed"
    shutil.copytree(tiny_model_dir, work)
    cfg = json.loads((ROOT / "configs/train_tiny.json").read_text())
    cfg.update(
        epochs=3, cache_dir=str(tmp_path / "cache"), data=str(ROOT / "configs/data_siim_v2.json")
    )
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo.cli",
            "train",
            "--config",
            str(tmp_path / "c.json"),
            "--out",
            str(work),
            "--resume",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_rows(work / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # one more epoch appended
    assert json.loads((work / "state.json").read_text())["epoch"] == 3


@pytest.mark.slow
def test_init_weights_warm_start(tiny_model_dir, tmp_path):
    """A second stage starts from a run's weights with a fresh schedule."""
    import keras
    from pneumo.nets.networks import build_model
    from pneumo.training.packaging import load_init_weights

    arch = json.loads((ROOT / "configs/train_tiny.json").read_text())["architecture"]
    keras.utils.set_random_seed(7)
    model = build_model(arch)
    fresh = [w.copy() for w in model.get_weights()]
    load_init_weights(model, tiny_model_dir / "last.weights.h5")
    reference = build_model(arch)
    reference.load_weights(tiny_model_dir / "last.weights.h5")
    loaded = model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(fresh, loaded))
    assert all(np.array_equal(a, b) for a, b in zip(reference.get_weights(), loaded))
    with pytest.raises(ValueError, match="does not exist"):
        load_init_weights(model, tmp_path / "missing.weights.h5")
    other = dict(arch, args=dict(arch["args"], width=0.25))
    with pytest.raises(ValueError, match="does not fit this architecture"):
        load_init_weights(build_model(other), tiny_model_dir / "last.weights.h5")
    # through the CLI: the card records where the run started from
    cfg = json.loads((ROOT / "configs/train_tiny.json").read_text())
    cfg.update(
        epochs=1, cache_dir=str(tmp_path / "cache"), data=str(ROOT / "configs/data_siim_v2.json")
    )
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    out = tmp_path / "stage2"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo.cli",
            "train",
            "--config",
            str(tmp_path / "c.json"),
            "--out",
            str(out),
            "--quiet",
            "--init-weights",
            str(tiny_model_dir / "last.weights.h5"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    card = json.loads((out / "model.json").read_text())
    assert card["config"]["init_weights"] == str(tiny_model_dir / "last.weights.h5")
    assert "warm start: began from" in (out / "README.md").read_text()


@pytest.mark.slow
def test_evaluate_and_predict(tiny_model_dir, tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo.cli",
            "evaluate",
            "--model",
            str(tiny_model_dir),
            "--limit",
            "10",
            "--out",
            str(tmp_path / "ev"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    scores = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert scores["n_images"] == 10
    for name in ("per_image.csv", "roc.png", "dice_hist.png", "worst_cases.png"):
        assert (tmp_path / "ev" / name).exists()
    sub, sc = tmp_path / "sub.csv", tmp_path / "scores.csv"
    folder = SIIM / "kaggle_sample_OleguerCanal"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo.cli",
            "predict",
            str(folder),
            "--model",
            str(tiny_model_dir),
            "--submission",
            str(sub),
            "--scores",
            str(sc),
            "--overlays",
            str(tmp_path / "ov"),
            "--tta",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_rows(sub)
    assert len(rows) == 7
    for row in rows:
        assert row["ImageId"].startswith("1.2.276.0.7230010")
        assert rle.decode(row["EncodedPixels"]).shape == (1024, 1024)
    scores = read_rows(sc)
    assert [r["ImageId"] for r in scores] == [r["ImageId"] for r in rows]
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in scores)
    assert len(list((tmp_path / "ov").glob("*.png"))) == 7


def test_augment_moves_image_and_mask_together():
    x = np.zeros((64, 64), np.uint8)
    y = np.zeros((64, 64), np.uint8)
    x[10:20, 5:15] = 255
    y[10:20, 5:15] = 1
    aug = Augment(hflip=1.0, rotate_deg=0, scale=0, shift=0, brightness=0, contrast=0, gamma=0)
    ax, ay = augment_pair(x, y, aug, np.random.default_rng(0))
    assert ay[10:20, 49:59].all() and ax[10:20, 49:59].min() > 0.99
    aug = Augment(grid_distort=0.2)
    ax, ay = augment_pair(x, y, aug, np.random.default_rng(1))
    assert ax.shape == (64, 64) and set(np.unique(ay)) <= {0.0, 1.0}
    assert ((ax > 0.5) == (ay > 0.5)).mean() > 0.95


def test_balanced_sampling_ratio():
    labels = np.array([True] * 10 + [False] * 90)
    idx = balanced_indices(labels, 1000, 0.6, np.random.default_rng(0))
    assert labels[idx].mean() == pytest.approx(0.6, abs=0.01)


@pytest.mark.slow
def test_unet_trains_through_the_same_pipeline(tmp_path):
    cfg = json.loads((ROOT / "configs/train_unet_256.json").read_text())
    cfg.update(
        architecture={
            "name": "unet",
            "args": {"input_size": 64, "depth": 3, "base_filters": 4, "channels": 1},
        },
        preprocess={"size": 64, "channels": 1},
        epochs=1,
        steps_per_epoch=2,
        max_train=16,
        max_val=8,
        tta=False,
        cache_dir=str(tmp_path / "cache"),
        data=str(ROOT / "configs/data_siim.json"),
    )
    (tmp_path / "u.json").write_text(json.dumps(cfg))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo.cli",
            "train",
            "--config",
            str(tmp_path / "u.json"),
            "--out",
            str(tmp_path / "unet"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    card = json.loads((tmp_path / "unet/model.json").read_text())
    assert card["architecture"]["name"] == "unet" and card["data"]["val_images"] == 8
    # split_v1 has no tune split: the card says that validation was used for tuning
    assert card["calibration"]["fitted_on"] == "val" and card["data"]["tune_images"] == 0


@pytest.mark.slow
def test_stats_command(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo.cli",
            "stats",
            "--split",
            "all",
            "--images",
            str(SIIM / "jayantc79"),
            str(SIIM / "kaggle_sample_OleguerCanal"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["images"] == 31 and out["positive"] == 9 and out["negative"] == 22
    assert sum(out["dicom_view_position"].values()) == 31
    assert set(out["dicom_sex"]) <= {"M", "F", "?"} and out["dicom_age"]["n"] > 0
    assert out["mask_area_px_1024"]["n"] == 9
    assert (tmp_path / "mask_area.png").exists() and (tmp_path / "view_position.png").exists()


def test_train_config_rejects_unknown_keys(tmp_path):
    from pneumo.training.config import TrainConfig

    (tmp_path / "bad.json").write_text(json.dumps({"epochz": 3}))
    with pytest.raises(ValueError, match="epochz"):
        TrainConfig.load(tmp_path / "bad.json")


def test_source_balance_lifts_rare_groups():
    labels = np.array([True] * 100 + [False] * 100)
    source = np.array(["siim"] * 95 + ["nih"] * 5 + ["siim"] * 10 + ["nih"] * 90)
    rng = np.random.default_rng(0)
    plain = balanced_indices(labels, 20000, 0.5, rng)
    assert (source[plain][labels[plain]] == "nih").mean() == pytest.approx(0.05, abs=0.01)
    even = balanced_indices(labels, 20000, 0.5, rng, source, 1.0)
    pos = even[labels[even]]
    assert (source[pos] == "nih").mean() == pytest.approx(0.5, abs=0.02)
    assert (source[even[~labels[even]]] == "siim").mean() == pytest.approx(0.5, abs=0.02)
    assert labels[even].mean() == pytest.approx(0.5, abs=0.01)


def test_predict_exits_non_zero_when_files_are_left_out(
    tmp_path, tiny_model_folder, positive_dicom, capsys
):
    """`pneumo predict` says which files it left out, after the bar, and exits 1 unless
    --keep-going; the readable chest film still reaches the submission."""
    import shutil
    from pydicom.data import get_testdata_file
    from pneumo.cli import main

    shutil.copy(positive_dicom, tmp_path / "chest.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "mr.dcm")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    args = [
        "predict",
        str(tmp_path),
        "--model",
        str(tiny_model_folder),
        "--device",
        "cpu",
        "--submission",
        str(tmp_path / "sub.csv"),
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "skipped mr.dcm: Not analysed: not a frontal chest X-ray" in err
    assert "skipped broken.png:" in err and "2 file(s) left out" in err
    assert len(read_rows(tmp_path / "sub.csv")) == 1
    assert main(args + ["--keep-going"]) == 0
