"""The clinical loop's reckoning, from results and their reviews: what the reviewer says
the truth was, the model's running agreement with the team's reviews, and the export of
reviewed studies as training data. Pure functions over records and bytes, no request.

**The truth a review gives.** Agreeing: the model's verdict was right. Disagreeing, by
reason: *missed* (there is a pneumothorax the model called negative), *false alarm*
(there is none), *wrong extent* (the verdict was right, the outline was not), *other*
(no verdict can be read from it: counted, but left out of sensitivity and specificity).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.io import rle

from app import renditions
from app.store.records import REVIEW_REASONS, ResultRow, Review
from app.store.results import Results

#: The largest corrected mask a browser may send (a PNG data URL).
MAX_MASK_BYTES = 8 * 1024 * 1024


class ReviewError(ValueError):
    """A review the app cannot keep (a bad reason, a mask that is not a PNG of the
    result's view); the message says which."""


def truth(row: ResultRow, review: Review) -> bool | None:
    """Whether there is a pneumothorax, by the review (``None``: the review cannot say)."""
    return review.present(row.positive)


def check_review(agrees: bool, reason: str | None) -> str | None:
    """The reason to keep (``None`` when agreeing); raises ReviewError for a bad one."""
    if agrees:
        return None
    if not isinstance(reason, str) or reason not in REVIEW_REASONS:
        raise ReviewError(
            "Say why you disagree: one of "
            + ", ".join(f"{k} ({v})" for k, v in REVIEW_REASONS.items())
            + "."
        )
    return reason


def painted(img: Image.Image) -> np.ndarray:
    """Which pixels of a drawn mask are painted: opaque ones where the PNG has an alpha
    channel (the page's canvas), bright ones where it has none (a grey or colour mask:
    black means nothing painted, not everything)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"))[..., 3] > 127
    return np.asarray(img.convert("L")) > 127


def mask_from_png(data_url: str, shape: tuple[int, int]) -> str:
    """A corrected mask drawn in the browser (a PNG data URL of the viewer's rendition:
    painted pixels opaque, see :func:`painted`) as SIIM RLE at the image's ``shape``.

    The PNG's header is checked against the view's size before a pixel is decoded, so a
    small file that would decode huge costs nothing."""
    prefix = "data:image/png;base64,"
    if (
        not isinstance(data_url, str)
        or not data_url.startswith(prefix)
        or len(data_url) > MAX_MASK_BYTES
    ):
        raise ReviewError("The corrected mask must be a PNG drawn on the result page.")
    want = renditions.view_shape(shape)
    unreadable = ReviewError("The corrected mask could not be read as a PNG.")
    try:
        data = base64.b64decode(data_url[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        raise unreadable from None
    # the size from the PNG's own header (signature, IHDR), before any decoder sees it
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise unreadable
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if (height, width) != want:
        raise ReviewError(
            f"The corrected mask is {width} x {height}; the result's view is {want[1]} x {want[0]}."
        )
    try:
        img = Image.open(io.BytesIO(data), formats=["PNG"])
        img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise unreadable from None
    mask = painted(img)
    if mask.shape != tuple(shape):
        mask = (
            np.asarray(
                Image.fromarray(mask.astype(np.uint8) * 255).resize(
                    (shape[1], shape[0]), Image.NEAREST
                )
            )
            > 127
        )
    return rle.encode(mask)


@dataclass(frozen=True)
class Rate:
    """A proportion with its counts and a 95 % Wilson interval."""

    hits: int
    total: int

    @property
    def value(self) -> float | None:
        return self.hits / self.total if self.total else None

    @property
    def interval(self) -> tuple[float, float] | None:
        if not self.total:
            return None
        z, n, p = 1.959964, self.total, self.hits / self.total
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def to_dict(self) -> dict:
        return {"value": self.value, "hits": self.hits, "total": self.total, "ci95": self.interval}


def thresholds(row: ResultRow) -> dict[str, float]:
    """The operating points a result can be judged at, on its shown scale: its own
    (by name) and, where the card has one, the triage point (the review band's low end)."""
    point = row.operating_point or {}
    out = {point.get("name") or "operating point": float(row.threshold)}
    band = point.get("review_band")
    if band and "triage" not in out:
        out["triage"] = float(band[0])
    return out


def agreement(pairs: list[tuple[ResultRow, Review]]) -> dict:
    """The model against the team's reviews: counts by review, and per operating point
    sensitivity and specificity with counts and 95 % intervals."""
    reasons = {k: 0 for k in REVIEW_REASONS}
    agreed, undetermined = 0, 0
    tallies: dict[str, dict[str, int]] = {}
    for row, review in pairs:
        agreed += review.agrees
        if not review.agrees and review.reason in reasons:
            reasons[review.reason] += 1
        truly = truth(row, review)
        if truly is None:
            undetermined += 1
            continue
        for name, threshold in thresholds(row).items():
            said = row.probability >= threshold
            t = tallies.setdefault(name, {"tp": 0, "fn": 0, "tn": 0, "fp": 0})
            t[("tp" if said else "fn") if truly else ("fp" if said else "tn")] += 1
    points = {}
    for name, t in tallies.items():
        points[name] = {
            "sensitivity": Rate(t["tp"], t["tp"] + t["fn"]).to_dict(),
            "specificity": Rate(t["tn"], t["tn"] + t["fp"]).to_dict(),
            **t,
        }
    return {
        "reviewed": len(pairs),
        "agreed": agreed,
        "disagreed": len(pairs) - agreed,
        "reasons": reasons,
        "undetermined": undetermined,
        "operating_points": points,
    }


def label_mask(row: ResultRow, review: Review) -> str | None:
    """The mask the review stands for, as SIIM RLE: the corrected one, else the model's
    where the review agrees or says false alarm (empty); ``None`` when unknown (missed,
    wrong extent or other, without a drawing)."""
    if review.corrected_rle is not None:
        return review.corrected_rle
    if review.agrees:
        return row.rle if row.positive else "-1"
    if review.reason == "false_alarm":
        return "-1"
    return None


def export_reviews(results: Results, pairs: list[tuple[ResultRow, Review]], out: Path) -> dict:
    """Write reviewed studies as training data into ``out``: ``images/<id>.png`` (the
    displayed X-ray), ``masks/<id>.png`` and ``reviews-rle.csv`` (SIIM ``ImageId,
    EncodedPixels``, one ``-1`` row for no pneumothorax) for each study whose mask is
    known, and ``labels.csv`` (every reviewed study: label, reason, reviewer, whether it
    has a mask). Returns the counts. No patient identifier is written: files are named by
    result id."""
    images, masks = out / "images", out / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    counts = {"studies": 0, "with_mask": 0, "positive": 0, "skipped": 0}
    with (
        open(out / "reviews-rle.csv", "w", newline="") as rle_file,
        open(out / "labels.csv", "w", newline="") as label_file,
    ):
        rle_csv = csv.writer(rle_file)
        rle_csv.writerow(["ImageId", "EncodedPixels"])
        labels = csv.writer(label_file)
        labels.writerow(
            [
                "image_id",
                "label",
                "agrees",
                "reason",
                "reviewer",
                "reviewed",
                "model",
                "model_probability",
                "has_mask",
            ]
        )
        for row, review in pairs:
            try:
                pixels = renditions.result_pixels(results, row)
            except renditions.ResultGone:
                counts["skipped"] += 1
                continue
            truly = truth(row, review)
            mask_rle = label_mask(row, review)
            (images / f"{row.id}.png").write_bytes(renditions.png_bytes(pixels))
            if mask_rle is not None:
                mask = rle.decode(mask_rle, pixels.shape)
                (masks / f"{row.id}.png").write_bytes(
                    renditions.png_bytes(mask.astype(np.uint8) * 255)
                )
                rle_csv.writerow([row.id, mask_rle if mask.any() else "-1"])
                counts["with_mask"] += 1
            labels.writerow(
                [
                    row.id,
                    "" if truly is None else int(truly),
                    int(review.agrees),
                    review.reason or "",
                    review.reviewer_name,
                    f"{review.created:.0f}",
                    row.model,
                    f"{row.probability:.4f}",
                    int(mask_rle is not None),
                ]
            )
            counts["studies"] += 1
            counts["positive"] += bool(truly)
    return counts
