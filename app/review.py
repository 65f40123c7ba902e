"""The radiologist's verdict on a result, and the model's running agreement with them.

* ``POST /results/<id>/review`` (the result page's form) and ``POST
  /api/v1/predictions/<id>/review`` (JSON): agree, or disagree with a reason (missed,
  false alarm, wrong extent, other), with an optional corrected mask drawn on the
  page's canvas. Radiologists and admins review their team's results.
* ``GET /agreement`` and ``GET /api/v1/agreement``: the model's sensitivity and
  specificity against the team's reviews, per operating point, with counts.
"""

from __future__ import annotations

import time

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for

from app.clinical import ReviewError, agreement, check_review, mask_from_png
from app.context import current_scope, current_user, readable_result, services, store
from app.store.records import REVIEW_REASONS, Review, newest_correction

bp = Blueprint("review", __name__)


def _reviewer():
    """The logged-in radiologist or admin, else 403."""
    user = current_user()
    if user is None or not user.reads_team:
        abort(403, description="Only a radiologist or an admin of the team reviews results.")
    return user


def _keep(result_id: str, agrees: bool, reason: str | None, mask_png: str | None) -> Review:
    user = _reviewer()
    row = readable_result(result_id)
    reason = check_review(agrees, reason)
    corrected = (
        mask_from_png(mask_png, (int(row.meta.get("rows", 0)), int(row.meta.get("columns", 0))))
        if mask_png
        else None
    )
    review = Review(row.id, user.owner, user.username, time.time(), agrees, reason, corrected)
    store().reviews.add(review)
    services().sender.reviewed(row)  # the PACS hears the reviewer too
    return review


@bp.post("/results/<result_id>/review")
def review_form(result_id: str):
    """The result page's review form."""
    verdict = request.form.get("verdict")
    if verdict not in ("agree", "disagree"):
        abort(400, description="Choose agree or disagree.")
    try:
        _keep(
            result_id,
            verdict == "agree",
            request.form.get("reason") or None,
            request.form.get("mask_png") or None,
        )
    except ReviewError as exc:
        abort(400, description=str(exc))
    flash("Your review was saved.")
    return redirect(url_for("views.result", result_id=result_id) + "#review", 303)


@bp.post("/api/v1/predictions/<result_id>/review")
def review_api(result_id: str):
    """JSON ``{"agrees": bool, "reason": str?, "mask_png": data URL?}``; 201 with the
    review."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("agrees"), bool):
        return jsonify(
            error={
                "code": "bad_review",
                "message": 'Send JSON {"agrees": true|false, "reason": ...}.',
            }
        ), 400
    try:
        review = _keep(result_id, body["agrees"], body.get("reason"), body.get("mask_png"))
    except ReviewError as exc:
        return jsonify(error={"code": "bad_review", "message": str(exc)}), 400
    return jsonify(review.to_dict()), 201


@bp.get("/api/v1/predictions/<result_id>/reviews")
def reviews_api(result_id: str):
    """Every reviewer's verdict on a result the caller may read."""
    readable_result(result_id)
    reviews = store().reviews.for_result(result_id)
    newest = newest_correction(reviews)
    listed = []
    for review in reviews:
        d = review.to_dict()
        if review is newest:  # the newest correction as a PNG too (the page's reviewer layer)
            d["corrected_mask_png"] = url_for(
                "views.download", result_id=result_id, name="corrected_mask.png"
            )
        listed.append(d)
    return jsonify(reviews=listed)


def _agreement() -> dict:
    _reviewer()
    since = request.args.get("days", type=float)
    start = time.time() - since * 86400 if since else 0.0
    return agreement(store().reviews.reviewed(current_scope(), start))


@bp.get("/agreement")
def agreement_page():
    """The model's running agreement with the team's reviews."""
    return render_template(
        "agreement.html", a=_agreement(), reasons=REVIEW_REASONS, days=request.args.get("days", "")
    )


@bp.get("/api/v1/agreement")
def agreement_api():
    """The same as JSON."""
    return jsonify(_agreement())
