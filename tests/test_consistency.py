"""Size-consistency training (issue 32): pairs of one film at two pixel sizes."""

import math

import numpy as np
import pytest

from pneumo.data.dataset import Sample, dicom_image_id
from pneumo.inference.preprocess import PreprocessConfig, model_image, model_input
from pneumo.io import encodings
from pneumo.nets import losses
from pneumo.training.config import Augment, Consistency, TrainConfig
from pneumo.training.data import BalancedBatches, cached_arrays, native_image

TINY_ARCH = {
    "name": "double_unet",
    "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1, "image_head": True},
}
NO_AUG = dict(
    hflip=0.0, rotate_deg=0.0, scale=0.0, shift=0.0, brightness=0.0, contrast=0.0, gamma=0.0
)


def _logit(p):
    return math.log(p / (1 - p))


def test_paired_image_loss_adds_the_logit_gap_to_the_resized_view_only():
    from keras import ops

    truth = np.array([[0.0], [0.0], [1.0], [1.0]], np.float32)
    pred = np.array([[0.1], [0.3], [0.8], [0.8]], np.float32)
    base = ops.convert_to_numpy(losses.image_bce(truth, pred))
    paired = ops.convert_to_numpy(losses.paired_image_loss(losses.image_bce, 2.0)(truth, pred))
    np.testing.assert_allclose(paired[[0, 2, 3]], base[[0, 2, 3]], rtol=1e-6)
    gap = _logit(0.3) - _logit(0.1)
    assert paired[1] == pytest.approx(base[1] + 2.0 * gap**2, rel=1e-5)
    # readings beyond 1 % / 99 % count as 1 % / 99 %: no verdict lives there
    far = np.array([[1e-6], [1e-4], [0.999], [0.9999999]], np.float32)
    clipped = ops.convert_to_numpy(losses.paired_image_loss(losses.image_bce, 2.0)(truth, far))
    np.testing.assert_allclose(
        clipped, ops.convert_to_numpy(losses.image_bce(truth, far)), rtol=1e-6
    )


def test_paired_mask_loss_compares_the_top_pixels():
    from keras import ops

    truth = np.zeros((2, 10, 10, 1), np.float32)
    pred = np.full((2, 10, 10, 1), 0.01, np.float32)
    pred[0, :2, :5] = 0.6  # 10 of 100 pixels
    pred[1, :2, :5] = 0.2
    base = ops.convert_to_numpy(losses.bce(truth, pred))
    paired = ops.convert_to_numpy(losses.paired_mask_loss(losses.bce, 1.0, 0.1)(truth, pred))
    assert paired[0] == pytest.approx(base[0], rel=1e-6)
    assert paired[1] == pytest.approx(base[1] + (_logit(0.2) - _logit(0.6)) ** 2, rel=1e-4)


def test_consistency_config_is_checked():
    with pytest.raises(ValueError, match="down"):
        Consistency(weight=1.0, down=(0.5, 1.5))
    with pytest.raises(ValueError, match="even batch_size"):
        TrainConfig(batch_size=3, consistency={"weight": 1.0})
    assert not Consistency().on and Consistency(weight=0.5).on


def _arrays(dicoms, rle_table, pcfg, cache):
    """One positive and one negative labelled SIIM DICOM, with their full-size pixels."""
    from pneumo.io.rle import is_positive

    chosen = {}
    for p in dicoms:
        uid = dicom_image_id(p)
        if uid in rle_table:
            chosen.setdefault(is_positive(rle_table[uid]), p)
        if len(chosen) == 2:
            break
    samples = [
        Sample(dicom_image_id(p), str(p), "DICOM", positive) for positive, p in chosen.items()
    ]
    arrays = cached_arrays(samples, rle_table, pcfg, cache, progress=False)
    arrays.native = [native_image(s, 1024) for s in samples]
    return arrays


def test_pair_batches_hold_each_film_as_is_and_resized(siim_dicoms, rle_table, tmp_path):
    """With no augmentation and a fixed 2x area downscale, the pair is exactly the film
    through the serving path and its half-size copy through the same path."""
    pcfg = PreprocessConfig(size=64, channels=1, jpeg_quality=75, working_size=128)
    arrays = _arrays(siim_dicoms, rle_table, pcfg, tmp_path)
    cfg = TrainConfig(
        preprocess={"size": 64, "channels": 1},
        batch_size=4,
        positive_fraction=0.5,
        consistency={"weight": 1.0, "down": [0.5, 0.5], "down_share": 1.0},
    )
    seq = BalancedBatches(arrays, cfg, pcfg, ["mask2", "image_prob"], Augment(**NO_AUG), steps=2)
    x, targets, weights = seq[0]
    assert x.shape == (4, 64, 64, 1)
    idx = seq.order[:2]
    for k, j in enumerate(idx):
        pixels = arrays.native[j]
        np.testing.assert_array_equal(
            x[2 * k], model_input(model_image(pixels, pcfg)[None], pcfg)[0]
        )
        half = model_image(encodings.downscale(pixels, 0.5), pcfg)
        np.testing.assert_array_equal(x[2 * k + 1], model_input(half[None], pcfg)[0])
        assert not np.array_equal(x[2 * k], x[2 * k + 1])
    labels = targets["image_prob"][:, 0]
    assert labels[0] == labels[1] and labels[2] == labels[3]
    np.testing.assert_array_equal(targets["mask2"][0], targets["mask2"][1])
    assert len(weights) == 2 and all(len(w) == 4 for w in weights)


