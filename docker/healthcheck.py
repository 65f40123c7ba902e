#!/usr/bin/env python3
"""Container health check: exit 0 when /readyz answers 200 (model loaded)."""

import os
import sys
import urllib.request

port = os.environ.get("PNEUMO_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=4) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except OSError:
    sys.exit(1)
