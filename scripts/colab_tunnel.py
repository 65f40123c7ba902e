#!/usr/bin/env python3
"""Helpers for the Colab demo: wait for the app, start a tunnel, print its URL.

Usage (from the notebook):
    python scripts/colab_tunnel.py wait [--port 8000] [--timeout 300]
    python scripts/colab_tunnel.py cloudflared [--port 8000]   # needs ./cloudflared
    python scripts/colab_tunnel.py ngrok --token TOKEN [--port 8000]  # needs pyngrok
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import urllib.request

URL_PATTERN = re.compile(r"https://[a-z0-9-]+\.trycloudflare\.com")


def wait_ready(port: int, timeout: float) -> bool:
    """Poll /readyz until it answers 200 or ``timeout`` seconds pass."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(2)
    return False


def find_tunnel_url(log_text: str) -> str | None:
    """The public URL cloudflared prints for a quick tunnel, if any."""
    m = URL_PATTERN.search(log_text)
    return m.group(0) if m else None


def cloudflared(port: int, log_path: str = "tunnel.log", timeout: float = 60) -> str:
    with open(log_path, "w") as log:
        subprocess.Popen(
            ["./cloudflared", "tunnel", "--no-autoupdate", "--url", f"http://127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.time() + timeout
    while time.time() < deadline:
        url = find_tunnel_url(open(log_path).read())
        if url:
            return url
        time.sleep(1)
    raise SystemExit("cloudflared printed no URL; see " + log_path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["wait", "cloudflared", "ngrok"])
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--token", help="ngrok auth token")
    args = p.parse_args(argv)
    if args.what == "wait":
        ok = wait_ready(args.port, args.timeout)
        print("app is ready" if ok else "app did not become ready; see server.log")
        return 0 if ok else 1
    if args.what == "cloudflared":
        print("Public URL:", cloudflared(args.port))
        return 0
    from pyngrok import ngrok  # installed by the notebook only for this option

    ngrok.set_auth_token(args.token)
    print("Public URL:", ngrok.connect(args.port, "http").public_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
