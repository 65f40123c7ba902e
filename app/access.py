"""Who is asking: accounts, API tokens, the shared access password, CSRF, rate limits.

* With no users and no ``ACCESS_PASSWORD`` the app is open, which is allowed
  only when it listens on loopback (``PNEUMO_HOST``); each browser session
  then owns its own results.
* ``ACCESS_PASSWORD`` (the Colab demo's minimum): one shared password.
* Users (``pneumo create-user``): username + password login; API calls use
  ``Authorization: Bearer <token>`` (``pneumo create-token``).
* Every HTML form POST carries a per-session CSRF token.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from app.context import (
    limiter,
    login_account,
    login_account_limit,
    login_failed,
    login_limit,
    login_pair,
    settings,
    store,
)

bp = Blueprint("access", __name__)
OPEN_ENDPOINTS = {"access.login", "views.healthz", "views.readyz", "views.favicon", "static"}


def _login_mode() -> str | None:
    if store().accounts.count():
        return "users"
    if settings().access_password:
        return "password"
    return None


def check_access():
    """``before_request`` hook: authenticate, then check CSRF on form posts."""
    if request.endpoint in OPEN_ENDPOINTS:
        return _check_csrf()
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        user_id = store().accounts.user_for_token(header[7:].strip())
        user = store().accounts.get(user_id) if user_id is not None else None
        if user is None:
            return jsonify(error={"code": "unauthorized", "message": "Unknown API token."}), 401
        g.owner, g.bearer, g.user = user.owner, True, user
        return None
    mode = _login_mode()
    if (
        mode
        and (session.get("user") or session.get("access_granted"))
        and not store().sessions.active(session.get("sid", ""), _subject(), _max_age_s())
    ):
        session.clear()  # logged out (or expired) elsewhere: a kept cookie no longer logs in
    if mode and not session.get("user") and not session.get("access_granted"):
        if request.path.startswith("/api/") and request.blueprint != "api_docs":
            return jsonify(
                error={"code": "unauthorized", "message": "Log in, or send an API token."}
            ), 401
        return redirect(url_for("access.login", next=request.path))  # pages, the API's docs
    if session.get("user"):
        user = store().accounts.get(session["user"])
        if user is None:  # the account was removed: its sessions end
            session.clear()
            return redirect(url_for("access.login", next=request.path))
        g.owner, g.user = user.owner, user
    return _check_csrf()


def _check_csrf():
    """POSTs riding on a browser session must carry the session's CSRF token.

    Exempt: bearer-token calls (no cookie is trusted) and API calls that bring no
    session cookie at all (there is no session to forge; they get a new one).
    A cookie-authenticated API call sends the token in ``X-CSRF-Token``
    (``GET /api/v1/csrf-token``), a form in its ``csrf_token`` field.
    """
    if request.method != "POST" or g.get("bearer"):
        return None
    cookie = current_app.config.get("SESSION_COOKIE_NAME", "session")
    if request.path.startswith("/api/") and cookie not in request.cookies:
        return None
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
        if request.path.startswith("/api/"):
            return jsonify(
                error={
                    "code": "csrf_token_missing",
                    "message": (
                        "This call carries a browser session cookie but no valid "
                        "X-CSRF-Token header (GET /api/v1/csrf-token gives it); or use an "
                        "API token."
                    ),
                }
            ), 403
        abort(
            403,
            description="The form expired or did not come from this site "
            "(missing CSRF token). Reload the page and try again.",
        )
    return None


@bp.route("/login", methods=["GET", "POST"])
# Per address (every attempt); per account at that address and per account from every
# address (failures only, the latter at ACCOUNT_FACTOR times the limit): an attacker's
# guesses from one address stop at the first two and never lock the owner out elsewhere.
@limiter.limit(login_limit, methods=["POST"])
@limiter.limit(login_limit, methods=["POST"], key_func=login_pair, deduct_when=login_failed)
@limiter.limit(
    login_account_limit, methods=["POST"], key_func=login_account, deduct_when=login_failed
)
def login():
    """Log in with a user name and password, or the shared access password."""
    mode = _login_mode()
    error = None
    if request.method == "POST":
        if mode == "users":
            user_id = store().accounts.authenticate(
                request.form.get("username", ""), request.form.get("password", "")
            )
            if user_id is not None:
                return _start_session(user=user_id)
            error = "Wrong user name or password."
        elif mode == "password":
            given = request.form.get("password", "")
            expected = str(settings().access_password)
            if hmac.compare_digest(given.encode(), expected.encode()):
                return _start_session(access_granted=True)
            error = "Wrong password."
        else:
            return redirect(url_for("views.index"))
    return render_template("login.html", error=error, mode=mode), (401 if error else 200)


def _subject() -> str:
    """Who the session's login is: ``user:<id>`` or the shared ``password``."""
    return f"user:{session['user']}" if session.get("user") else "password"


def _max_age_s() -> float:
    return current_app.permanent_session_lifetime.total_seconds()


def _start_session(**login) -> object:
    """A fresh session at every login (no fixation: a new id and CSRF token), recorded in
    the store so that logout ends it for every copy of the cookie."""
    session.clear()
    session.update(login)
    session["sid"] = store().sessions.open(_subject())
    session.permanent = True
    return redirect(safe_next(request.args.get("next", "")), 303)


def safe_next(target: str) -> str:
    """Where to go after login: a path on this site, else ``/``. Control characters,
    backslashes and anything a browser could read as another host (``//host``,
    ``/<TAB>host`` once the browser drops the tab) are refused."""
    if not target.startswith("/") or any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in target):
        return "/"
    if target.startswith("//") or urlsplit(target).netloc:
        return "/"
    return target


@bp.post("/logout")
def logout():
    """End the session, here and for any kept copy of its cookie."""
    if session.get("sid"):
        store().sessions.close(session["sid"])
    session.clear()
    return redirect(url_for("access.login"), 303)
