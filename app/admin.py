"""The admin's pages: the team's users (roles, API tokens to revoke) and the audit trail.

Every access to patient data is an event in the store's append-only audit trail
(:func:`record_request`, an ``after_request`` hook: result views, reveals of patient
identifiers, downloads, deletions, sends to the PACS, reviews), with who, when, which
result and from where; never a patient identifier. An admin reads the team's events at
``/admin/audit`` (and as CSV or JSON); ``pneumo audit --since`` exports them all.
"""

from __future__ import annotations

import functools
import time

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    has_request_context,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from app.context import current_owner, current_user, settings, store
from app.audit import day_start, events_csv
from app.store.records import ROLES

bp = Blueprint("admin", __name__, url_prefix="/admin")

#: The endpoints whose successful answers are audit events, and the action each records.
AUDITED = {
    "views.result": "view",
    "api.get_prediction": "view",
    "views.identifiers": "view_identifiers",
    "views.download": "download",
    "views.seg": "download",
    "views.structured": "download",
    "views.delete": "delete",
    "pacs.send": "send_request",  # who asked; the sender records each send itself
    "review.review_form": "review",
    "review.review_api": "review",
    "review.reviews_api": "view_reviews",
    "api.list_predictions": "list",
}


#: The files the result page's viewer fetches by itself.
VIEWER_FILES = frozenset({"view.png", "view_mask.png", "prob.png"})
#: The worklist's thumbnails: one per row on every worklist view, never an event (a
#: 200-row worklist would otherwise write 200 events and look up 200 views).
THUMBNAILS = frozenset({"thumb.jpg"})
#: How long a page view (or the API's answer) covers the viewer's own files: fetched
#: later, or without a view at all, they are recorded as downloads like any other file.
VIEW_COVERS_S = 600.0


def record_request(response):
    """``after_request``: record an audit event for each audited answer that succeeded
    (a 2xx, or a redirect after a form post). A deletion counts once confirmed."""
    action = AUDITED.get(request.endpoint or "")
    if action is None or response.status_code >= 400:
        return response
    if action == "delete" and (request.method != "POST" or request.form.get("confirm") != "yes"):
        return response
    args = request.view_args or {}
    if action == "download" and args.get("name") in THUMBNAILS:
        return response
    if (
        action == "download"
        and args.get("name") in VIEWER_FILES
        and store().audit.viewed_since(
            current_owner(), args.get("result_id"), time.time() - VIEW_COVERS_S
        )
    ):
        return response  # the viewer's own renditions of a page just viewed: that is the event
    user = current_user()
    store().audit.record(
        current_owner(),
        action,
        args.get("result_id"),
        request.remote_addr,
        user.team_id if user else None,
        _detail(request.endpoint, args),
    )
    return response


def _detail(endpoint: str, args: dict) -> str | None:
    """What exactly was taken: the file, or which DICOM object (an identified SEG leaves
    the building with the patient's identity; a de-identified one does not)."""
    if endpoint == "views.seg":
        return "SEG, de-identified" if request.args.get("deidentify") == "1" else "SEG, identified"
    if endpoint == "views.structured":
        return {"sr": "SR (structured report)", "sc": "SC (secondary capture)"}[args["kind"]]
    return args.get("name")


def init_app(app, services) -> None:
    """Register the pages; every stored upload becomes an event (:func:`record_upload`)."""
    services.analyser.on_result(functools.partial(record_upload, services.store))
    app.register_blueprint(bp)


def record_upload(store_, row) -> None:
    """The analysis service's ``on_result`` hook: a stored upload is an event (who, which
    result, from where), whichever entry point it came through."""
    in_request = has_request_context()
    user = current_user() if in_request else None
    store_.audit.record(
        row.owner,
        "upload",
        row.id,
        request.remote_addr if in_request else None,
        user.team_id if user else row.team_id,
        None,
    )


def _admin():
    user = current_user()
    if user is None or user.role != "admin":
        abort(403, description="Only an admin of the team may see this page.")
    return user


@bp.get("/")
def users():
    """The team's users, their roles and API tokens."""
    admin = _admin()
    members = store().accounts.list(admin.team_id)
    return render_template(
        "admin.html",
        admin=admin,
        members=members,
        roles=ROLES,
        tokens={u.id: store().accounts.tokens(u.id) for u in members},
        retention=settings().retention_days,
        audit_retention=settings().audit_retention_days,
    )


@bp.post("/users/<int:user_id>/role")
def set_role(user_id: int):
    """Change a team member's role (an admin cannot demote themself: the team would lose
    its last admin by accident)."""
    admin = _admin()
    member = store().accounts.get(user_id)
    role = request.form.get("role")
    if member is None or member.team_id != admin.team_id:
        abort(404)
    if role not in ROLES:
        abort(400, description=f"The role must be one of {', '.join(ROLES)}.")
    if member.id == admin.id and role != "admin":
        abort(400, description="You cannot remove your own admin role; ask another admin.")
    store().accounts.set_role(user_id, role)
    flash(f"{member.username} is now {role}.")
    return redirect(url_for("admin.users"), 303)


@bp.post("/tokens/revoke")
def revoke_token():
    """Revoke one API token of a team member."""
    admin = _admin()
    if not store().accounts.revoke_token(request.form.get("token", ""), admin.team_id):
        abort(404, description="No such token in your team.")
    flash("The API token was revoked: calls with it now get 401.")
    return redirect(url_for("admin.users"), 303)


def _since() -> float:
    text = request.args.get("since", "")
    if not text:
        return time.time() - 7 * 86400
    try:
        return day_start(text)
    except ValueError:
        abort(400, description="since must be a date (YYYY-MM-DD).")


@bp.get("/audit")
def audit():
    """The team's audit events since a day (default: the last 7 days); ``format=csv`` or
    ``json`` downloads them."""
    admin = _admin()
    # an admin named in PNEUMO_AUDIT_ADMINS reads every team's events (the deployment's
    # data-protection officer or IT); any other admin, the team's
    everyone = admin.username in settings().audit_admins
    events = store().audit.events(_since(), None if everyone else admin.team_id)
    action = request.args.get("action") or None
    if action:
        events = [e for e in events if e.action == action]
    result_id = (request.args.get("result") or "").strip()
    if result_id:
        events = [e for e in events if e.result_id == result_id]
    fmt = request.args.get("format")
    if fmt == "json":
        return jsonify(events=[e.to_dict() for e in events])
    if fmt == "csv":
        return Response(
            events_csv(events),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=pneumo-audit.csv"},
        )
    shown = events[-1000:]
    return render_template(
        "audit.html",
        events=shown,
        total=len(events),
        since=request.args.get("since", ""),
        action=action,
        actions=AUDIT_ACTIONS,
        names=_names(e.actor for e in shown),
        everyone=everyone,
        own_team=admin.team_id,
        teams={u.team_id: u.team for u in store().accounts.list()} if everyone else {},
    )


#: What the audit page can be filtered by.
AUDIT_ACTIONS = ("upload", "refused", *dict.fromkeys(AUDITED.values()))


def _names(actors) -> dict[str, str]:
    """The user names of the ``user:<id>`` actors (a browser session or a one-off caller
    has none)."""
    names = {}
    for actor in set(actors):
        if actor.startswith("user:") and actor[5:].isdigit():
            user = store().accounts.get(int(actor[5:]))
            if user is not None:
                names[actor] = user.username
    return names
