#!/usr/bin/env python3
"""Screenshots for docs/: upload DICOMs to the app under gunicorn and capture its pages.

    .venv/bin/python scripts/screenshots.py MODEL_DIR OUT_DIR DICOM [DICOM ...]

The last DICOM's result page is captured with the filled overlay, the contour
and the probability heat map (with its legend), its overlay PNG download (with
its "AI output" label), the first result with a sub-threshold finding if any,
then the worklist (sorted by probability), the page of a batch of all the files
uploaded at once, and the API reference.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# the gunicorn harness lives with the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers.localserver import LocalServer  # noqa: E402


def main(model: str, out: Path, dicoms: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    server = LocalServer(model, tempfile.mkdtemp())
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            for dicom in dicoms:
                page.goto(server.url + "/")
                page.set_input_files("#files", dicom)
                page.click("#submit")
                page.wait_for_url("**/results/**", timeout=120_000)
                page.wait_for_selector("#canvas[data-ready='1']")
            page.select_option("#mode", "filled")
            page.eval_on_selector(
                "#opacity", "e => { e.value = 55; e.dispatchEvent(new Event('input')); }"
            )
            page.screenshot(path=str(out / "result_filled.png"))
            page.select_option("#mode", "contour")
            page.screenshot(path=str(out / "result_contour.png"))
            page.select_option("#mode", "heatmap")
            page.screenshot(path=str(out / "result_heatmap.png"))
            overlay = page.request.get(page.url + "/files/overlay.png")
            (out / "overlay_download.png").write_bytes(overlay.body())
            results = page.request.get(server.url + "/api/v1/predictions").json()["results"]
            quiet = [r for r in results if r["finding_below_threshold"]]
            if quiet:
                page.goto(server.url + quiet[0]["links"]["page"])
                page.wait_for_selector("#canvas[data-ready='1']")
                page.select_option("#mode", "heatmap")
                page.screenshot(path=str(out / "result_subthreshold.png"))
            print(f"{len(results)} results, {len(quiet)} with a sub-threshold finding")
            page.goto(server.url + "/worklist?sort=probability")
            page.screenshot(path=str(out / "worklist.png"))
            page.goto(server.url + "/")
            page.set_input_files("#files", dicoms)
            page.click("#submit")
            page.wait_for_url("**/batches/**", timeout=300_000)
            page.screenshot(path=str(out / "batch.png"))
            page.goto(server.url + "/api/docs")
            page.wait_for_selector(".opblock")
            page.screenshot(path=str(out / "api_docs.png"))
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
