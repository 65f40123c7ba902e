"""Flask web app: upload chest X-rays, review the predicted pneumothorax overlay.

``create_app`` follows the Flask tutorial's factory: the typed settings (from
the ``PNEUMO_*`` environment variables), then the test mapping. It holds the
process's :class:`app.services.Services` (store, model holder, analysis service,
PACS sender; :mod:`app.context` hands them to requests) and registers the entry
points: pages (``views``), JSON API (``api``), DICOMweb STOW (``dicomweb``), PACS
pages (``pacs``), logins (``access``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from functools import lru_cache
from pathlib import Path

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from pneumo import paths

from app import access, admin, api, dicomweb, review, views
from app.context import csrf_token, limiter
from app.pacs import pages as pacs_pages
from app.services import Services
from app.settings import Settings, setting_names
from app.store.ratelimits import storage_uri

log = logging.getLogger(__name__)


def _secret_key(instance: Path) -> str:
    """A persistent random secret in the instance folder (created once)."""
    path = instance / "secret_key"
    if not path.exists():
        # several gunicorn workers boot at once: write aside, then link into place
        # atomically, so no worker can ever read a half-written (empty) key
        instance.mkdir(parents=True, exist_ok=True)
        tmp = instance / f".secret_key.{os.getpid()}"
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another worker won; use its key
        finally:
            tmp.unlink()
    return path.read_text().strip()


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, except that a body nested too deeply to parse is a bad request
    (``get_json`` answers 400, or ``None`` when silent), not a ``RecursionError``."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON body is nested too deeply") from None


#: How long a browser keeps a versioned static file (``?v=`` its content's digest): a year,
#: since a changed file gets a new address.
STATIC_MAX_AGE_S = 365 * 86400


@lru_cache(maxsize=256)
def _static_digest(path: str, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:12]


class App(Flask):
    """Flask with versioned static files: ``url_for("static", ...)`` adds ``v=`` (the
    file's content digest), and a request that carries it may be kept by the browser
    (:data:`STATIC_MAX_AGE_S`), so the pages' scripts and styles are not asked for again
    on every page; an address without ``v`` is revalidated as before."""

    def get_send_file_max_age(self, filename: str | None) -> int | None:
        if request.args.get("v"):
            return STATIC_MAX_AGE_S
        return super().get_send_file_max_age(filename)

    def inject_url_defaults(self, endpoint: str, values: dict) -> None:
        super().inject_url_defaults(endpoint, values)
        if endpoint == "static" and "filename" in values and "v" not in values:
            path = Path(self.static_folder or "") / values["filename"]
            try:
                values["v"] = _static_digest(str(path), path.stat().st_mtime_ns)
            except OSError:  # no such file: the address stays unversioned (a 404 anyway)
                pass


def create_app(test_config: dict | None = None) -> Flask:
    """The app: its settings from the ``PNEUMO_*`` variables (:class:`app.settings.Settings`),
    then ``test_config`` (a setting by its variable's name without the prefix, e.g.
    ``DATA_DIR``; Flask's own keys such as ``TESTING``; ``PREDICTOR``, an already loaded
    model). The model loads in the background (see :mod:`app.model`); ``/healthz`` answers
    at once, ``/readyz`` once it is loaded."""
    test_config = dict(test_config or {})
    predictor = test_config.pop("PREDICTOR", None)
    settings = Settings.from_mapping(test_config)
    app = App(
        __name__,
        instance_path=str(settings.instance_dir),
        template_folder=str(paths.project_root() / "templates"),
        static_folder=str(paths.project_root() / "static"),
    )
    app.json = JSONProvider(app)
    app.config.from_mapping(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        RATELIMIT_HEADERS_ENABLED=True,
        # explicit: Flask-Limiter keeps the first app's RATELIMIT_ENABLED for every later
        # app in the process unless each says its own (the tests make many apps)
        RATELIMIT_ENABLED=True,
        # the counters live in the database: while it cannot be reached, a request gets the
        # store's own 503, never a 500 from the limiter's bookkeeping (its headers included)
        RATELIMIT_SWALLOW_ERRORS=True,
        **settings.flask_config(),
    )
    app.config.update({k: v for k, v in test_config.items() if k not in setting_names()})
    services = Services.from_settings(settings, predictor)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(Path(app.instance_path))
    if settings.proxy:  # nginx in front: the client's address is its X-Forwarded-For
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)
    app.extensions["pneumo"] = services
    app.config.setdefault("RATELIMIT_STORAGE_URI", storage_uri(services.store))
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"counters": services.store.counters})
    limiter.init_app(app)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.add_template_filter(views.dicom_date, "dicom_date")
    app.add_template_filter(views.shown_probability, "shown_probability")
    app.add_template_filter(views.iso_time, "iso_time")
    app.add_template_filter(views.middle_ellipsis, "middle_ellipsis")

    dicomweb.init_app(app)  # first: a DICOMweb client without a token gets 401, not the login page
    app.before_request(access.check_access)
    app.register_blueprint(access.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(api.docs_bp)
    app.register_blueprint(dicomweb.bp)
    pacs_pages.init_app(app, services)  # PACS pages; resumes unfinished sends
    app.register_blueprint(review.bp)
    admin.init_app(app, services)  # the admin's pages; uploads become audit events
    views.register_error_handlers(app)
    app.after_request(admin.record_request)  # the audit trail
    app.after_request(_security_headers)
    return app


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def _security_headers(response):
    """No inline scripts, no framing, no MIME sniffing, no caching of results."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith(("/results/", "/batches/", "/api/v1/predictions")):
        # a result's page and files hold patient images: never kept by the browser
        response.headers["Cache-Control"] = "no-store"
    elif response.mimetype != "text/css" and not response.mimetype.endswith("javascript"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response
