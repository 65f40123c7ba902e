"""The service's settings: one typed tree read from ``PNEUMO_*`` environment variables.

gunicorn's configuration (``gunicorn.conf.py``), ``wsgi.py``, the app factory,
the ``pneumo`` command and the container entrypoint (through ``pneumo
settings``) all read them through :func:`Settings.from_env`. Every default is
written once, on a field below; every variable is parsed by one of the few
parsers here, with one truth rule for switches. No Flask import: gunicorn's
master reads this before any worker starts.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from pneumo import paths
from pneumo.inference.device import DEFAULT_DEVICE, DEVICE_CHOICES
from pneumo.inference.loading import ModelOptions
from pneumo.inference.runtime import DEFAULT_RUNTIME, RUNTIMES
from pneumo.io.imaging import DEFAULT_MAX_PIXELS

#: The log line of the service's own processes (gunicorn's workers, the PACS worker).
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
PREFIX = "PNEUMO_"
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A ``PNEUMO_*`` variable holds a value the service cannot use."""


# -- parsers: each takes the raw value (str, or a typed value from a test's mapping) -----


def _raw(env: Mapping[str, Any], name: str) -> Any:
    value = env.get(PREFIX + name)
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _int(env: Mapping[str, Any], name: str, default: int | None, minimum: int = 1) -> int | None:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise SettingsError(f"{PREFIX}{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{PREFIX}{name} must be at least {minimum}, got {value}")
    return value


def _number(env: Mapping[str, Any], name: str, default: float, unit: str = "seconds") -> float:
    """A positive number (``default`` when unset)."""
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise SettingsError(f"{PREFIX}{name} must be a number of {unit}, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{PREFIX}{name} must be positive, got {raw!r}")
    return value


def _bool(env: Mapping[str, Any], name: str, default: bool) -> bool:
    """A switch: 1/true/yes/on or 0/false/no/off (any case)."""
    raw = _raw(env, name)
    if raw is None:
        return default
    text = str(raw).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise SettingsError(f"{PREFIX}{name} must be 1 or 0 (true or false), got {raw!r}")


