"""What a request works with: the store, the model, the analysis service, the caller.

Views, the JSON API, the DICOMweb receiver and the PACS pages ask this module,
never each other. The objects are made once per process (:class:`app.services.Services`,
held by the app factory :func:`app.create_app` in ``app.extensions["pneumo"]``).
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING

from flask import abort, current_app, g, request, session
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from app.service import ONE_OFF, Analyser
from app.settings import Settings
from app.store.records import ResultRow, Scope, User, valid_id
from app.store.repository import Store

if TYPE_CHECKING:  # the services are made by the factory; requests only use them
    from app.services import Services

#: Rate limits (``PNEUMO_LOGIN_RATE_LIMIT``, ``PNEUMO_UPLOAD_RATE_LIMIT``), per client address
#: (and per account for logins), counted in the store by every worker together
#: (``RATELIMIT_STORAGE_URI``, set by the app factory; :mod:`app.store.ratelimits`).
limiter = Limiter(key_func=get_remote_address, default_limits=[])


def services() -> "Services":
    """The process's services (made by the app factory)."""
    return current_app.extensions["pneumo"]


def settings() -> Settings:
    """The service's settings."""
    return services().settings


def store() -> Store:
    """The app's store."""
    return services().store


def analyser() -> Analyser:
    """The app's analysis service."""
    return services().analyser


def predictor():
    """The loaded Predictor (waits while it loads; ModelNotReady after a failure)."""
    return services().model.get()


def upload_limit() -> str:
    """The upload rate limit (``PNEUMO_UPLOAD_RATE_LIMIT``)."""
    return settings().upload_rate_limit


def login_limit() -> str:
    """The login rate limit (``PNEUMO_LOGIN_RATE_LIMIT``)."""
    return settings().login_rate_limit


#: How many times the per-address login limit one account may fail from all addresses
#: together before it is limited everywhere (a guessing attack spread over many addresses).
ACCOUNT_FACTOR = 5


def login_account() -> str:
    """The rate-limit key of a login attempt's account (the shared password is one)."""
    name = (request.form.get("username") or "").strip().lower()[:64]
    return f"account:{name}" if name else "account:shared-password"


def login_pair() -> str:
    """The rate-limit key of a login attempt's account at the caller's address."""
    return f"{login_account()}@{get_remote_address()}"


def login_account_limit() -> str:
    """The account-wide limit on failed logins: :data:`ACCOUNT_FACTOR` times the login
    limit, so that one address (held to the login limit itself) can never reach it and
    lock the account's owner out; only guesses from many addresses at once can."""
    return ";".join(
        re.sub(r"^\s*(\d+)", lambda m: str(int(m.group(1)) * ACCOUNT_FACTOR), part)
        for part in login_limit().split(";")
    )


def login_failed(response) -> bool:
    """Whether a login attempt failed (only failures count against an account)."""
    return response.status_code == 401


def current_owner() -> str:
    """Owner key of the caller's results (set by :func:`app.access.check_access`)."""
    owner = g.get("owner")
    if owner:
        return owner
    owner = session.get("owner")
    if not owner and one_off_call():
        # an API call with neither a token nor a session cookie asked for no session:
        # its results are returned in full, without a cookie and without links
        g.owner, g.one_off = ONE_OFF + secrets.token_urlsafe(18), True
        return g.owner
    if not owner:
        owner = "session:" + secrets.token_urlsafe(18)
        session["owner"] = owner
        session.permanent = True
    g.owner = owner
    return owner


def readable_result(result_id: str, manage: bool = False, missing: str | None = None) -> ResultRow:
    """The result the caller may read (``manage``: delete), or a 404 with ``missing`` as
    its message: the same answer whether the result does not exist or is another team's."""
    row = store().results.get(result_id, current_scope(manage=manage))
    if row is None:
        _record_refusal(result_id, manage)
        abort(404, description=missing)
    return row


def _record_refusal(result_id: str, manage: bool) -> None:
    """A request for a result the caller may not read (or delete) is an audit event: who,
    which id, why. It belongs to the result's team, whose admin sees who tried."""
    other = store().results.get_any(result_id)
    if other is None:
        why, team = "no such result", None
    else:
        why = "not the caller's to delete" if manage else "another owner's or team's result"
        team = other.team_id
    if not valid_id(result_id):
        result_id, why = None, "not a result id"
    store().audit.record(current_owner(), "refused", result_id, request.remote_addr, team, why)


def current_user() -> User | None:
    """The logged-in user (session or API token), or ``None``."""
    return g.get("user")


def current_scope(manage: bool = False) -> Scope:
    """Whose results the caller may read: its team's for a radiologist or an admin, else
    its own. ``manage`` (deleting): the team's for an admin only."""
    user = current_user()
    if (
        user is not None
        and user.team_id is not None
        and (user.role == "admin" or (user.reads_team and not manage))
    ):
        return Scope(current_owner(), user.team_id)
    return Scope(current_owner())


def team_names() -> dict[str, str]:
    """The owner keys (``user:<id>``) and user names of the caller's team, for a caller
    whose role reads the team's results (the worklist's uploader column and filter);
    else empty."""
    user = current_user()
    if user is None or user.team_id is None or not user.reads_team:
        return {}
    return {f"user:{u.id}": u.username for u in store().accounts.list(user.team_id)}


def one_off_call() -> bool:
    """An API request that carries no bearer token and no session cookie."""
    return (
        request.blueprint == "api"
        and request.endpoint != "api.csrf_token"
        and not g.get("bearer")
        and current_app.config.get("SESSION_COOKIE_NAME", "session") not in request.cookies
    )


def csrf_token() -> str:
    """The session's CSRF token for forms (created on first use)."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token
