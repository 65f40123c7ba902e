"""The service's settings, read from ``PNEUMO_*`` environment variables in one place.

gunicorn's configuration (``gunicorn.conf.py``), the app factory, the web
commands (``pneumo serve``, ``purge``, ``create-user``) and the local test
server all read them through :func:`Settings.from_env`, so a default or a
variable name is written once. No Flask import here: gunicorn's master reads
this before any worker starts.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from pneumo import paths
from pneumo.device import DEVICE_CHOICES
from pneumo.runtime import RUNTIMES

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class SettingsError(ValueError):
    """A ``PNEUMO_*`` variable holds a value the service cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(f"PNEUMO_{name}")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"PNEUMO_{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"PNEUMO_{name} must be at least {minimum}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """``PNEUMO_<name>`` lower-cased, one of ``choices`` (``default`` when unset)."""
    raw = (env.get(f"PNEUMO_{name}") or default).strip().lower()
    if raw not in choices:
        raise SettingsError(f"PNEUMO_{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _fraction(env: Mapping[str, str], name: str) -> float | None:
    """``PNEUMO_<name>`` as a fraction strictly between 0 and 1 (``None`` when unset);
    a percentage such as ``3%`` is accepted too."""
    raw = (env.get(f"PNEUMO_{name}") or "").strip()
    if not raw:
        return None
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise SettingsError(f"PNEUMO_{name} must be a fraction such as 0.05 (or 5%), "
                            f"got {raw!r}") from None
    if not 0.0 < value < 1.0:
        raise SettingsError(f"PNEUMO_{name} must be strictly between 0 and 1, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = str(env.get(f"PNEUMO_{name}", "")).strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"PNEUMO_{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Where the service listens, what it loads and where it keeps results."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    threads: int = 4
    worker_connections: int | None = None  # None: as many as threads
    timeout: int = 120
    tf_threads: int | None = None
    device: str = "auto"
    runtime: str = "keras"
    log_level: str = "INFO"
    model_dir: Path = paths.default_model_dir()
    operating_point: str | None = None
    instance_dir: Path = paths.project_root() / "instance"
    data_dir: Path = paths.project_root() / "uploads"  # results (git-ignored contents)
    retention_days: float = 30.0
    access_password: str | None = None
    prevalence: float | None = None  # the site's pneumothorax prevalence, re-bases the probability

    @property
    def loopback(self) -> bool:
        """True when the service listens on this machine only."""
        return self.host in LOOPBACK

    @property
    def bind(self) -> str:
        """gunicorn's bind address (IPv6 in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host.strip("[]") else \
            f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read and check the ``PNEUMO_*`` variables (``os.environ`` by default)."""
        env = os.environ if env is None else env
        instance = Path(env.get("PNEUMO_INSTANCE_DIR") or cls.instance_dir).resolve()
        model = env.get("PNEUMO_MODEL_DIR") or env.get("PNEUMO_MODEL") or cls.model_dir
        tf_threads = env.get("PNEUMO_TF_THREADS")
        try:
            retention = float(env.get("PNEUMO_RETENTION_DAYS") or 30.0)
        except ValueError:
            raise SettingsError("PNEUMO_RETENTION_DAYS must be a number of days, got "
                                f"{env.get('PNEUMO_RETENTION_DAYS')!r}") from None
        return cls(
            prevalence=_fraction(env, "PREVALENCE"),
            host=env.get("PNEUMO_HOST") or "127.0.0.1",
            port=_int(env, "PORT", 8000),
            workers=_int(env, "WORKERS", 1),
            threads=_int(env, "THREADS", 4),
            worker_connections=_int(env, "WORKER_CONNECTIONS", 0) or None,
            timeout=_int(env, "TIMEOUT", 120),
            tf_threads=None if not tf_threads else _int(env, "TF_THREADS", 1),
            device=_choice(env, "DEVICE", "auto", DEVICE_CHOICES),
            runtime=_choice(env, "RUNTIME", "keras", RUNTIMES),
            log_level=(env.get("PNEUMO_LOG_LEVEL") or "INFO").upper(),
            model_dir=Path(model).resolve(),
            operating_point=env.get("PNEUMO_OPERATING_POINT") or None,
            instance_dir=instance,
            data_dir=Path(env.get("PNEUMO_DATA_DIR") or (
                instance / "data" if env.get("PNEUMO_INSTANCE_DIR") else cls.data_dir)).resolve(),
            retention_days=retention,
            access_password=env.get("PNEUMO_ACCESS_PASSWORD") or None,
        )

    def flask_config(self) -> dict:
        """The app factory's defaults that come from these settings."""
        return {"HOST": self.host, "MODEL_DIR": str(self.model_dir),
                "OPERATING_POINT": self.operating_point, "DATA_DIR": str(self.data_dir),
                "TF_THREADS": self.tf_threads,
                "DEVICE": self.device, "RUNTIME": self.runtime,
                "ACCESS_PASSWORD": self.access_password, "PREVALENCE": self.prevalence}

    def to_dict(self) -> dict:
        """The settings as JSON, without the access password."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
                if k != "access_password"}


def login_problem(settings: Settings) -> str | None:
    """Why the service must not start, or ``None``: beyond loopback a login must exist."""
    if settings.loopback or settings.access_password:
        return None
    db_path = settings.data_dir / "pneumo.sqlite3"
    n_users = 0
    if db_path.exists():
        with sqlite3.connect(db_path) as db:
            try:
                n_users = db.execute("SELECT COUNT(*) FROM users").fetchone()[0]
            except sqlite3.OperationalError:  # no users table yet
                n_users = 0
    return None if n_users else no_login_message(settings.host)


def no_login_message(host: str) -> str:
    """The one line printed when the service refuses to start without a login."""
    return (f"pneumo refuses to start: it would listen on {host}, beyond this machine, but no "
            "login is configured. Create a user (.venv/bin/pneumo create-user NAME) or set "
            "PNEUMO_ACCESS_PASSWORD.")
