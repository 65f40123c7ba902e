"""JSON API, version 1, with its OpenAPI document."""
from __future__ import annotations

from flask import (Blueprint, abort, g, jsonify, redirect, render_template, request,
                   send_from_directory, url_for)
from swagger_ui_bundle import swagger_ui_path

from app import dicomweb, views
from app.store import public_schema

bp = Blueprint("api", __name__, url_prefix="/api/v1")
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
    if g.get("one_off"):
        d["links"] = None
        return d
    files = {name: url_for("views.download", result_id=row.id, name=name, _external=False)
             for name in ("overlay.png", "mask.png", "image.png", "mask_rle.txt")}
    d["links"] = {
        "self": url_for("api.get_prediction", result_id=row.id),
        "page": url_for("views.result", result_id=row.id),
        "overlay": files["overlay.png"], "mask": files["mask.png"], "image": files["image.png"],
        "rle": files["mask_rle.txt"],
        "seg": url_for("views.seg", result_id=row.id) if row.source_format == "DICOM" else None,
    }
    return d


@bp.post("/predictions")
@views.limiter.limit(views.upload_limit)
def create_predictions():
    """POST /api/v1/predictions: analyse one or many uploaded files."""
    files = request.files.getlist("files") + request.files.getlist("file")
    outcome = views.handle_files(files)
    body = {
        "batch": outcome.batch,
        "results": [result_json(row) for _, row in outcome.results],
        "errors": [{"file": e["file"], "code": e["code"], "message": e["message"]}
                   for e in outcome.errors],
    }
    status = 201 if outcome.results else views.error_status(outcome.errors)
    return jsonify(body), status


@bp.get("/predictions")
def list_predictions():
    """GET /api/v1/predictions: the caller's results, newest or most probable first."""
    sort = request.args.get("sort", "newest")
    rows = views.store().list(views.current_owner(), "probability" if sort == "probability"
                              else "newest")
    return jsonify(results=[result_json(r) for r in rows])


@bp.get("/predictions/<result_id>")
def get_prediction(result_id: str):
    """GET /api/v1/predictions/<id>: one of the caller's results."""
    row = views.store().get(result_id, views.current_owner())
    if row is None:
        abort(404, description="No such prediction.")
    return jsonify(result_json(row))


@bp.get("/csrf-token")
def csrf_token():
    """The CSRF token of the caller's browser session, for cookie-authenticated POSTs; a
    caller without a session gets one here (its cookie holds the owner and the token)."""
    from app.access import csrf_token as token
    views.current_owner()
    return jsonify(csrf_token=token())


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI document (result schema made from app.store.FIELDS)."""
    return jsonify(OPENAPI)


_LINKS = {"type": ["object", "null"],
          "description": "URLs of the result's page and files, for the caller's session or "
                         "token. null when the call carried neither a bearer token nor a "
                         "session cookie: such a call gets no cookie and could not open the "
                         "links, so send a token (or first GET /api/v1/csrf-token to start a "
                         "session) to read results back later",
          "properties": {k: {"type": ["string", "null"] if k == "seg" else "string"}
                         for k in ("self", "page", "overlay", "mask", "image", "rle", "seg")}}
_RESULT = dict(public_schema())
_RESULT["properties"] = dict(_RESULT["properties"], links=_LINKS)
_RESULT["required"] = sorted(_RESULT["properties"])
_ERROR = {"type": "object", "properties": {"file": {"type": ["string", "null"]},
                                           "code": {"type": "string"},
                                           "message": {"type": "string"}}}
OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "pneumo API", "version": "1",
             "description": "Pneumothorax segmentation of chest X-rays. Decision support, "
                            "not a diagnosis."},
    "paths": {
        "/api/v1/predictions": {
            "post": {
                "summary": "Analyse one or many DICOM/PNG/JPEG files",
                "requestBody": {"content": {"multipart/form-data": {"schema": {
                    "type": "object", "properties": {"files": {
                        "type": "array", "items": {"type": "string", "format": "binary"}}}}}}},
                "responses": {
                    "201": {"description": "at least one file analysed", "content": {
                        "application/json": {"schema": {"type": "object", "properties": {
                            "batch": {"type": ["string", "null"],
                                      "description": "the batch id when several files were "
                                                     "sent (its page: /batches/<id>), else null"},
                            "results": {"type": "array", "items": _RESULT},
                            "errors": {"type": "array", "items": _ERROR}}}}}},
                    "400": {"description": "no file, or unreadable image"},
                    "413": {"description": "too large or too many files"},
                    "415": {"description": "not a DICOM, PNG or JPEG"},
                    "422": {"description": "DICOM that cannot be shown (colour, multi-frame, no pixels)"},
                },
            },
            "get": {"summary": "The caller's predictions",
                    "parameters": [{"name": "sort", "in": "query", "schema": {
                        "type": "string", "enum": ["newest", "probability"]}}],
                    "responses": {"200": {"description": "list"}}},
        },
        "/api/v1/csrf-token": {
            "get": {"summary": "The browser session's CSRF token: a POST that carries the "
                               "session cookie sends it as X-CSRF-Token (bearer calls need none)",
                    "responses": {"200": {"description": "the token", "content": {
                        "application/json": {"schema": {"type": "object", "properties": {
                            "csrf_token": {"type": "string"}}}}}}}},
        },
        "/api/v1/predictions/{id}": {
            "get": {"summary": "One prediction of the caller",
                    "parameters": [{"name": "id", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "the prediction",
                                          "content": {"application/json": {"schema": _RESULT}}},
                                  "404": {"description": "unknown, or another user's"}}},
        },
    },
}
OPENAPI["paths"].update(dicomweb.OPENAPI_PATHS)  # STOW-RS, documented in app/dicomweb.py
