"""Optional shared access password (``PNEUMO_ACCESS_PASSWORD``).

When set, every page and API call except health checks, static files and
the login page needs a session that entered the password. This is the
minimum protection for a demo exposed through a public tunnel.
"""
from __future__ import annotations

import hmac

from flask import (Blueprint, current_app, jsonify, redirect, render_template, request,
                   session, url_for)

bp = Blueprint("access", __name__)
OPEN_ENDPOINTS = {"access.login", "views.healthz", "views.readyz", "static"}


def password_required() -> bool:
    return bool(current_app.config.get("ACCESS_PASSWORD"))


def check_access():
    """``before_request`` hook: redirect (pages) or 401 (API) without the password."""
    if not password_required() or request.endpoint in OPEN_ENDPOINTS:
        return None
    if session.get("access_granted"):
        return None
    if request.path.startswith("/api/"):
        return jsonify(error={"code": "unauthorized",
                              "message": "Log in with the access password first."}), 401
    return redirect(url_for("access.login", next=request.path))


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        given = request.form.get("password", "")
        expected = str(current_app.config.get("ACCESS_PASSWORD") or "")
        if expected and hmac.compare_digest(given.encode(), expected.encode()):
            session["access_granted"] = True
            target = request.args.get("next", "/")
            if not target.startswith("/") or target.startswith("//"):
                target = "/"
            return redirect(target, 303)
        error = "Wrong password."
    return render_template("login.html", error=error), (401 if error else 200)


@bp.post("/logout")
def logout():
    session.pop("access_granted", None)
    return redirect(url_for("access.login"), 303)
