#!/usr/bin/env python3
"""Print a smoke script's figures as one ``SMOKE {json}`` line (the last line its test reads).

    python scripts/smoke_figures.py name=value ...

Values that read as numbers become numbers."""

import json
import sys


def value(v: str):
    try:
        return int(v) if v.isdigit() else float(v)
    except ValueError:
        return v


figures = dict(arg.split("=", 1) for arg in sys.argv[1:])
print("SMOKE " + json.dumps({k: value(v) for k, v in sorted(figures.items())}))
