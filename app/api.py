"""JSON API, version 1 (its OpenAPI document is :mod:`app.openapi`)."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from swagger_ui_bundle import swagger_ui_path

from app.context import (
    analyser,
    csrf_token as session_csrf_token,
    current_owner,
    current_scope,
    limiter,
    readable_result,
    store,
    upload_limit,
)
from app.openapi import OPENAPI
from app.store.results import BadCursor
from app.service import uploaded_items

bp = Blueprint("api", __name__, url_prefix="/api/v1")
#: Results per page of ``GET /api/v1/predictions`` (default, most).
API_PAGE, API_PAGE_MAX = 200, 1000
docs_bp = Blueprint("api_docs", __name__)

#: Swagger UI's files that the reference page loads (from the swagger-ui-bundle package:
#: nothing is fetched from the internet).
SWAGGER_ASSETS = {"swagger-ui-bundle.js", "swagger-ui.css"}


@docs_bp.get("/api/docs")
def api_docs():
    """An interactive reference of the JSON API, drawn from its OpenAPI document."""
    return render_template("api_docs.html")


@docs_bp.get("/api/docs/assets/<name>")
def api_docs_asset(name: str):
    """Swagger UI's script and style sheet, from the installed package."""
    if name not in SWAGGER_ASSETS:
        abort(404)
    return send_from_directory(swagger_ui_path, name, max_age=3600)


@docs_bp.get("/docs")
def docs_redirect():
    """``/docs`` is where people look first."""
    return redirect(url_for("api_docs.api_docs"), 302)


def result_json(row) -> dict:
    """A result's public JSON with links to its page and files (``links`` is null for a
    one-off call, which has no session or token to read them with)."""
    d = row.public_dict()
    if row.owner != current_owner():  # a team member's upload: its file name may name the patient
        d["file"] = ""
    if g.get("one_off"):
        d["links"] = None
        return d
    files = {
        name: url_for("views.download", result_id=row.id, name=name, _external=False)
        for name in ("overlay.png", "mask.png", "image.png", "mask_rle.txt")
    }
    d["links"] = {
        "self": url_for("api.get_prediction", result_id=row.id),
        "page": url_for("views.result", result_id=row.id),
        "overlay": files["overlay.png"],
        "mask": files["mask.png"],
        "image": files["image.png"],
        "rle": files["mask_rle.txt"],
        "seg": url_for("views.seg", result_id=row.id) if row.source_format == "DICOM" else None,
    }
    return d


@bp.post("/predictions")
@limiter.limit(upload_limit)
def create_predictions():
    """POST /api/v1/predictions: analyse one or many uploaded files."""
    files = request.files.getlist("files") + request.files.getlist("file")
    outcome = analyser().analyse_many(
        uploaded_items(files), current_owner(), as_batch=True, source="API"
    )
    body = {
        "batch": outcome.batch,
        "results": [result_json(row) for _, row in outcome.results],
        "errors": [e.to_dict() for e in outcome.errors],
    }
    return jsonify(body), 201 if outcome.results else outcome.status


@bp.get("/predictions")
def list_predictions():
    """GET /api/v1/predictions: the caller's results, newest or most probable first."""
    sort = request.args.get("sort", "newest")
    if sort not in ("newest", "probability"):
        abort(400, description="sort must be newest or probability.")
    limit = request.args.get("limit", str(API_PAGE), type=str)
    if not limit.isdigit() or not 1 <= int(limit) <= API_PAGE_MAX:
        abort(400, description=f"limit must be a whole number from 1 to {API_PAGE_MAX}.")
    try:
        page = store().results.page(
            current_scope(), sort, int(limit), request.args.get("cursor") or None
        )
    except BadCursor:
        abort(400, description="cursor is not one this list gave (start again without it).")
    following = (
        url_for("api.list_predictions", sort=sort, limit=limit, cursor=page.next)
        if page.next
        else None
    )
    return jsonify(results=[result_json(r) for r in page.rows], total=page.total, next=following)


@bp.get("/predictions/<result_id>")
def get_prediction(result_id: str):
    """GET /api/v1/predictions/<id>: one of the caller's results."""
    row = readable_result(result_id, missing="No such prediction.")
    return jsonify(result_json(row))


@bp.get("/csrf-token")
def csrf_token():
    """The CSRF token of the caller's browser session, for cookie-authenticated POSTs; a
    caller without a session gets one here (its cookie holds the owner and the token)."""
    current_owner()
    return jsonify(csrf_token=session_csrf_token())


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI document (result schema made from app.store.FIELDS)."""
    return jsonify(OPENAPI)