def _text(env: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    raw = _raw(env, name)
    return default if raw is None else str(raw)


def _choice(env: Mapping[str, Any], name: str, default: str, choices: tuple[str, ...]) -> str:
    """``PNEUMO_<name>`` lower-cased, one of ``choices`` (``default`` when unset)."""
    raw = str(_raw(env, name) or default).strip().lower()
    if raw not in choices:
        raise SettingsError(f"{PREFIX}{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _fraction(env: Mapping[str, Any], name: str) -> float | None:
    """``PNEUMO_<name>`` as a fraction strictly between 0 and 1 (``None`` when unset);
    a percentage such as ``3%`` is accepted too."""
    raw = str(_raw(env, name) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise SettingsError(
            f"{PREFIX}{name} must be a fraction such as 0.05 (or 5%), got {raw!r}"
        ) from None
    if not 0.0 < value < 1.0:
        raise SettingsError(f"{PREFIX}{name} must be strictly between 0 and 1, got {raw!r}")
    return value


def _objects(env: Mapping[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
    """``PNEUMO_DICOMWEB_OBJECTS``: some of ``seg``, ``sr``, ``sc``, comma-separated."""
    raw = _raw(env, "DICOMWEB_OBJECTS")
    if raw is None:
        return default
    chosen = tuple(dict.fromkeys(p.strip().lower() for p in str(raw).split(",") if p.strip()))
    unknown = [p for p in chosen if p not in ("seg", "sr", "sc")]
    if unknown or not chosen:
        raise SettingsError(
            f"{PREFIX}DICOMWEB_OBJECTS must list some of seg, sr, sc (comma-separated), got {raw!r}"
        )
    return chosen


def _defaults(cls) -> dict[str, Any]:
    """The field defaults of a settings dataclass (the one place they are written)."""
    out = {}
    for f in fields(cls):
        out[f.name] = f.default if f.default_factory is MISSING else f.default_factory()
    return out


@dataclass(frozen=True)
class PacsSettings:
    """Where the PACS is and how to log in to it (``PNEUMO_DICOMWEB_*``)."""

    url: str | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    autosend: bool = False
    timeout: float = 20.0
    retry_after_s: float = 60.0
    # who drains the send queue: "web" (a thread in each web worker: one machine) or
    # "worker" (only `pneumo pacs worker`; the web workers enqueue). None: "web" on the
    # embedded SQLite database, "worker" on a shared one (Settings.pacs_sender)
    sender: str | None = None
    # which DICOM objects of a result go to the PACS: the SEG, the Structured Report, the
    # Secondary Capture of the overlay (PNEUMO_DICOMWEB_OBJECTS, a comma list)
    objects: tuple[str, ...] = ("seg", "sr", "sc")

    @property
    def configured(self) -> bool:
        """True when a DICOMweb server URL is set."""
        return bool(self.url)

    @classmethod
    def from_env(cls, env: Mapping[str, Any]) -> "PacsSettings":
        """Read ``PNEUMO_DICOMWEB_*``.

        Raises:
            SettingsError: a value the connection cannot use, naming the variable.
        """
        d = _defaults(cls)
        url = _text(env, "DICOMWEB_URL")
        if url and not url.startswith(("http://", "https://")):
            raise SettingsError(
                f"{PREFIX}DICOMWEB_URL must start with http:// or https://, got {url!r}"
            )
        settings = cls(
            url=url.rstrip("/") if url else d["url"],
            username=_text(env, "DICOMWEB_USERNAME", d["username"]),
            password=_text(env, "DICOMWEB_PASSWORD", d["password"]),
            token=_text(env, "DICOMWEB_TOKEN", d["token"]),
            autosend=_bool(env, "DICOMWEB_AUTOSEND", d["autosend"]),
            timeout=_number(env, "DICOMWEB_TIMEOUT", d["timeout"]),
            retry_after_s=_number(env, "DICOMWEB_RETRY_AFTER", d["retry_after_s"]),
            sender=_choice(env, "DICOMWEB_SENDER", "", ("", "web", "worker")) or d["sender"],
            objects=_objects(env, d["objects"]),
        )
        if settings.token and settings.username:
            raise SettingsError(
                f"Set either {PREFIX}DICOMWEB_TOKEN or {PREFIX}DICOMWEB_USERNAME, not both."
            )
        return settings


@dataclass(frozen=True)
class Settings:
    """Where the service listens, what it loads, where it keeps results, its limits."""

    # gunicorn
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    threads: int = 4
    worker_connections: int | None = None  # None: as many as threads
    timeout: int = 120
    max_requests: int = 0  # 0: workers are never recycled
    log_level: str = "INFO"
    proxy: bool = False  # a buffering nginx in front (app/proxy.py)
    # the model
    tf_threads: int | None = None
    device: str = DEFAULT_DEVICE
    runtime: str = DEFAULT_RUNTIME
    model_dir: Path = paths.default_model_dir()
    operating_point: str | None = None
    prevalence: float | None = None  # the site's pneumothorax prevalence, re-bases the probability
    warm_up: bool = True
    # storage
    instance_dir: Path = paths.project_root() / "instance"
    data_dir: Path = (
        paths.project_root() / "uploads"
    )  # <instance>/data when PNEUMO_INSTANCE_DIR is set
    retention_days: float = 30.0
    audit_retention_days: float = 2192.0  # the audit trail: 6 years, beyond the results'
    # admins (by user name) who read the whole deployment's audit trail, every team's
    audit_admins: tuple[str, ...] = ()
    min_free_mb: int = 500  # kept free for the database: below it new results
    #                                        are refused (503) and /readyz says "degraded"
    database_url: str | None = None  # None: the SQLite file in the data folder
    blob_url: str | None = None  # None: the data folder (any fsspec URL)
    # access
    access_password: str | None = None
    secret_key: str | None = None  # None: a random key kept in the instance folder
    secret_key_file: Path | None = None  # the key read from a file (a container secret)
    session_cookie_secure: bool = False
    session_days: float = 31.0  # a login lasts this long unless logged out
    login_rate_limit: str = "10 per minute"
    upload_rate_limit: str = "120 per minute"
    # a file uploaded again by its uploader or the team: "link" to the first result, or
    # "keep" analysing and storing every copy
    duplicates: str = "link"
    # limits of one request
    max_files: int = 20
    max_content_length: int = 64 * 1024 * 1024
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_request_pixels: int = 200_000_000  # all the files of one upload together
    max_pixels_in_flight: int = 100_000_000  # images analysed at once by one worker
    # the PACS
    pacs: PacsSettings = field(default_factory=PacsSettings)

    @property
    def loopback(self) -> bool:
        """True when the service listens on this machine only."""
        return self.host in LOOPBACK

    @property
    def bind(self) -> str:
        """gunicorn's bind address (IPv6 in brackets)."""
        return (
            f"[{self.host}]:{self.port}"
            if ":" in self.host.strip("[]")
            else f"{self.host}:{self.port}"
        )

    @property
    def shared_database(self) -> bool:
        """True when the database is a server (PostgreSQL) that several nodes share."""
        return bool(self.database_url) and not self.database_url.startswith("sqlite")

    @property
    def pacs_sender(self) -> str:
        """Who drains the PACS send queue: ``"web"`` or ``"worker"``."""
        return self.pacs.sender or ("worker" if self.shared_database else "web")

    @property
    def upstream_socket(self) -> Path:
        """gunicorn's unix socket when nginx is in front (``PNEUMO_PROXY``)."""
        return self.instance_dir / "gunicorn.sock"

    @property
    def gunicorn_bind(self) -> str:
        """Where gunicorn listens: the public address, or the socket nginx forwards to."""
        return f"unix:{self.upstream_socket}" if self.proxy else self.bind

    def __post_init__(self):
        if self.audit_retention_days < self.retention_days:
            raise SettingsError(
                f"{PREFIX}AUDIT_RETENTION_DAYS ({self.audit_retention_days:g}) must be at least "
                f"{PREFIX}RETENTION_DAYS ({self.retention_days:g}): the trail of who saw a "
                "result outlives the result"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, Any] | None = None) -> "Settings":
        """Read and check the ``PNEUMO_*`` variables (``os.environ`` by default)."""
        env = os.environ if env is None else env
        d = _defaults(cls)
        instance = Path(_text(env, "INSTANCE_DIR") or d["instance_dir"]).resolve()
        data_dir = _text(env, "DATA_DIR")
        if data_dir is None and _text(env, "INSTANCE_DIR"):
            data_dir = str(instance / "data")
        model = _text(env, "MODEL_DIR") or _text(env, "MODEL") or d["model_dir"]
        return cls(
            host=_text(env, "HOST", d["host"]),
            port=_int(env, "PORT", d["port"]),
            workers=_int(env, "WORKERS", d["workers"]),
            threads=_int(env, "THREADS", d["threads"]),
            worker_connections=_int(env, "WORKER_CONNECTIONS", 0, minimum=0) or None,
            timeout=_int(env, "TIMEOUT", d["timeout"]),
            max_requests=_int(env, "MAX_REQUESTS", d["max_requests"], minimum=0),
            log_level=str(_text(env, "LOG_LEVEL", d["log_level"])).upper(),
            proxy=_bool(env, "PROXY", d["proxy"]),
            tf_threads=_int(env, "TF_THREADS", d["tf_threads"]),
            device=_choice(env, "DEVICE", d["device"], DEVICE_CHOICES),
            runtime=_choice(env, "RUNTIME", d["runtime"], RUNTIMES),
            model_dir=Path(model).resolve(),
            operating_point=_text(env, "OPERATING_POINT", d["operating_point"]),
            prevalence=_fraction(env, "PREVALENCE"),
            warm_up=_bool(env, "WARM_UP", d["warm_up"]),
            instance_dir=instance,
            data_dir=Path(data_dir or d["data_dir"]).resolve(),
            retention_days=_number(env, "RETENTION_DAYS", d["retention_days"], "days"),
            audit_retention_days=_number(
                env, "AUDIT_RETENTION_DAYS", d["audit_retention_days"], "days"
            ),
            audit_admins=tuple(
                name.strip()
                for name in (_text(env, "AUDIT_ADMINS", "") or "").split(",")
                if name.strip()
            ),
            min_free_mb=_int(env, "MIN_FREE_MB", d["min_free_mb"], minimum=0),
            database_url=_database_url(env),
            blob_url=_text(env, "BLOB_URL", d["blob_url"]),
            access_password=_text(env, "ACCESS_PASSWORD", d["access_password"]),
            secret_key=_secret(env),
            secret_key_file=_path(env, "SECRET_KEY_FILE"),
            session_cookie_secure=_bool(env, "SESSION_COOKIE_SECURE", d["session_cookie_secure"]),
            session_days=_number(env, "SESSION_DAYS", d["session_days"], "days"),
            login_rate_limit=_text(env, "LOGIN_RATE_LIMIT", d["login_rate_limit"]),
            upload_rate_limit=_text(env, "UPLOAD_RATE_LIMIT", d["upload_rate_limit"]),
            duplicates=_choice(env, "DUPLICATES", d["duplicates"], ("link", "keep")),
            max_files=_int(env, "MAX_FILES", d["max_files"]),
            max_content_length=_int(env, "MAX_CONTENT_LENGTH", d["max_content_length"]),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", d["max_image_pixels"]),
            max_request_pixels=_int(env, "MAX_REQUEST_PIXELS", d["max_request_pixels"]),
            max_pixels_in_flight=_int(env, "MAX_PIXELS_IN_FLIGHT", d["max_pixels_in_flight"]),
            pacs=PacsSettings.from_env(env),
        )

    def model_options(self) -> ModelOptions:
        """How the web service loads its model (``PNEUMO_MODEL_DIR``, ``DEVICE``,
        ``RUNTIME``, ``TF_THREADS``, ``OPERATING_POINT``, ``PREVALENCE``, ``WARM_UP``)."""
        return ModelOptions(
            model_dir=self.model_dir,
            device=self.device,
            runtime=self.runtime,
            threads=self.tf_threads,
            operating_point=self.operating_point,
            prevalence=self.prevalence,
            warm_up=self.warm_up,
        )

    def flask_config(self) -> dict:
        """Flask's own config keys that these settings decide (nothing else goes into
        ``app.config``: the app reads its settings from :class:`app.services.Services`)."""
        out = {
            "SESSION_COOKIE_SECURE": self.session_cookie_secure,
            "PERMANENT_SESSION_LIFETIME": int(self.session_days * 86400),
            "MAX_CONTENT_LENGTH": self.max_content_length,
        }
        if self.secret_key:
            out["SECRET_KEY"] = self.secret_key
        return out

    @classmethod
    def from_mapping(
        cls, overrides: Mapping[str, Any] | None, env: Mapping[str, Any] | None = None
    ) -> "Settings":
        """The environment's settings with some variables given again by a mapping (a
        test's config: ``DATA_DIR`` for ``PNEUMO_DATA_DIR``), each parsed as the
        environment's would be; keys that name no setting are left out. A ``SECRET_KEY``
        is taken as it is (a test's key may be short)."""
        env = os.environ if env is None else env
        overrides = overrides or {}
        names = setting_names()
        given = {PREFIX + k: v for k, v in overrides.items() if k in names and k != "SECRET_KEY"}
        settings = cls.from_env({**env, **given})
        if overrides.get("SECRET_KEY"):
            settings = replace(settings, secret_key=str(overrides["SECRET_KEY"]))
        return settings

    def to_dict(self) -> dict:
        """The settings as JSON, without passwords, tokens or the secret key."""
        hidden = {"access_password", "secret_key", "password", "token"}

        def clean(d: dict) -> dict:
            return {
                k: clean(v) if isinstance(v, dict) else str(v) if isinstance(v, Path) else v
                for k, v in d.items()
                if k not in hidden
            }

        out = clean(asdict(self)) | {"data_dir": str(self.data_dir)}
        if self.database_url:
            out["database_url"] = without_password(self.database_url)
        out["pacs"]["sender"] = self.pacs_sender
        return out


@lru_cache(maxsize=1)
def setting_names() -> frozenset[str]:
    """Every variable the settings read, without the ``PNEUMO_`` prefix."""
    seen: set[str] = set()

    class Seen(dict):
        def get(self, key, default=None):
            seen.add(key)
            return default

    Settings.from_env(Seen())
    return frozenset(name[len(PREFIX) :] for name in seen if name.startswith(PREFIX))


def without_password(url: str) -> str:
    """A URL with its password starred (logs, ``pneumo settings``, errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _path(env: Mapping[str, Any], name: str) -> Path | None:
    raw = _text(env, name)
    return None if raw is None else Path(raw)


def _database_url(env: Mapping[str, Any]) -> str | None:
    """``PNEUMO_DATABASE_URL``: ``sqlite:///<file>`` or ``postgresql://…`` (unset: the
    SQLite file in the data folder)."""
    url = _text(env, "DATABASE_URL")
    if url is None:
        return None
    scheme = urlsplit(url.strip()).scheme.split("+")[0]
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise SettingsError(
            f"{PREFIX}DATABASE_URL must start with postgresql:// or "
            f"sqlite:///, got {without_password(url)!r}"
        )
    return url.strip()


def _secret(env: Mapping[str, Any]) -> str | None:
    """The session-signing key: ``PNEUMO_SECRET_KEY``, or the first line of the file
    ``PNEUMO_SECRET_KEY_FILE`` (not both)."""
    key, key_file = _text(env, "SECRET_KEY"), _text(env, "SECRET_KEY_FILE")
    if key and key_file:
        raise SettingsError(f"Set either {PREFIX}SECRET_KEY or {PREFIX}SECRET_KEY_FILE, not both.")
    if key_file:
        try:
            key = Path(key_file).read_text().strip()
        except OSError as exc:
            raise SettingsError(
                f"{PREFIX}SECRET_KEY_FILE {key_file} cannot be read ({exc.strerror})"
            ) from None
        if not key:
            raise SettingsError(f"{PREFIX}SECRET_KEY_FILE {key_file} is empty")
    if key is not None and len(key) < 16:
        raise SettingsError(
            f"{PREFIX}SECRET_KEY must be at least 16 characters (use "
            "e.g. python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return key


def shared_secret_problem(settings: Settings) -> str | None:
    """Why the web service must not start, or ``None``: nodes that share a database
    must sign their sessions with one shared key."""
    if settings.shared_database and not settings.secret_key:
        return (
            "pneumo refuses to start: PNEUMO_DATABASE_URL names a shared database, so "
            "every node must sign logins with the same key; set PNEUMO_SECRET_KEY or "
            "PNEUMO_SECRET_KEY_FILE (the same on every node)."
        )
    return None


def login_problem(settings: Settings, n_users: "int | Callable[[], int]") -> str | None:
    """Why the service must not start, or ``None``: beyond loopback a login must exist
    (``n_users`` accounts, or the shared access password). ``n_users`` may be a function,
    called only when the answer depends on it (on loopback the database is never asked,
    so a damaged one still lets the service start and say so)."""
    if settings.loopback or settings.access_password:
        return None
    if n_users() if callable(n_users) else n_users:
        return None
    return no_login_message(settings.host)


def no_login_message(host: str) -> str:
    """The one line printed when the service refuses to start without a login."""
    return (
        f"pneumo refuses to start: it would listen on {host}, beyond this machine, but no "
        "login is configured. Create a user (.venv/bin/pneumo create-user NAME) or set "
        "PNEUMO_ACCESS_PASSWORD."
    )
