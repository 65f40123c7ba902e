#!/usr/bin/env python3
"""The serving packages a GPU machine of the device tool lacks, as pinned requirement lines.

    .venv/bin/python scripts/device/wheels.py > .device_check/wheels/requirements.txt
    .venv/bin/python scripts/device/wheels.py keras pydicom   # training from a pack

Walks the dependencies of ``requirements.txt`` (TensorFlow left out: those
machines run JAX and PyTorch) through this environment's installed packages,
at the versions installed here (the tested ones), and leaves out what
``device_packages.txt`` says the machine already has, except :data:`ALWAYS`.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: Carried even though the machine has them: Flask 3.1 needs Werkzeug >= 3.1, and the
#: machine's version was not read.
ALWAYS = {"werkzeug"}
#: Not needed there: the machine serves with JAX or torch.
SKIP = {"tensorflow"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_names(path: Path) -> list[str]:
    return [
        norm(line.split("==")[0])
        for line in path.read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    ]


def closure(names: list[str]) -> dict[str, str]:
    """Every installed distribution ``names`` need (markers evaluated here), with versions."""
    found: dict[str, str] = {}
    stack = [n for n in names if n not in SKIP]
    while stack:
        name = norm(stack.pop())
        if name in found or name in SKIP:
            continue
        dist = metadata.distribution(name)
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(req.name)
    return found


def main() -> int:
    have = {
        norm(line.strip())
        for line in (HERE / "device_packages.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    needed = closure(sys.argv[1:] or pinned_names(ROOT / "requirements.txt"))
    for name, version in sorted(needed.items()):
        if name not in have or name in ALWAYS:
            print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
