"""A real browser (Debian chromium driven by Playwright) against gunicorn on localhost."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def serve(model_dir: Path, tmp: Path):
    """gunicorn with ``model_dir`` on a free loopback port; returns (server, url)."""
    from helpers.localserver import LocalServer

    server = LocalServer(model_dir, tmp / "instance", log_path=tmp / "gunicorn.log")
    return server, server.url


def orange_pixels(png: bytes) -> int:
    import io

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return int(((r - b > 60) & (r - g > 15)).sum())


def blue_pixels(png: bytes) -> int:
    """Pixels in the reviewer's colour (sky blue, over grey)."""
    import io

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return int(((b - r > 60) & (g - r > 25)).sum())


def coloured_pixels(png: bytes) -> int:
    import io

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((a.max(axis=2) - a.min(axis=2) > 30).sum())


@pytest.fixture()
def browser_page():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


def _upload_and_wait(page, url, dicom):
    page.goto(url + "/")
    page.set_input_files("#files", str(dicom))
    page.click("#submit")
    page.wait_for_url("**/results/**", timeout=120_000)
    page.wait_for_selector("#canvas[data-ready='1']", timeout=60_000)


def test_upload_view_overlay_in_browser(browser_page, tiny_model_folder, positive_dicom, tmp_path):
    proc, url = serve(tiny_model_folder, tmp_path)
    try:
        page = browser_page
        _upload_and_wait(page, url, positive_dicom)
        assert "Pneumothorax suspected" in page.inner_text("#verdict")
        page.select_option("#mode", "off")
        off = page.locator("#canvas").screenshot()
        page.select_option("#mode", "filled")
        page.eval_on_selector(
            "#opacity", "e => { e.value = 80; e.dispatchEvent(new Event('input')); }"
        )
        assert page.get_attribute("#canvas", "data-opacity") == "80"
        filled = page.locator("#canvas").screenshot()
        assert orange_pixels(off) < 50
        assert orange_pixels(filled) > 10_000
        page.select_option("#mode", "contour")
        assert page.get_attribute("#canvas", "data-mode") == "contour"
        contour = page.locator("#canvas").screenshot()
        # the outline (built in the browser from mask.png) is a thin band of the filled area
        assert 500 < orange_pixels(contour) < orange_pixels(filled) / 2
        page.select_option("#mode", "heatmap")
        assert coloured_pixels(page.locator("#canvas").screenshot()) > 10_000
        assert coloured_pixels(off) < 50
        page.keyboard.press("o")
        assert page.get_attribute("#canvas", "data-mode") == "off"
        # O works whatever control has focus: the overlay menu, the opacity slider
        page.focus("#mode")
        page.keyboard.press("o")
        assert page.get_attribute("#canvas", "data-mode") == "heatmap"
        page.focus("#opacity")
        page.keyboard.press("O")
        assert page.get_attribute("#canvas", "data-mode") == "off"
        # ? shows the keys, Esc hides them
        assert not page.is_visible("#keys-help")
        page.keyboard.press("?")
        assert page.is_visible("#keys-help") and "overlay on / off" in page.inner_text("#keys-help")
        page.keyboard.press("Escape")
        assert not page.is_visible("#keys-help")
        page.goto(url + "/worklist")
        assert page.locator("img.thumb").count() == 1
        import re

        assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", page.inner_text("td.when"))
        assert re.fullmatch(r"\(.+, UTC[+-]\d{2}:\d{2}\)", page.inner_text("#tz"))
        # deleting asks first; Cancel keeps the result, the confirmation removes it
        page.click("img.thumb")
        page.wait_for_url("**/results/**")
        result_url = page.url
        page.click("#delete-button")
        assert "Delete this result permanently?" in page.inner_text("#confirm-delete")
        page.click("#cancel-delete")
        assert page.url == result_url
        page.click("#delete-button")
        page.click("#confirm-delete-button")
        page.wait_for_url("**/worklist")
        assert page.locator("img.thumb").count() == 0 and "Result deleted." in page.content()
        # the API reference renders the OpenAPI document with the packaged Swagger UI
        page.click("text=API reference")
        page.wait_for_selector(".opblock", timeout=30_000)
        assert page.locator(".opblock").count() >= 4
        assert "/api/v1/predictions" in page.inner_text("#swagger-ui")
    finally:
        proc.stop()
    log = (tmp_path / "gunicorn.log").read_text()
    assert "on CPU" in log or "on GPU" in log