def test_pair_views_share_their_augmentation(siim_dicoms, rle_table, tmp_path):
    """Flip, rotation and photometric draws are the same for both views of a film:
    the masks stay identical and the images differ only as much as resizing does."""
    pcfg = PreprocessConfig(size=64, channels=1, jpeg_quality=75, working_size=128)
    arrays = _arrays(siim_dicoms, rle_table, pcfg, tmp_path)
    cfg = TrainConfig(
        preprocess={"size": 64, "channels": 1},
        batch_size=4,
        consistency={"weight": 1.0, "up": [2.0, 2.0], "down_share": 0.0},
    )
    aug = Augment(jpeg=1.0, jpeg_quality=(60, 60), rotate_deg=15.0, brightness=0.2)
    seq = BalancedBatches(arrays, cfg, pcfg, ["mask2", "image_prob"], aug, steps=3)
    for i in range(3):
        x, targets, _ = seq[i]
        np.testing.assert_array_equal(targets["mask2"][0::2], targets["mask2"][1::2])
        pair_gap = np.abs(x[0::2] - x[1::2]).mean()
        film_gap = np.abs(x[0] - x[2]).mean()
        assert pair_gap < 0.2 * film_gap or film_gap == 0


@pytest.mark.slow
def test_a_consistency_run_trains(siim_dicoms, rle_table, tmp_path):
    """One fit step of a tiny two-output network with the paired losses: finite loss,
    and the weights move."""
    import keras

    from pneumo.nets import networks
    from pneumo.training.loop import compile_model

    pcfg = PreprocessConfig(size=64, channels=1, jpeg_quality=75, working_size=128)
    arrays = _arrays(siim_dicoms, rle_table, pcfg, tmp_path)
    arch = TINY_ARCH
    cfg = TrainConfig(
        architecture=arch,
        preprocess={"size": 64, "channels": 1},
        batch_size=4,
        epochs=1,
        consistency={"weight": 1.0},
    )
    model = networks.build_model(arch)
    seq = BalancedBatches(arrays, cfg, pcfg, list(model.output_names), Augment(), steps=2)
    compile_model(model, cfg, 2)
    before = [w.copy() for w in model.get_weights()]
    hist = model.fit(seq, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    keras.backend.clear_session()


def test_evidence_weight_zero_keeps_the_plain_mask_loss():
    """``evidence_weight`` 0 puts the pair term on the image-level output alone."""
    import keras

    from pneumo.nets import networks
    from pneumo.training.loop import compile_model

    arch = TINY_ARCH
    model = networks.build_model(arch)
    final = [n for n in model.output_names if n != networks.IMAGE_OUTPUT][-1]
    plain = losses.get_loss("bce_dice")
    for con, paired in (({"weight": 1.0, "evidence_weight": 0.0}, False), ({"weight": 1.0}, True)):
        cfg = TrainConfig(
            architecture=arch, preprocess={"size": 64, "channels": 1}, consistency=con
        )
        compile_model(model, cfg, 2)
        assert (model.loss[final] is not plain) is paired
        assert model.loss[networks.IMAGE_OUTPUT] is not losses.image_bce
    assert Consistency(weight=0.5).mask_weight == 0.5
    keras.backend.clear_session()


def test_weight_soup_is_the_mean_of_its_parts(tmp_path):
    from pneumo.nets import networks
    from pneumo.training.packaging import average_weights, load_init_weights

    arch = TINY_ARCH
    cfg = TrainConfig(architecture=arch, preprocess={"size": 64, "channels": 1})
    import keras

    parts = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        m = networks.build_model(arch)
        m.save_weights(tmp_path / f"w{seed}.weights.h5")
        parts.append(m.get_weights())
    average_weights(
        cfg, [tmp_path / "w1.weights.h5", tmp_path / "w2.weights.h5"], tmp_path / "s.weights.h5"
    )
    soup = networks.build_model(arch)
    load_init_weights(soup, tmp_path / "s.weights.h5")
    for got, a, b in zip(soup.get_weights(), *parts):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-7)
    assert not np.allclose(parts[0][0], parts[1][0])
    with pytest.raises(ValueError, match="at least two"):
        average_weights(cfg, [tmp_path / "w1.weights.h5"], tmp_path / "x.weights.h5")


@pytest.mark.slow
def test_weight_soup_script_packages_a_tune_scored_folder(tmp_path):
    """scripts/weight_soup.py: a model folder fitted and scored on tune, nothing on
    validation; one weight file is refused with a message."""
    import json
    import subprocess
    import sys

    import keras

    from conftest import ROOT
    from pneumo.nets import networks

    cfg = json.loads((ROOT / "configs/train_tiny.json").read_text())
    cfg.update(cache_dir=str(tmp_path / "cache"), data=str(ROOT / "configs/data_siim_v2.json"))
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    files = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        networks.build_model(cfg["architecture"]).save_weights(tmp_path / f"w{seed}.weights.h5")
        files.append(str(tmp_path / f"w{seed}.weights.h5"))
    script = [
        sys.executable,
        str(ROOT / "scripts/weight_soup.py"),
        "--config",
        str(tmp_path / "c.json"),
    ]
    res = subprocess.run(
        script + ["--out", str(tmp_path / "soup"), *files],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    card = json.loads((tmp_path / "soup/model.json").read_text())
    assert card["tune"]["n_images"] == 12 and not card.get("validation")
    one = subprocess.run(
        script + ["--out", str(tmp_path / "x"), files[0]], capture_output=True, text=True, cwd=ROOT
    )
    assert one.returncode == 2 and "at least two weight files" in one.stderr
