"""Click -> overlay on screen, as a radiologist sees it: Chromium (Debian's, driven by
Playwright) uploads a DICOM through the upload page and waits until the viewer has drawn
the X-ray with its overlay (``#canvas[data-ready='1']``), against gunicorn with the
bundled model on loopback (issue 36).

    .venv/bin/python benchmarks/click_to_overlay.py [--films 12] [--out FILE]

Per film: the seconds from the click on *Analyse* to the drawn overlay, split at the
result page's arrival (the upload's answer and redirect) and the viewer's drawing; how
many times the result page was requested per upload (one is the target). The films are
the first SIIM DICOMs of the shared data, each uploaded once (duplicates are kept: the
same bytes twice would open the first result instead of analysing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pneumo.paths import default_model_dir  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SIIM = ROOT.parent / "shared" / "data" / "siim"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--films", type=int, default=12)
    p.add_argument("--out")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    from helpers.localserver import LocalServer

    films = sorted(SIIM.rglob("*.dcm"))[: args.films]
    tmp = Path(tempfile.mkdtemp(prefix="pneumo-click-"))
    server = LocalServer(
        args.model,
        tmp / "instance",
        env={"PNEUMO_DUPLICATES": "keep", "PNEUMO_UPLOAD_RATE_LIMIT": "100000 per minute"},
    )
    runs = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            result_loads: list[str] = []
            page.on(
                "request",
                lambda r: (
                    result_loads.append(r.url)
                    if "/results/" in r.url and r.resource_type == "document"
                    else None
                ),
            )
            page.goto(server.url + "/")  # warm: the page's own assets cached, as for a reader
            for film in [films[0]] + films:  # the first upload warms the model's path
                page.goto(server.url + "/")
                page.set_input_files("#files", str(film))
                result_loads.clear()
                t0 = time.perf_counter()
                page.click("#submit")
                page.wait_for_url("**/results/**", timeout=120_000)
                t1 = time.perf_counter()
                page.wait_for_selector("#canvas[data-ready='1']", timeout=60_000)
                t2 = time.perf_counter()
                runs.append(
                    {
                        "file": film.name[-24:],
                        "click_to_overlay_s": round(t2 - t0, 4),
                        "click_to_page_s": round(t1 - t0, 4),
                        "page_to_overlay_s": round(t2 - t1, 4),
                        "result_page_requests": len(result_loads),
                    }
                )
            browser.close()
    finally:
        server.stop()
    runs = runs[1:]  # the warm-up upload is not counted
    times = [r["click_to_overlay_s"] for r in runs]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "films": len(runs),
        "click_to_overlay_s": {
            "median": statistics.median(times),
            "min": min(times),
            "max": max(times),
        },
        "click_to_page_median_s": statistics.median(r["click_to_page_s"] for r in runs),
        "page_to_overlay_median_s": statistics.median(r["page_to_overlay_s"] for r in runs),
        "result_page_requests_per_upload": sorted({r["result_page_requests"] for r in runs}),
        "runs": runs,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
