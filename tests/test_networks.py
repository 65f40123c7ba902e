import numpy as np
import pytest

import keras

from pneumo.nets import losses
from pneumo.nets.networks import (
    FIRST_MASK_OUTPUT,
    IMAGE_OUTPUT,
    MASK_OUTPUT,
    build_double_unet,
    build_model,
    build_unet,
)


@pytest.mark.parametrize(
    "size,depth,width,channels",
    [(64, 2, 0.125, 1), (64, 4, 0.125, 3), (96, 2, 0.25, 1), (128, 3, 0.125, 1)],
)
def test_double_unet_shapes(size, depth, width, channels):
    model = build_double_unet(size, depth, width, channels)
    out = model(np.zeros((2, size, size, channels), np.float32))
    assert [tuple(o.shape) for o in out] == [(2, size, size, 1)] * 2
    names = {layer.name for layer in model.layers}
    assert {"block1_conv2", "aspp1_concat", "aspp2_concat", FIRST_MASK_OUTPUT, MASK_OUTPUT} <= names
    assert f"block{depth}_conv2" in names and f"block{depth + 1}_conv1" in names


@pytest.mark.parametrize("size,depth,base", [(64, 3, 8), (96, 5, 4), (32, 1, 4)])
def test_unet_shapes(size, depth, base):
    model = build_unet(size, depth, base, channels=1, dropout=0.1)
    assert tuple(model(np.zeros((1, size, size, 1), np.float32)).shape) == (1, size, size, 1)
    assert "bottleneck_dropout" in {layer.name for layer in model.layers}


def test_paper_parameter_count():
    model = build_double_unet(512, depth=4, width=1.0, channels=3)
    assert abs(model.count_params() - 29.3e6) / 29.3e6 < 0.01


@pytest.mark.parametrize(
    "kwargs,word",
    [
        (dict(input_size=100, depth=4), "100"),
        (dict(input_size=64, depth=5), "depth"),
        (dict(input_size=64, depth=2, width=0), "width"),
        (dict(input_size=64, depth=2, channels=2), "channels"),
        (dict(input_size=64, depth=2, output_stride=4), "output_stride"),
        (dict(input_size=64, depth=2, image_head=True, head_dropout=1.0), "head_dropout"),
    ],
)
def test_double_unet_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_double_unet(**kwargs)


def test_unet_bad_arguments():
    with pytest.raises(ValueError, match="48"):
        build_unet(48, depth=5)
    with pytest.raises(ValueError, match="dropout"):
        build_unet(64, depth=2, dropout=1.5)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model({"name": "resnet"})


def test_save_rebuild_load_identical(tmp_path):
    arch = {
        "name": "double_unet",
        "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1},
    }
    a = build_model(arch)
    x = np.random.default_rng(0).random((2, 64, 64, 1)).astype(np.float32)
    a.save_weights(tmp_path / "w.weights.h5")
    b = build_model(arch)
    b.load_weights(tmp_path / "w.weights.h5")
    for oa, ob in zip(a(x), b(x)):
        np.testing.assert_array_equal(np.asarray(oa), np.asarray(ob))


def test_output_stride_two_keeps_full_size_outputs():
    model = build_double_unet(
        64, depth=3, width=0.125, channels=1, output_stride=2, image_head=True
    )
    out = model(np.zeros((1, 64, 64, 1), np.float32))
    assert [tuple(o.shape) for o in out] == [(1, 64, 64, 1), (1, 64, 64, 1), (1, 1)]
    names = {layer.name for layer in model.layers}
    assert {"mask2_up", "gate_input_pool"} <= names and "dec2_stage3_up" not in names


def test_mask_loss_skipped_for_label_only_images():
    """Sample weight 0 on the mask outputs: an image label trains the head alone."""
    from pneumo.training.data import targets

    keras.utils.set_random_seed(0)
    model = build_double_unet(32, depth=2, width=0.125, channels=1, image_head=True)
    model.compile(
        optimizer="adam",
        loss={
            FIRST_MASK_OUTPUT: losses.bce_dice,
            MASK_OUTPUT: losses.bce_dice,
            IMAGE_OUTPUT: losses.image_bce,
        },
    )
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    y = np.ones((2, 32, 32), np.uint8)  # a nonsense "mask" that must not count
    ys, weights = targets(model.output_names, y, np.array([True, True]), np.array([False, False]))
    assert [w.tolist() for w in weights] == [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    logs = model.test_on_batch(x, ys, sample_weight=weights, return_dict=True)
    assert logs[f"{MASK_OUTPUT}_loss"] == pytest.approx(0.0, abs=1e-6)
    assert logs[f"{IMAGE_OUTPUT}_loss"] > 0


def test_losses_values():
    t = np.zeros((2, 8, 8, 1), np.float32)
    t[0, :4] = 1
    perfect = t.copy()
    assert float(keras.ops.mean(losses.soft_dice_loss(t, perfect))) < 0.01
    wrong = 1 - t
    for name in ("bce_dice", "weighted_bce_dice", "focal_dice"):
        fn = losses.get_loss(name)
        good = float(keras.ops.mean(fn(t, np.clip(perfect, 0.01, 0.99))))
        bad = float(keras.ops.mean(fn(t, np.clip(wrong, 0.01, 0.99))))
        assert good < bad, name
    # foreground weighting: missing foreground costs more than with plain BCE
    miss = np.full_like(t, 0.01)
    assert float(losses.weighted_bce(t, miss)[0]) > float(losses.bce(t, miss)[0])


@pytest.mark.slow  # trains
def test_tiny_double_unet_loss_falls():
    keras.utils.set_random_seed(0)
    model = build_double_unet(32, depth=2, width=0.125, channels=1)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=[losses.bce_dice, losses.bce_dice],
        loss_weights=[0.5, 1.0],
    )
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 1)).astype(np.float32) * 0.3
    y = np.zeros((8, 32, 32, 1), np.float32)
    y[:, 8:20, 8:20] = 1
    x[y > 0] += 0.6
    hist = model.fit(x, (y, y), epochs=15, batch_size=4, verbose=0)
    assert hist.history["loss"][-1] < 0.9 * hist.history["loss"][0]


def test_encoder_batch_norm_option_keeps_vgg_names():
    plain = build_double_unet(64, depth=2, width=0.125, channels=1)
    bn = build_double_unet(64, depth=2, width=0.125, channels=1, encoder_batch_norm=True)
    names = {layer.name for layer in bn.layers}
    assert {"block1_conv1", "block1_conv1_bn", "block3_conv4_bn"} <= names
    assert "block1_conv1_bn" not in {layer.name for layer in plain.layers}
    assert bn.count_params() > plain.count_params()
