"""The packed training set for a GPU machine (issue 32, item 6): `pneumo pack` stores a
config's train and tune films small enough to travel, `pneumo train --packed` trains from
it (checkpoints only), and `pneumo finalize` makes the candidate's folder on the real files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def _cli(*args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "pneumo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packed")
    cfg = json.loads((ROOT / "configs/train_tiny.json").read_text())
    cfg.update(
        cache_dir=str(tmp / "cache"),
        data=str(ROOT / "configs/data_siim_v2.json"),
        # the canonical path of the shipped model, at a tiny input size
        preprocess={"size": 64, "channels": 1, "jpeg_quality": 75, "working_size": 512},
        augment={"jpeg": 0.5, "resample": 0.3},
        tune_encodings=["original", "downscale2x"],
    )
    path = tmp / "tiny.json"
    path.write_text(json.dumps(cfg))
    return path


def test_a_pack_holds_the_films_and_targets_training_reads(tiny_config, tmp_path):
    from pneumo.inference.preprocess import PreprocessConfig
    from pneumo.training.config import TrainConfig
    from pneumo.training.data import cached_arrays, split_samples
    from pneumo.training.packed import unpack

    out = tmp_path / "pack.npz"
    res = _cli("pack", "--config", str(tiny_config), "--out", str(out), "--budget-mb", "5")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["films"] == {"train": 24, "tune": 12} and report["mib"] < 5
    cfg = TrainConfig.load(tiny_config)
    pcfg = PreprocessConfig.from_dict(cfg.preprocess)
    data = split_samples(cfg)
    packed = unpack(out, pcfg)
    for name in ("train", "tune"):
        direct = cached_arrays(data.samples[name], data.table, pcfg, cfg.cache_dir, False)
        got = packed[name]
        assert np.array_equal(got.y, direct.y) and got.y.any() == direct.y.any()
        assert np.array_equal(got.label, direct.label)
        assert list(got.source) == [s.source for s in data.samples[name]]
        assert all(max(n.shape) <= 512 for n in got.native)
        # the stored 512-px JPEG reaches the network almost as the file does
        diff = np.abs(got.x.astype(int) - direct.x.astype(int))
        assert diff.mean() < 1.5, diff.mean()
    # a pack over its budget is refused, and nothing is written
    small = tmp_path / "small.npz"
    res = _cli("pack", "--config", str(tiny_config), "--out", str(small), "--budget-mb", "0.05")
    assert res.returncode == 2 and "over its budget" in res.stderr and not small.exists()


def test_train_from_a_pack_then_finalize_on_the_real_files(tiny_config, tmp_path):
    pack = tmp_path / "pack.npz"
    assert _cli("pack", "--config", str(tiny_config), "--out", str(pack)).returncode == 0
    run = tmp_path / "run"
    res = _cli("train", "--config", str(tiny_config), "--packed", str(pack), "--out", str(run))
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run / "weights.weights.h5").exists() and (run / "state.json").exists()
    assert json.loads((run / "training.json").read_text())["packed"] == str(pack)
    assert not (run / "model.json").exists()  # the folder is made where the real files are
    folder = tmp_path / "candidate"
    res = _cli("finalize", "--config", str(tiny_config), "--run", str(run), "--out", str(folder))
    assert res.returncode == 0, res.stderr[-3000:]
    card = json.loads((folder / "model.json").read_text())
    assert card["tune"]["n_images"] == 12 and card["training"]["epochs_run"] == 2
