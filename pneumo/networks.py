"""Keras 3 segmentation networks: U-Net and Double-UNet.

Backend-agnostic (no ``tf.*`` calls), channels-last, nothing changed at
import. Builders take hyper-parameters as arguments, raise ``ValueError``
naming an impossible value, and name every layer by stage
(``enc1_block3_conv2``, ``dec2_stage1_conv1`` ...).

* :func:`build_unet` - Ronneberger et al. 2015.
* :func:`build_double_unet` - Jha et al. 2020 (arXiv 2006.04868): a VGG19-
  structured encoder, ASPP and a squeeze-excite decoder give mask 1; the
  input multiplied by mask 1 goes through a second encoder, ASPP and a
  decoder that concatenates skips from both encoders, giving mask 2 (the
  prediction). Both masks are outputs so both can be supervised.

:func:`build_model` builds either from a card's ``architecture`` dict.
"""
from __future__ import annotations

from typing import Any

import keras
from keras import layers

# VGG19: (number of 3x3 convolutions, filters) for blocks 1..5.
VGG19_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))
DECODER_FILTERS = (256, 128, 64, 32)
ENCODER2_FILTERS = (32, 64, 128, 256)


def _scaled(filters: int, width: float) -> int:
    return max(4, int(round(filters * width)))


def _check_common(input_size: int, depth: int, max_depth: int, channels: int) -> None:
    if not isinstance(depth, int) or not 1 <= depth <= max_depth:
        raise ValueError(f"depth must be an integer in 1..{max_depth}, got {depth!r}")
    if not isinstance(input_size, int) or input_size <= 0:
        raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
    if input_size % (2 ** depth):
        raise ValueError(
            f"input_size {input_size} is not divisible by 2**depth = {2 ** depth}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")


# --------------------------------------------------------------------------- blocks


