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

from pneumo.nets import encoders
from pneumo.nets.encoders import scaled_filters

from pneumo.nets.outputs import (  # noqa: F401 - the names, re-exported for the builders' callers
    FEATURES_LAYER,
    FEATURES_OUTPUT,
    FIRST_MASK_OUTPUT,
    IMAGE_OUTPUT,
    MASK_OUTPUT,
    UNET_MASK_OUTPUT,
    split_named,
)


def _check_common(input_size: int, depth: int, max_depth: int, channels: int) -> None:
    if not isinstance(depth, int) or not 1 <= depth <= max_depth:
        raise ValueError(f"depth must be an integer in 1..{max_depth}, got {depth!r}")
    if not isinstance(input_size, int) or input_size <= 0:
        raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
    if input_size % (2**depth):
        raise ValueError(f"input_size {input_size} is not divisible by 2**depth = {2**depth}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")


# --------------------------------------------------------------------------- blocks


def conv_bn_relu(
    x, filters: int, name: str, kernel: int = 3, dilation: int = 1, batch_norm: bool = True
):
    """3x3 (or ``kernel``) convolution, optional batch norm, ReLU."""
    x = layers.Conv2D(
        filters,
        kernel,
        padding="same",
        dilation_rate=dilation,
        use_bias=not batch_norm,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def squeeze_excite(x, name: str, ratio: int = 8):
    """Channel attention (Hu et al. 2018): global pool -> bottleneck -> sigmoid gate."""
    filters = x.shape[-1]
    se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    se = layers.Dense(
        max(1, filters // ratio),
        activation="relu",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_se_reduce",
    )(se)
    se = layers.Dense(
        filters,
        activation="sigmoid",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_se_expand",
    )(se)
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


def _mask_head(x, name: str, upsample: int = 1):
    x = layers.Conv2D(1, 1, padding="same", name=f"{name}_logits")(x)
    if upsample > 1:  # logits from a coarser decoder, bilinear to the input size
        x = layers.UpSampling2D(upsample, interpolation="bilinear", name=f"{name}_up")(x)
    return layers.Activation("sigmoid", dtype="float32", name=name)(x)


# --------------------------------------------------------------------------- U-Net


def build_unet(
    input_size: int = 256,
    depth: int = 4,
    base_filters: int = 32,
    channels: int = 1,
    batch_norm: bool = True,
    dropout: float = 0.0,
    name: str = "unet",
) -> keras.Model:
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
        f = base_filters * 2**stage
        x = conv_bn_relu(x, f, f"enc_stage{stage + 1}_conv1", batch_norm=batch_norm)
        x = conv_bn_relu(x, f, f"enc_stage{stage + 1}_conv2", batch_norm=batch_norm)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc_stage{stage + 1}_pool")(x)
    f = base_filters * 2**depth
    x = conv_bn_relu(x, f, "bottleneck_conv1", batch_norm=batch_norm)
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    x = conv_bn_relu(x, f, "bottleneck_conv2", batch_norm=batch_norm)
    for stage in reversed(range(depth)):
        f = base_filters * 2**stage
        x = layers.Conv2DTranspose(
            f, 2, strides=2, padding="same", name=f"dec_stage{stage + 1}_upconv"
        )(x)
        x = layers.Concatenate(name=f"dec_stage{stage + 1}_concat")([x, skips[stage]])
        x = conv_bn_relu(x, f, f"dec_stage{stage + 1}_conv1", batch_norm=batch_norm)
        x = conv_bn_relu(x, f, f"dec_stage{stage + 1}_conv2", batch_norm=batch_norm)
    return keras.Model(inputs, _mask_head(x, UNET_MASK_OUTPUT), name=name)


# --------------------------------------------------------------------------- Double-UNet


def _check_double_unet(input_size, depth, width, channels, encoder) -> encoders.Encoder:
    spec = encoders.get(encoder)
    if len(spec.depths) == 1 and depth != spec.depths[0]:
        raise ValueError(
            f"the {encoder} encoder has depth {spec.depths[0]} "
            f"(stride {2 ** spec.depths[0]}), got {depth!r}"
        )
    _check_common(input_size, depth, max(spec.depths), channels)
    if not 0.0 < width <= 4.0:
        raise ValueError(f"width must be in (0, 4], got {width}")
    return spec


def _decoder(x, filters, skip_lists, name: str):
    """Upsample x2 per stage, concatenate the skips present at that scale, SE block."""
    for stage, (f, *skips) in enumerate(zip(filters, *skip_lists), start=1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_stage{stage}_up")(x)
        present = [s for s in skips if s is not None]
        if present:
            x = layers.Concatenate(name=f"{name}_stage{stage}_concat")([x, *present])
        x = se_conv_block(x, f, f"{name}_stage{stage}")
    return x


def build_double_unet(
    input_size: int = 256,
    depth: int = 4,
    width: float = 1.0,
    channels: int = 3,
    aspp_filters: int = 64,
    encoder: str = "vgg19",
    encoder_batch_norm: bool = False,
    image_head: bool = False,
    head_dropout: float = 0.3,
    output_stride: int = 1,
    name: str = "double_unet",
) -> keras.Model:
    """Double-UNet (Jha et al. 2020), with a choice of first encoder.

    Args:
        input_size: square input side; must be divisible by ``2**depth``.
        depth: decoder stages. VGG encoders: 1..4 (4 is the paper: skips
            block1_conv2 ... block4, bottleneck block5); ``efficientnet_lite0``: 5.
        width: multiplier on the decoder, second-encoder and ASPP filters (and on a
            VGG encoder's); 1.0 is the paper (29.3 M parameters with 3 channels).
            ImageNet weights need a VGG encoder at width 1.
        channels: input channels (3 for ImageNet-pretrained encoders).
        aspp_filters: filters of both ASPP modules (64 in the paper), scaled by ``width``.
        encoder: a name in :data:`pneumo.nets.encoders.ENCODERS`: ``vgg19`` (the
            paper), ``vgg16`` or ``efficientnet_lite0``.
            Pretrained weights are loaded by training (:func:`load_encoder_weights`),
            never by the builder, so serving reads only the model folder.
        encoder_batch_norm: batch norm after each VGG convolution (not in the
            paper; it makes training from scratch converge).
        image_head: add an image-level output ``image_prob`` (N, 1): the first encoder's
            deepest features and the second ASPP's output, pooled, then a sigmoid.
        head_dropout: dropout before the image head's dense layer.
        output_stride: 1 (the paper) or 2: both decoders stop at half the input
            size and their logits are upsampled bilinearly, and the second
            encoder starts from the gated input averaged 2x2. With an
            ImageNet encoder this halves the work at full resolution, which
            dominates training time on a CPU at 384² and more.

    Returns:
        ``keras.Model`` with outputs ``[mask1, mask2]`` (each (N, size, size, 1)
        sigmoid; ``mask2`` is the prediction), plus ``image_prob`` (N, 1) when ``image_head``.
    """
    spec = _check_double_unet(input_size, depth, width, channels, encoder)
    if not 0.0 <= head_dropout < 1.0:
        raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout}")
    if output_stride not in (1, 2) or output_stride >= 2**depth:
        raise ValueError(
            f"output_stride must be 1 or 2 (and below 2**depth), got {output_stride!r}"
        )
    skip = output_stride // 2  # decoder stages left out at the fine end
    inputs = keras.Input((input_size, input_size, channels), name="image")
    dec_filters = [scaled_filters(f, width) for f in spec.decoder_filters[-depth:]]
    enc2_filters = [scaled_filters(f, width) for f in spec.encoder2_filters[:depth]]
    dec_filters, enc2_filters = dec_filters[: len(dec_filters) - skip], enc2_filters[skip:]
    a_filters = scaled_filters(aspp_filters, width)

    # Network 1
    enc = spec.build(inputs, depth, width, encoder_batch_norm)
    enc.skips = enc.skips[skip:]
    x = aspp(enc.bottleneck, a_filters, "aspp1")
    x = _decoder(x, dec_filters, [list(reversed(enc.skips))], "dec1")
    mask1 = _mask_head(x, FIRST_MASK_OUTPUT, output_stride)

    # Network 2: the input gated by mask 1
    x = layers.Multiply(name="gate_input")([inputs, mask1])
    if output_stride > 1:
        x = layers.AveragePooling2D(output_stride, name="gate_input_pool")(x)
    skips2 = []
    for stage, f in enumerate(enc2_filters, start=1):
        x = se_conv_block(x, f, f"enc2_stage{stage}")
        skips2.append(x)
        x = layers.MaxPooling2D(2, name=f"enc2_stage{stage}_pool")(x)
    bottom2 = aspp(x, a_filters, "aspp2")
    x = _decoder(bottom2, dec_filters, [list(reversed(enc.skips)), list(reversed(skips2))], "dec2")
    outputs = [mask1, _mask_head(x, MASK_OUTPUT, output_stride)]
    if image_head:
        outputs.append(_image_head(enc.pooled_source, bottom2, head_dropout))
    return keras.Model(inputs, outputs, name=name)


def _image_head(deep, aspp_out, dropout: float):
    pooled = layers.Concatenate(name=FEATURES_LAYER)(
        [
            layers.GlobalAveragePooling2D(name="image_head_pool1")(deep),
            layers.GlobalAveragePooling2D(name="image_head_pool2")(aspp_out),
        ]
    )
    if dropout:
        pooled = layers.Dropout(dropout, name="image_head_dropout")(pooled)
    logit = layers.Dense(1, name="image_head_logit")(pooled)
    return layers.Activation("sigmoid", dtype="float32", name=IMAGE_OUTPUT)(logit)


def load_encoder_weights(model: keras.Model, architecture: dict[str, Any], path: str) -> int:
    """Copy ImageNet weights into the first encoder of a built Double-UNet.

    Returns:
        Number of layers copied.
    """
    args = architecture.get("args", {})
    if architecture.get("name") != "double_unet":
        raise ValueError("encoder_weights apply to the double_unet architecture only")
    spec = encoders.get(args.get("encoder", "vgg19"))
    return spec.load_weights(model, path, args.get("depth", 4))


BUILDERS = {"unet": build_unet, "double_unet": build_double_unet}


def build_model(architecture: dict[str, Any]) -> keras.Model:
    """Build a network from a card's ``{"name": ..., "args": {...}}`` dict."""
    name = architecture.get("name")
    if name not in BUILDERS:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(BUILDERS)}")
    return BUILDERS[name](**architecture.get("args", {}))


def with_features(model: keras.Model) -> keras.Model:
    """The same network (shared weights) with its pooled image features as an extra
    output named :data:`FEATURES_OUTPUT`.

    Raises:
        ValueError: the model has no image head, so no pooled features.
    """
    names = [layer.name for layer in model.layers]
    if FEATURES_LAYER not in names:
        raise ValueError(f"model {model.name!r} has no {FEATURES_LAYER!r} layer (no image head)")
    if FEATURES_OUTPUT in model.output_names:
        return model
    features = layers.Identity(name=FEATURES_OUTPUT, dtype="float32")(
        model.get_layer(FEATURES_LAYER).output
    )
    outputs = model.outputs if isinstance(model.outputs, (list, tuple)) else [model.outputs]
    return keras.Model(model.inputs, [*outputs, features], name=model.name)


def split_outputs(model: keras.Model, outputs) -> tuple[Any, Any | None]:
    """``(mask prediction, image-level probability or None)`` from a model's outputs.

    The mask prediction is ``mask2`` for Double-UNet and ``mask`` for U-Net;
    the image-level output is ``image_prob`` where the model has the head.
    """
    return split_named(model.output_names, outputs)[:2]
