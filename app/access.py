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
import secrets

from flask import (Blueprint, abort, current_app, g, jsonify, redirect, render_template,
                   request, session, url_for)
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from app import users
from app.settings import LOOPBACK

bp = Blueprint("access", __name__)
limiter = Limiter(key_func=get_remote_address, storage_uri="memory://", default_limits=[])
OPEN_ENDPOINTS = {"access.login", "views.healthz", "views.readyz", "views.favicon", "static"}


class ConfigError(RuntimeError):
    """The configuration is unsafe or inconsistent; the app refuses to start."""


def check_startup(app) -> None:
    """Refuse to serve beyond loopback without any login configured."""
    host = str(app.config.get("HOST") or "127.0.0.1")
    app.config["REQUIRE_LOGIN"] = host not in LOOPBACK or bool(app.config.get("REQUIRE_LOGIN"))
    with app.extensions["pneumo.store"].connect() as db:
        n_users = users.user_count(db)
    if app.config["REQUIRE_LOGIN"] and not n_users and not app.config.get("ACCESS_PASSWORD"):
        from app.settings import no_login_message
        raise ConfigError(no_login_message(host))


def _login_mode() -> str | None:
    with current_app.extensions["pneumo.store"].connect() as db:
        if users.user_count(db):
            return "users"
    if current_app.config.get("ACCESS_PASSWORD"):
        return "password"
    return None


def current_owner() -> str:
    """Owner key of the caller's results (set by :func:`check_access`)."""
    owner = g.get("owner")
    if owner:
        return owner
    owner = session.get("owner")
    if not owner and one_off_call():
        # an API call with neither a token nor a session cookie asked for no session:
        # its results are returned in full, without a cookie and without links
        g.owner, g.one_off = "oneoff:" + secrets.token_urlsafe(18), True
        return g.owner
    if not owner:
        owner = "session:" + secrets.token_urlsafe(18)
        session["owner"] = owner
        session.permanent = True
    g.owner = owner
    return owner


def one_off_call() -> bool:
    """An API request that carries no bearer token and no session cookie."""
    return request.blueprint == "api" and request.endpoint != "api.csrf_token" \
        and not g.get("bearer") \
        and current_app.config.get("SESSION_COOKIE_NAME", "session") not in request.cookies


def check_access():
    """``before_request`` hook: authenticate, then check CSRF on form posts."""
    if request.endpoint in OPEN_ENDPOINTS:
        return _check_csrf()
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        with current_app.extensions["pneumo.store"].connect() as db:
            user_id = users.user_for_token(db, header[7:].strip())
        if user_id is None:
            return jsonify(error={"code": "unauthorized", "message": "Unknown API token."}), 401
        g.owner, g.bearer = f"user:{user_id}", True
        return None
    mode = _login_mode()
    if mode and not session.get("user") and not session.get("access_granted"):
        if request.path.startswith("/api/"):
            return jsonify(error={"code": "unauthorized",
                                  "message": "Log in, or send an API token."}), 401
        return redirect(url_for("access.login", next=request.path))
    if session.get("user"):
        g.owner = f"user:{session['user']}"
    return _check_csrf()


def csrf_token() -> str:
    """The session's CSRF token for forms (created on first use)."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


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
            return jsonify(error={"code": "csrf_token_missing", "message": (
                "This call carries a browser session cookie but no valid X-CSRF-Token header "
                "(GET /api/v1/csrf-token gives it); or use an API token.")}), 403
        abort(403, description="The form expired or did not come from this site "
                               "(missing CSRF token). Reload the page and try again.")
    return None


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
def login():
    """Log in with a user name and password, or the shared access password."""
    mode = _login_mode()
    error = None
    if request.method == "POST":
        if mode == "users":
            with current_app.extensions["pneumo.store"].connect() as db:
                user_id = users.authenticate(db, request.form.get("username", ""),
                                             request.form.get("password", ""))
            if user_id is not None:
                session.clear()
                session["user"] = user_id
                return _after_login()
            error = "Wrong user name or password."
        elif mode == "password":
            given = request.form.get("password", "")
            expected = str(current_app.config["ACCESS_PASSWORD"])
            if hmac.compare_digest(given.encode(), expected.encode()):
                session["access_granted"] = True
                return _after_login()
            error = "Wrong password."
        else:
            return redirect(url_for("views.index"))
    return render_template("login.html", error=error, mode=mode), (401 if error else 200)


def _after_login():
    session.permanent = True
    target = request.args.get("next", "/")
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    return redirect(target, 303)


@bp.post("/logout")
def logout():
    """End the session."""
    session.clear()
    return redirect(url_for("access.login"), 303)
