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
    team_names,
    upload_limit,
)
from app.openapi import OPENAPI
from app.listing import FILTER_FIELDS, read_filter
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
    results = []
    for _, row in outcome.results:  # a file sent before links to its first result
        results.append(dict(result_json(row), uploaded_before=row.id in outcome.repeated))
    body = {
        "batch": outcome.batch,
        "results": results,
        "errors": [e.to_dict() for e in outcome.errors],
    }
    created = any(not r["uploaded_before"] for r in results)
    return jsonify(body), 201 if created else 200 if results else outcome.status


@bp.get("/predictions")
def list_predictions():
    """GET /api/v1/predictions: the caller's results, newest or most probable first, a page
    at a time, filtered by the query's status, verdict, from, to, batch and uploader."""
    if "q" in request.args:
        abort(
            400,
            description="search with POST /api/v1/predictions/search: a search "
            "text (a patient's name) never goes in a URL.",
        )
    page, sort, limit, chosen = _page(request.args)
    following = (
        url_for("api.list_predictions", sort=sort, limit=limit, cursor=page.next, **chosen)
        if page.next
        else None
    )
    return jsonify(results=[result_json(r) for r in page.rows], total=page.total, next=following)


@bp.post("/predictions/search")
def search_predictions():
    """POST /api/v1/predictions/search: the list of GET /api/v1/predictions searched by
    file name, accession number or patient (``q``), with the same filters, all in a JSON
    body; ``cursor`` of the next page is the answer's ``next_cursor``."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(
            400,
            description="send a JSON object: q, and any of status, verdict, from, to, "
            "batch, uploader, sort, limit, cursor.",
        )
    page, _, _, _ = _page({k: "" if v is None else str(v) for k, v in body.items()})
    return jsonify(
        results=[result_json(r) for r in page.rows], total=page.total, next_cursor=page.next
    )


def _page(values):
    """One page of the caller's results as ``values`` ask (sort, limit, cursor and the
    filters of :func:`app.listing.read_filter`); a 400 naming the bad value otherwise."""
    sort = values.get("sort") or "newest"
    if sort not in ("newest", "probability"):
        abort(400, description="sort must be newest or probability.")
    limit = str(values.get("limit") or API_PAGE)
    if not limit.isdigit() or not 1 <= int(limit) <= API_PAGE_MAX:
        abort(400, description=f"limit must be a whole number from 1 to {API_PAGE_MAX}.")
    owners = {name: owner for owner, name in team_names().items()}
    try:
        where = read_filter(values, owners.get)
    except ValueError as exc:
        abort(400, description=str(exc))
    try:
        page = store().results.page(
            current_scope(), sort, int(limit), values.get("cursor") or None, where=where
        )
    except BadCursor:
        abort(400, description="cursor is not one this list gave (start again without it).")
    chosen = {k: values[k] for k in FILTER_FIELDS if k != "q" and values.get(k)}
    return page, sort, limit, chosen


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
