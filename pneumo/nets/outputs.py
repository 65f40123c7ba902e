"""The networks' output names and how a runtime's outputs split by them, without Keras:
a runtime that serves a converted network (OpenVINO, from its cache) never imports it."""

from __future__ import annotations

from typing import Any

#: Names of the networks' outputs (the layers that make them: saved weights and the
#: training losses go by them). U-Net has one mask output; Double-UNet two, of which the
#: second is the prediction, and the image-level head's output where it has the head.
UNET_MASK_OUTPUT = "mask"
FIRST_MASK_OUTPUT = "mask1"
MASK_OUTPUT = "mask2"
IMAGE_OUTPUT = "image_prob"
#: The pooled deep features the image head reads; the chest gate reads them too.
FEATURES_LAYER = "image_head_concat"
FEATURES_OUTPUT = "features"


def split_named(output_names: list[str], outputs) -> tuple[Any, Any | None, Any | None]:
    """``(mask, image probability or None, pooled features or None)`` by output name."""
    if not isinstance(outputs, (list, tuple)):
        return outputs, None, None
    named = dict(zip(output_names, outputs))
    mask = named.get(MASK_OUTPUT, named.get(UNET_MASK_OUTPUT))
    return mask, named.get(IMAGE_OUTPUT), named.get(FEATURES_OUTPUT)