@pytest.mark.bundled
def test_viewer_fits_the_window_with_legend(positive_dicom, tmp_path):
    """With the bundled model: the whole X-ray is inside the viewport by default at
    1024x600, 1280x720 and 1920x1080 (screenshots of the last two go to docs/), and
    the heat map has a legend with the mask threshold marked."""
    from playwright.sync_api import sync_playwright
    from pneumo.inference.predictor import DEFAULT_MODEL_DIR
    from conftest import ROOT

    proc, url = serve(DEFAULT_MODEL_DIR, tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            _upload_and_wait(page, url, positive_dicom)
            result_url = page.url
            for width, height in ((1024, 600), (1280, 720), (1920, 1080)):
                page.set_viewport_size({"width": width, "height": height})
                page.goto(result_url)
                page.wait_for_selector("#canvas[data-ready='1']", timeout=60_000)
                box = page.locator("#canvas").bounding_box()
                assert box["x"] >= 0 and box["y"] >= 0, (width, height, box)
                assert box["x"] + box["width"] <= width + 1, (width, height, box)
                assert box["y"] + box["height"] <= height + 1, (width, height, box)
                assert box["height"] > 0.6 * height  # fitted, not shrunk to a stamp
                if width >= 1280:
                    page.screenshot(path=str(ROOT / "docs" / f"viewer_{width}x{height}.png"))
            assert page.locator("#legend").is_hidden()
            page.select_option("#mode", "heatmap")
            assert page.locator("#legend").is_visible()
            from pneumo.inference.card import read_card

            threshold = read_card(DEFAULT_MODEL_DIR).postprocess.pixel_threshold
            rid = result_url.rstrip("/").rsplit("/", 1)[1]
            point = page.request.get(f"{url}/api/v1/predictions/{rid}").json()["operating_point"]
            # the heat map shows pixel x image probability: the marker sits where the
            # outline's pixel threshold falls on that scale
            assert float(page.get_attribute("#legend-bar", "data-threshold")) == pytest.approx(
                threshold * point["heat_scale"]
            )
            page.screenshot(path=str(ROOT / "docs" / "result_heatmap_legend.png"))
            browser.close()
    finally:
        proc.stop()


def test_layout_holds_still_across_modes_and_results(tiny_model_folder, positive_dicom, tmp_path):
    """The image's box is the same in every overlay mode and for results whose texts differ
    (a DICOM with a long file name, a PNG with a short one), at 1280x720 and 1920x1080; at
    1280x720 the downloads, Delete and the window/level readout are on screen unscrolled."""
    from playwright.sync_api import sync_playwright
    from conftest import SIIM

    png = next(SIIM.glob("ktlProject0/data/train/images/*.png"))
    long_name = tmp_path / ("a_long_modality_export_name_for_layout_" * 3 + ".dcm")
    long_name.write_bytes(positive_dicom.read_bytes())
    proc, url = serve(tiny_model_folder, tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            # several files at once: a batch page of their own, which a reload keeps
            page.goto(url + "/")
            page.set_input_files("#files", [str(long_name), str(png)])
            page.click("#submit")
            page.wait_for_url("**/batches/**", timeout=120_000)
            batch_text = page.inner_text("#batch-results")
            page.reload()
            assert page.inner_text("#batch-results") == batch_text
            assert page.locator("#batch-results img.thumb").count() == 2
            page.click("#order-upload")
            assert page.url.endswith("?order=upload")
            results = []
            for f in (long_name, png):
                _upload_and_wait(page, url, f)
                results.append(page.url)
            for width, height in ((1280, 720), (1920, 1080)):
                page.set_viewport_size({"width": width, "height": height})
                boxes = set()
                for result in results:
                    page.goto(result)
                    page.wait_for_selector("#canvas[data-ready='1']")
                    for mode in ("filled", "contour", "heatmap", "off", "filled"):
                        page.select_option("#mode", mode)
                        page.wait_for_timeout(50)
                        box = page.locator("#canvas").bounding_box()
                        boxes.add(tuple(round(box[k]) for k in ("x", "y", "width", "height")))
                    if (width, height) == (1280, 720):
                        for sel in ("#delete-button", "ul.downloads", "#wl", "#reset"):
                            b = page.locator(sel).bounding_box()
                            assert b and b["y"] + b["height"] <= height, (sel, b)
                        assert page.evaluate("document.scrollingElement.scrollTop") == 0
                assert len(boxes) == 1, (width, boxes)
                (x, y, w, h) = boxes.pop()
                assert h > 0.7 * height and y + h <= height  # a square film fills the height
            browser.close()
    finally:
        proc.stop()


def test_review_tools_draw_undo_and_save_a_corrected_mask(
    browser_page, tiny_model_folder, positive_dicom, tmp_path
):
    """Issue 24: a radiologist corrects the mask with the brush, the eraser and undo, then
    saves a disagreeing review; the agreement page counts it. Screenshots of both go to
    ``PNEUMO_SCREENSHOT_DIR`` when set (docs/ holds the ones from such a run)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from helpers.localserver import LocalServer

    instance = tmp_path / "instance"
    env = dict(os.environ, PNEUMO_DATA_DIR=str(instance / "data"))
    for name, role in (("rita", "radiologist"), ("ulla", "uploader")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "app.cli",
                "create-user",
                name,
                "--role",
                role,
                "--password-stdin",
            ],
            input="correct horse battery",
            text=True,
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
    server = LocalServer(tiny_model_folder, instance, log_path=tmp_path / "gunicorn.log")
    shots = Path(os.environ.get("PNEUMO_SCREENSHOT_DIR", tmp_path))
    try:
        page = browser_page
        page.goto(server.url + "/login")
        page.fill("input[name=username]", "rita")
        page.fill("input[name=password]", "correct horse battery")
        page.click("button[type=submit]")
        _upload_and_wait(page, server.url, positive_dicom)
        viewer = page.locator("#canvas")
        page.keyboard.press("m")  # correct the mask on the main viewer
        page.wait_for_selector("#canvas[data-editing='1']")
        assert page.is_visible("#editor-tools")
        page.select_option("#mode", "off")  # only the correction in view
        before = blue_pixels(viewer.screenshot())

        def drag(x0, y0, x1, y1):
            box = viewer.bounding_box()
            page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
            page.mouse.down()
            for i in range(1, 11):
                page.mouse.move(
                    box["x"] + (x0 + (x1 - x0) * i / 10) * box["width"],
                    box["y"] + (y0 + (y1 - y0) * i / 10) * box["height"],
                )
            page.mouse.up()

        page.eval_on_selector("#brush-size", "e => { e.value = 30; }")
        page.click("#clear-mask")  # start from an empty mask
        cleared = blue_pixels(viewer.screenshot())
        assert cleared < before or before < 500
        drag(0.15, 0.2, 0.3, 0.6)  # a stroke on the image's left
        painted = blue_pixels(viewer.screenshot())
        assert painted > cleared + 500
        assert page.is_enabled("#undo")
        page.keyboard.press("u")  # undo takes the stroke back
        assert abs(blue_pixels(viewer.screenshot()) - cleared) < 200
        drag(0.15, 0.2, 0.3, 0.6)
        page.keyboard.press("e")  # the eraser
        page.eval_on_selector("#brush-size", "e => { e.value = 40; }")
        drag(0.0, 0.5, 1.0, 0.5)  # erase a band across the stroke
        erased = blue_pixels(viewer.screenshot())
        assert cleared + 100 < erased < painted - 50
        page.keyboard.press("b")
        page.eval_on_selector("#brush-size", "e => { e.value = 30; }")
        page.screenshot(path=str(shots / "review_tools.png"))
        page.check("input[name=verdict][value=disagree]")
        page.select_option("#reason", "wrong_extent")
        page.click("#review-submit")
        page.wait_for_selector("#reviews")
        assert "wrong extent" in page.inner_text("#reviews")
        assert "corrected mask" in page.inner_text("#reviews")
        # after the reload: the saved correction is a layer of its own, in its own colour
        page.wait_for_selector("#canvas[data-ready='1']", timeout=60_000)
        assert "Corrected mask by rita" in page.inner_text("#corrected-mask")
        page.select_option("#mode", "off")
        bare = blue_pixels(viewer.screenshot())
        page.select_option("#mode", "reviewer")
        shown = blue_pixels(viewer.screenshot())
        assert shown > bare + 500
        page.select_option("#mode", "both")  # both outlines: the model's and the reviewer's
        outlines = viewer.screenshot()
        assert bare + 50 < blue_pixels(outlines) < shown  # an outline, not the filled region
        result_url = page.url.split("#")[0]
        reviews = page.evaluate(
            "url => fetch(url).then(r => r.json())",
            result_url.replace("/results/", "/api/v1/predictions/") + "/reviews",
        )["reviews"]
        assert reviews[0]["corrected_mask_rle"] not in (None, "-1")
        png = page.evaluate(
            "url => fetch(url).then(r => r.status)", server.url + reviews[0]["corrected_mask_png"]
        )
        assert png == 200
        # reopening the editor starts from the saved correction, not the model's outline
        page.select_option("#mode", "off")
        page.keyboard.press("m")
        page.wait_for_selector("#canvas[data-editing='1']")
        assert abs(blue_pixels(viewer.screenshot()) - shown) < 0.2 * shown  # as saved
        page.keyboard.press("m")
        page.keyboard.press("n")  # the next unreviewed study: none is left
        page.wait_for_url("**/worklist?status=unreviewed")
        assert "No unreviewed studies left." in page.content()
        page.goto(server.url + "/worklist")
        assert "disagreed" in page.inner_text("table.worklist")
        page.goto(server.url + "/agreement")
        assert "1 reviewed result" in page.inner_text("#agreement-counts")
        page.screenshot(path=str(shots / "agreement.png"), full_page=True)
    finally:
        server.stop()
    from app.store.repository import Store

    store = Store(instance / "data")
    rid = store.results.all_ids()[0]
    review = store.reviews.for_result(rid)[0]
    assert review.reviewer_name == "rita" and review.reason == "wrong_extent"
    from pneumo.io import rle

    row = store.results.get_any(rid)
    corrected = rle.decode(review.corrected_rle, (row.meta["rows"], row.meta["columns"]))
    model = rle.decode(row.rle, corrected.shape)
    rows, cols = corrected.any(axis=1).nonzero()[0], corrected.any(axis=0).nonzero()[0]
    assert corrected.sum() > 1000 and cols.max() < corrected.shape[1] * 0.45  # the stroke only
    assert rows.min() > corrected.shape[0] * 0.1 and rows.max() < corrected.shape[0] * 0.7
    middle = corrected[int(corrected.shape[0] * 0.49) : int(corrected.shape[0] * 0.51)]
    assert not middle.any()  # the erased band
    assert model.sum() > corrected.sum()  # the model's larger outline was replaced


def test_worklist_shows_fifteen_rows_at_1280x720(tiny_model_folder, positive_dicom, tmp_path):
    """A reading room's screen: at 1280x720 a radiologist sees at least 15 worklist rows
    without scrolling, each one line high, however long the (SIIM-style) file names and the
    uploaders' names are, and nothing runs off the side."""
    import dataclasses

    from playwright.sync_api import sync_playwright

    from app.store.records import new_id
    from app.store.repository import Store

    store = Store(tmp_path / "instance" / "data")
    store.init()
    store.accounts.create("rad", "a-long-password-1", "A", "radiologist")
    sender = store.accounts.create(
        "an_uploader_with_a_long_name", "a-long-password-1", "A", "uploader"
    )
    store.close()
    proc, url = serve(tiny_model_folder, tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(url + "/login")
            page.fill("input[name=username]", "rad")
            page.fill("input[name=password]", "a-long-password-1")
            page.click("button[type=submit]")
            _upload_and_wait(page, url, positive_dicom)
            store = Store(tmp_path / "instance" / "data")
            first = store.results.get_any(store.results.all_ids()[0])
            for i in range(24):  # a teammate's copies with long names, flags and batches
                row = dataclasses.replace(
                    first,
                    id=new_id(),
                    owner=f"user:{sender}",
                    created=first.created - i - 1,
                    file_name=f"1.2.276.0.7230010.3.1.4.8323329.{1000 + i}.1517875165."
                    f"{878027 + i}.dcm",
                    finding_below_threshold=i % 2 == 0,
                    batch="b" * 22 if i % 3 == 0 else "",
                )
                staged = store.results.stage(row.id)
                staged.put("thumb.jpg", store.results.read_file(first.id, "thumb.jpg"))
                store.results.commit(row, staged)
            store.close()
            page.goto(url + "/worklist")
            boxes = [r.bounding_box() for r in page.query_selector_all("table.worklist tbody tr")]
            assert len(boxes) == 25 and page.locator("td.uploader").count() == 25
            in_view = [b for b in boxes if b["y"] + b["height"] <= 720]
            assert len(in_view) >= 15, [round(b["y"]) for b in boxes]
            assert max(b["height"] for b in boxes) < 40  # one line each: nothing wraps
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1280, width  # and nothing runs off the side
            browser.close()
    finally:
        proc.stop()