def conv_bn_relu(x, filters: int, name: str, kernel: int = 3, dilation: int = 1,
                 batch_norm: bool = True):
    """3x3 (or ``kernel``) convolution, optional batch norm, ReLU."""
    x = layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation,
                      use_bias=not batch_norm, kernel_initializer="he_normal",
                      name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def squeeze_excite(x, name: str, ratio: int = 8):
    """Channel attention (Hu et al. 2018): global pool -> bottleneck -> sigmoid gate."""
    filters = x.shape[-1]
    se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    se = layers.Dense(max(1, filters // ratio), activation="relu", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_se_reduce")(se)
    se = layers.Dense(filters, activation="sigmoid", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_se_expand")(se)
    return layers.Multiply(name=f"{name}_se_scale")([x, se])


def se_conv_block(x, filters: int, name: str):
    """Two conv-BN-ReLU layers followed by squeeze-excite (Double-UNet's conv block)."""
    x = conv_bn_relu(x, filters, f"{name}_conv1")
    x = conv_bn_relu(x, filters, f"{name}_conv2")
    return squeeze_excite(x, name)


def aspp(x, filters: int, name: str, rates: tuple[int, ...] = (6, 12, 18)):
    """Atrous spatial pyramid pooling: image pooling, 1x1 and dilated 3x3 branches."""
    height, width = x.shape[1], x.shape[2]
    pool = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    pool = conv_bn_relu(pool, filters, f"{name}_pool_proj", kernel=1)
    pool = layers.UpSampling2D((height, width), name=f"{name}_pool_up")(pool)
    branches = [pool, conv_bn_relu(x, filters, f"{name}_b1x1", kernel=1)]
    for rate in rates:
        branches.append(conv_bn_relu(x, filters, f"{name}_b3x3_d{rate}", dilation=rate))
    y = layers.Concatenate(name=f"{name}_concat")(branches)
    return conv_bn_relu(y, filters, f"{name}_proj", kernel=1)


def _mask_head(x, name: str):
    x = layers.Conv2D(1, 1, padding="same", name=f"{name}_logits")(x)
    return layers.Activation("sigmoid", dtype="float32", name=name)(x)


# --------------------------------------------------------------------------- U-Net


def build_unet(input_size: int = 256, depth: int = 4, base_filters: int = 32,
               channels: int = 1, batch_norm: bool = True, dropout: float = 0.0,
               name: str = "unet") -> keras.Model:
    """U-Net (Ronneberger et al. 2015) with a sigmoid mask output.

    Args:
        input_size: square input side; must be divisible by ``2**depth``.
        depth: number of down-sampling stages (1..6).
        base_filters: filters of the first stage; doubled at each stage.
        channels: input channels (1 grey or 3).
        batch_norm: batch normalisation after each convolution.
        dropout: dropout rate at the bottleneck (0 disables it).

    Returns:
        ``keras.Model`` mapping (N, size, size, channels) to (N, size, size, 1).
    """
    _check_common(input_size, depth, 6, channels)
    if base_filters < 1:
        raise ValueError(f"base_filters must be >= 1, got {base_filters}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x, skips = inputs, []
    for stage in range(depth):
        f = base_filters * 2 ** stage
        x = conv_bn_relu(x, f, f"enc_stage{stage + 1}_conv1", batch_norm=batch_norm)
        x = conv_bn_relu(x, f, f"enc_stage{stage + 1}_conv2", batch_norm=batch_norm)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc_stage{stage + 1}_pool")(x)
    f = base_filters * 2 ** depth
    x = conv_bn_relu(x, f, "bottleneck_conv1", batch_norm=batch_norm)
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    x = conv_bn_relu(x, f, "bottleneck_conv2", batch_norm=batch_norm)
    for stage in reversed(range(depth)):
        f = base_filters * 2 ** stage
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same",
                                   name=f"dec_stage{stage + 1}_upconv")(x)
        x = layers.Concatenate(name=f"dec_stage{stage + 1}_concat")([x, skips[stage]])
        x = conv_bn_relu(x, f, f"dec_stage{stage + 1}_conv1", batch_norm=batch_norm)
        x = conv_bn_relu(x, f, f"dec_stage{stage + 1}_conv2", batch_norm=batch_norm)
    return keras.Model(inputs, _mask_head(x, "mask"), name=name)


# --------------------------------------------------------------------------- Double-UNet


def _vgg19_encoder(inputs, depth: int, width: float, batch_norm: bool = False):
    """VGG19-structured encoder; returns (bottleneck, skips). Convolution names match
    ``keras.applications.VGG19`` so ImageNet weights can be copied by name. With
    ``batch_norm`` a BatchNormalization follows each convolution (``blockN_convM_bn``),
    which lets the encoder train from scratch."""
    x, skips = inputs, []
    for block, (n_convs, filters) in enumerate(VGG19_BLOCKS[: depth + 1], start=1):
        if block > 1:
            x = layers.MaxPooling2D(2, name=f"block{block - 1}_pool")(x)
        for i in range(1, n_convs + 1):
            name = f"block{block}_conv{i}"
            x = layers.Conv2D(_scaled(filters, width), 3, padding="same",
                              activation=None if batch_norm else "relu", name=name)(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"{name}_bn")(x)
                x = layers.Activation("relu", name=f"{name}_relu")(x)
        if block <= depth:
            skips.append(x)
    return x, skips


def build_double_unet(input_size: int = 256, depth: int = 4, width: float = 1.0,
                      channels: int = 3, aspp_filters: int = 64,
                      vgg_weights: str | None = None, encoder_batch_norm: bool = False,
                      name: str = "double_unet") -> keras.Model:
    """Double-UNet (Jha et al. 2020).

    Args:
        input_size: square input side; must be divisible by ``2**depth``.
        depth: encoder depth; 4 is the paper (skips block1_conv2 ... block4_conv4,
            bottleneck block5_conv4), 2 the lighter "2-block" variant.
        width: multiplier on every filter count; 1.0 is the paper (29.3 M
            parameters with 3 input channels).
        channels: input channels (3 to start from ImageNet VGG19 weights).
        aspp_filters: filters of both ASPP modules (64 in the paper), scaled by ``width``.
        vgg_weights: optional path to Keras VGG19 ``include_top=False`` weights
            (``.h5``); copied by layer name into encoder 1. Needs ``width=1``
            and ``channels=3``.
        encoder_batch_norm: batch norm after each VGG convolution (not in the
            paper, which starts from ImageNet weights; it makes training from
            scratch converge).

    Returns:
        ``keras.Model`` with two outputs ``[mask1, mask2]``, each
        (N, size, size, 1) sigmoid; ``mask2`` is the prediction.
    """
    _check_common(input_size, depth, 4, channels)
    if not 0.0 < width <= 4.0:
        raise ValueError(f"width must be in (0, 4], got {width}")
    if vgg_weights and (width != 1.0 or channels != 3):
        raise ValueError(
            f"vgg_weights need width=1.0 and channels=3, got width={width}, channels={channels}")
    inputs = keras.Input((input_size, input_size, channels), name="image")
    dec_filters = [_scaled(f, width) for f in DECODER_FILTERS[-depth:]]
    enc2_filters = [_scaled(f, width) for f in ENCODER2_FILTERS[:depth]]
    a_filters = _scaled(aspp_filters, width)

    # Network 1
    x, skips1 = _vgg19_encoder(inputs, depth, width, encoder_batch_norm)
    x = aspp(x, a_filters, "aspp1")
    for stage, (f, skip) in enumerate(zip(dec_filters, reversed(skips1)), start=1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec1_stage{stage}_up")(x)
        x = layers.Concatenate(name=f"dec1_stage{stage}_concat")([x, skip])
        x = se_conv_block(x, f, f"dec1_stage{stage}")
    mask1 = _mask_head(x, "mask1")

    # Network 2: the input gated by mask 1
    x = layers.Multiply(name="gate_input")([inputs, mask1])
    skips2 = []
    for stage, f in enumerate(enc2_filters, start=1):
        x = se_conv_block(x, f, f"enc2_stage{stage}")
        skips2.append(x)
        x = layers.MaxPooling2D(2, name=f"enc2_stage{stage}_pool")(x)
    x = aspp(x, a_filters, "aspp2")
    for stage, (f, s1, s2) in enumerate(
            zip(dec_filters, reversed(skips1), reversed(skips2)), start=1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec2_stage{stage}_up")(x)
        x = layers.Concatenate(name=f"dec2_stage{stage}_concat")([x, s1, s2])
        x = se_conv_block(x, f, f"dec2_stage{stage}")
    mask2 = _mask_head(x, "mask2")

    model = keras.Model(inputs, [mask1, mask2], name=name)
    if vgg_weights:
        load_vgg19_weights(model, vgg_weights, depth)
    return model


def load_vgg19_weights(model: keras.Model, weights_path: str, depth: int = 4) -> int:
    """Copy ImageNet VGG19 (``include_top=False``) weights into encoder 1 by layer name.

    Returns:
        Number of layers whose weights were copied.
    """
    vgg = keras.applications.VGG19(include_top=False, weights=weights_path,
                                   input_shape=model.input_shape[1:])
    copied = 0
    for block, (n_convs, _) in enumerate(VGG19_BLOCKS[: depth + 1], start=1):
        for i in range(1, n_convs + 1):
            layer_name = f"block{block}_conv{i}"
            model.get_layer(layer_name).set_weights(vgg.get_layer(layer_name).get_weights())
            copied += 1
    return copied


BUILDERS = {"unet": build_unet, "double_unet": build_double_unet}


def build_model(architecture: dict[str, Any]) -> keras.Model:
    """Build a network from a card's ``{"name": ..., "args": {...}}`` dict."""
    name = architecture.get("name")
    if name not in BUILDERS:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(BUILDERS)}")
    return BUILDERS[name](**architecture.get("args", {}))


def prediction_output(outputs):
    """The prediction among a model's outputs: the last one (mask2 for Double-UNet)."""
    if isinstance(outputs, (list, tuple)):
        return outputs[-1]
    return outputs
