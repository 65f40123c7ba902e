"""The PACS pages: *Send to PACS* on a result, its send state, and *From PACS* (search
studies, import the chosen ones). They call the sender, the pull and the service,
through :mod:`app.context`; never another entry point."""

from __future__ import annotations

import time

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for

from app.context import analyser, current_owner, current_scope, readable_result, services, store
from app.pacs.client import PacsError, search_studies
from app.pacs.pull import pull_study
from app.pacs.sender import Sender, due, send_result
from app.service import Refusal, UploadOutcome
from app.settings import PacsSettings
from app.store.records import ResultRow

bp = Blueprint("pacs", __name__)


def init_app(app, services) -> None:
    """Register the pages and their template helpers; in a web worker that sends, resume
    the sends a previous process left unfinished."""
    app.jinja_env.globals["pacs_send_state"] = services.store.sends.state
    app.jinja_env.globals["pacs_configured"] = services.settings.pacs.configured
    app.register_blueprint(bp)
    services.resume_sends()


#: The most studies one import may pull.
MAX_STUDIES = 5


def _settings() -> PacsSettings:
    return services().settings.pacs


def _sender() -> Sender:
    return services().sender


@bp.before_app_request
def _retry_on_view():
    """Viewing a result whose send failed (or never finished) retries it in the background."""
    if request.endpoint != "views.result" or not _settings().configured:
        return None
    state = store().sends.state((request.view_args or {}).get("result_id", ""))
    if due(state, _settings(), time.time()):
        row = store().results.get(state.result_id, current_scope())
        if row is not None:
            _sender().queue(row)
    return None


def _own_dicom_result(result_id: str) -> ResultRow:
    row = readable_result(result_id)
    if row.source_format != "DICOM":
        abort(404, description="Only DICOM results have a DICOM Segmentation to send.")
    return row


@bp.post("/results/<result_id>/pacs/send")
def send(result_id: str):
    """Send (or resend, or retry) now and show the outcome on the result page."""
    row = _own_dicom_result(result_id)
    if not _settings().configured:
        abort(409, description="No PACS is configured (PNEUMO_DICOMWEB_URL).")
    if _sender().mode != "web":  # the PACS workers send; this process only enqueues
        _sender().queue(row)
        flash("The result is queued; a PACS worker sends it in a moment.")
        return redirect(url_for("views.result", result_id=row.id), 303)
    state = send_result(store(), _settings(), row)
    if state.state == "sent":
        flash("The DICOM Segmentation was stored on the PACS.")
    elif state.state == "failed":
        flash(f"Sending to the PACS failed: {state.last_error} It will be retried.")
    else:
        flash("The result is being sent to the PACS.")
    return redirect(url_for("views.result", result_id=row.id), 303)


@bp.get("/results/<result_id>/pacs")
def send_state(result_id: str):
    """The send state as JSON (the result page polls it while a send is under way)."""
    row = _own_dicom_result(result_id)
    state = store().sends.state(row.id)
    return jsonify(state.to_dict() if state else {"state": "not sent"})


@bp.get("/pacs")
def search():
    """The "From PACS" page: a study search; chosen studies are imported."""
    settings = _settings()
    query = {
        k: request.args.get(k, "").strip()[:64]
        for k in ("patient_id", "accession", "date_from", "date_to")
    }
    chest_only = request.args.get("all") != "1"
    hits, error = None, None
    if settings.configured and (any(query.values()) or request.args.get("search")):
        try:
            hits = search_studies(settings, **query)
        except (PacsError, ValueError) as exc:
            error = str(exc)
        else:
            if chest_only:
                hits = [h for h in hits if h.is_chest_radiograph]
    return render_template(
        "pacs.html",
        configured=settings.configured,
        query=query,
        hits=hits,
        error=error,
        chest_only=chest_only,
    ), (502 if error else 200)


@bp.post("/pacs/import")
def import_studies():
    """POST /pacs/import: pull the chosen studies and analyse them."""
    settings = _settings()
    if not settings.configured:
        abort(409, description="No PACS is configured (PNEUMO_DICOMWEB_URL).")
    uids = [u for u in request.form.getlist("study") if u][:MAX_STUDIES]
    if not uids:
        abort(400, description="Choose at least one study to import.")
    outcome = UploadOutcome()
    for uid in uids:
        try:
            outcome.merge(pull_study(settings, uid, current_owner(), analyser()))
        except PacsError as exc:
            outcome.entries.append((uid, Refusal(uid, exc.code, exc.http_status, str(exc), exc)))
    if len(outcome.results) == 1 and not outcome.errors:
        return redirect(url_for("views.result", result_id=outcome.results[0][1].id), 303)
    return render_template("upload_summary.html", outcome=outcome), outcome.status
